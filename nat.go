package podnet

import (
	"context"
	"errors"
	"net/netip"
)

// MasqueradeSpec describes source NAT for traffic from a prefix. Its
// setters cannot fail; Create validates and reports every problem.
type MasqueradeSpec struct {
	src            netip.Prefix
	in             *Namespace
	out, exceptOut string
	toSource       netip.Addr
	backend        IptablesBackend
	label          string
	key            string
}

// NewMasquerade describes source NAT for packets from src: their source
// becomes the address of the interface they leave through (or ToSource).
// Which packets: with Out, those leaving through that interface; with
// ExceptOut, those leaving through any interface but that one (typically
// the bridge src lives on); with neither, those going to any destination
// outside src. An IPv6 prefix makes IPv6 rules (ip6tables).
//
// Equivalent to:
//
//	iptables -t nat -A PODNET-POSTROUTING -s SRC ! -o BRIDGE \
//	    -m comment --comment MARK -j MASQUERADE
func NewMasquerade(src netip.Prefix) *MasqueradeSpec { return &MasqueradeSpec{src: src} }

// In installs the rule in ns instead of the calling process's namespace.
func (s *MasqueradeSpec) In(ns *Namespace) *MasqueradeSpec { s.in = ns; return s }

// Out limits the NAT to packets leaving through ifname (`-o IFNAME`).
func (s *MasqueradeSpec) Out(ifname string) *MasqueradeSpec { s.out = ifname; return s }

// ExceptOut limits the NAT to packets leaving through any interface but
// ifname (`! -o IFNAME`).
func (s *MasqueradeSpec) ExceptOut(ifname string) *MasqueradeSpec { s.exceptOut = ifname; return s }

// ToSource rewrites the source to a, a fixed address of src's family
// (`-j SNAT --to-source A`), instead of the outgoing interface's address
// (`-j MASQUERADE`).
func (s *MasqueradeSpec) ToSource(a netip.Addr) *MasqueradeSpec { s.toSource = a; return s }

// Backend forces the iptables backend (default IptablesAuto).
func (s *MasqueradeSpec) Backend(b IptablesBackend) *MasqueradeSpec { s.backend = b; return s }

// Label sets the label recorded in the rule's ownership mark.
func (s *MasqueradeSpec) Label(label string) *MasqueradeSpec { s.label = label; return s }

func (s *MasqueradeSpec) validate() error {
	errs := []error{validatePrefix("source", s.src), s.backend.validate(), validateObjectLabel(s.label), validateKey(s.key)}
	if s.key != "" && s.label != "" {
		errs = append(errs, invalid(ErrInvalidOption, "Key(%q) and Label(%q) both given: a keyed rule carries no ownership mark", s.key, s.label))
	}
	if s.out != "" && s.exceptOut != "" {
		errs = append(errs, invalid(ErrInvalidOption, "Out(%q) and ExceptOut(%q) both given", s.out, s.exceptOut))
	}
	for _, n := range []string{s.out, s.exceptOut} {
		if n != "" {
			errs = append(errs, ValidateLinkName(n))
		}
	}
	if s.toSource.IsValid() {
		errs = append(errs, validateHostAddr("ToSource", s.toSource))
		if s.src.IsValid() && s.toSource.Is4() != s.src.Addr().Is4() {
			errs = append(errs, invalid(ErrInvalidAddress, "ToSource %v and source %v are of different families", s.toSource, s.src))
		}
	}
	return errors.Join(errs...)
}

// validatePrefix checks a network prefix used in a rule.
func validatePrefix(what string, p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return invalid(ErrInvalidAddress, "%s prefix %v is not a valid prefix (zero value?)", what, p)
	case p.Addr().Is4In6():
		return invalid(ErrInvalidAddress, "%s prefix %v is IPv4-mapped IPv6; give it as IPv4", what, p)
	case p.Addr().Zone() != "":
		return invalid(ErrInvalidAddress, "%s prefix %v has a zone", what, p)
	case p.Masked() != p:
		return invalid(ErrInvalidAddress, "%s prefix %v has host bits set (did you mean %v?)", what, p, p.Masked())
	}
	return nil
}

// validateHostAddr checks a unicast address used in a rule.
func validateHostAddr(what string, a netip.Addr) error {
	switch {
	case !a.IsValid():
		return invalid(ErrInvalidAddress, "%s address is the zero value", what)
	case a.Is4In6():
		return invalid(ErrInvalidAddress, "%s address %v is IPv4-mapped IPv6; give it as IPv4", what, a)
	case a.Zone() != "":
		return invalid(ErrInvalidAddress, "%s address %v has a zone", what, a)
	case a.IsUnspecified() || a.IsMulticast() || a.IsLoopback():
		return invalid(ErrInvalidAddress, "%s address %v is not a unicast, non-loopback address", what, a)
	}
	return nil
}

// Masquerade is a source NAT rule installed by podnet. The caller must
// Close it.
type Masquerade struct {
	o   *owner
	src netip.Prefix
}

// Create installs the rule, creating podnet's chains and the jump to them
// if they are missing. With Key, a rule already installed under the key
// (by any process) is left as it is and Create adds nothing.
func (s *MasqueradeSpec) Create(ctx context.Context) (*Masquerade, error) {
	name := s.src.String()
	if err := s.validate(); err != nil {
		return nil, opErr("create", "masquerade", name, err)
	}
	o, err := build(ctx, s.in, "masquerade", name, s.label, s.backend, true, func(ctx context.Context, o *owner) error {
		if s.key != "" {
			o.mark = keyComment(s.key)
		}
		fam := familyOf(s.src.Addr())
		spec := "-s " + s.src.String()
		switch {
		case s.out != "":
			spec += " -o " + s.out
		case s.exceptOut != "":
			spec += " ! -o " + s.exceptOut
		default:
			spec += " ! -d " + s.src.String()
		}
		spec += " " + commentArg(o.mark)
		if s.toSource.IsValid() {
			spec += " -j SNAT --to-source " + s.toSource.String()
		} else {
			spec += " -j MASQUERADE"
		}
		plan := iptPlan{fam: fam, mark: o.mark, units: []*chainUnit{unitPostrouting},
			rules: []ruleLine{{table: "nat", chain: chainPostrouting, spec: spec}}}
		if s.key != "" {
			plan.keyed = true
			plan.check = func(ts iptTables) error {
				if hasKeyedRule(ts, chainPostrouting, o.mark) {
					return errKeyInstalled
				}
				return nil
			}
		}
		o.addFamily(fam, []*chainUnit{unitPostrouting})
		err := o.st.applyLocked(ctx, o.ns, o.backend, plan)
		if s.key != "" && (err == nil || errors.Is(err, errKeyInstalled)) {
			// The rule belongs to no object: Close must leave it.
			o.fams, o.units = nil, map[int][]*chainUnit{}
			return nil
		}
		return err
	})
	if err != nil {
		return nil, opErr("create", "masquerade", name, err)
	}
	return &Masquerade{o: o, src: s.src}, nil
}

// Source returns the prefix whose traffic is NATed.
func (m *Masquerade) Source() netip.Prefix { return m.src }

// Backend returns the iptables backend the rule was installed with.
func (m *Masquerade) Backend() IptablesBackend { return m.o.backend }

// Mark returns the ownership mark the rule carries as its comment.
func (m *Masquerade) Mark() string { return m.o.mark }

// Close removes the rule, and podnet's chains and jumps if nothing else of
// podnet's is left in them. It is idempotent; a rule or namespace already
// gone counts as success. A rule installed under a Key is left in place:
// MasqueradeSpec.Remove removes it.
func (m *Masquerade) Close() error { return m.o.close() }
