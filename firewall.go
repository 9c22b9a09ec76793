package podnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
)

// BridgeFirewallSpec describes the forwarding filter for one of podnet's
// bridges. Its setters cannot fail; Create validates and reports every
// problem.
type BridgeFirewallSpec struct {
	bridge  string
	subnets []netip.Prefix
	in      *Namespace
	backend IptablesBackend
	label   string
}

// NewBridgeFirewall describes the forwarding filter of the bridge named
// bridge, whose networks are subnets (at least one; their families decide
// between iptables and ip6tables). Once created:
//
//   - traffic forwarded from the bridge with a source in its subnets, and
//     to the bridge with a destination in them, is accepted, so that a
//     FORWARD policy of DROP (as Docker sets it) does not stop it;
//   - traffic between this bridge and any other bridge with a
//     BridgeFirewall in the namespace is dropped, in both directions,
//     except connections to a forwarded port (DNAT), until Allow permits it.
//
// Traffic to and from other interfaces (the uplink) is not restricted.
//
// Equivalent to (for br0 with 192.168.52.0/24):
//
//	iptables -A PODNET-FORWARD -s 192.168.52.0/24 -i br0 -m comment --comment MARK -j ACCEPT
//	iptables -A PODNET-FORWARD -d 192.168.52.0/24 -o br0 -m comment --comment MARK -j ACCEPT
//	iptables -A PODNET-ISOLATION -i br0 ! -o br0 -m conntrack ! --ctstate DNAT \
//	    -m comment --comment MARK -j PODNET-ISOLATION2
//	iptables -A PODNET-ISOLATION2 -o br0 -m comment --comment MARK -j DROP
//
// where FORWARD jumps to PODNET-FORWARD first thing, and PODNET-FORWARD to
// PODNET-ISOLATION before its accept rules. Isolation is the two-stage
// scheme Docker uses: one rule per bridge in each stage, none per pair.
func NewBridgeFirewall(bridge string, subnets ...netip.Prefix) *BridgeFirewallSpec {
	return &BridgeFirewallSpec{bridge: bridge, subnets: subnets}
}

// In installs the rules in ns instead of the calling process's namespace.
func (s *BridgeFirewallSpec) In(ns *Namespace) *BridgeFirewallSpec { s.in = ns; return s }

// Backend forces the iptables backend (default IptablesAuto).
func (s *BridgeFirewallSpec) Backend(b IptablesBackend) *BridgeFirewallSpec { s.backend = b; return s }

// Label sets the label recorded in the rules' ownership mark.
func (s *BridgeFirewallSpec) Label(label string) *BridgeFirewallSpec { s.label = label; return s }

func (s *BridgeFirewallSpec) validate() error {
	errs := []error{ValidateLinkName(s.bridge), s.backend.validate(), validateObjectLabel(s.label)}
	if len(s.subnets) == 0 {
		errs = append(errs, invalid(ErrInvalidAddress, "bridge %q: no subnet given", s.bridge))
	}
	for _, p := range s.subnets {
		errs = append(errs, validatePrefix("subnet", p))
	}
	return errors.Join(errs...)
}

// BridgeFirewall is the forwarding filter of one bridge, installed by
// podnet. The caller must Close it.
type BridgeFirewall struct {
	o      *owner
	bridge string
	fams   []int
}

// Create installs the rules, one iptables-restore per family, creating
// podnet's chains and jumps if they are missing. A bridge that already has
// a podnet firewall in the namespace is an error wrapping ErrExists.
func (s *BridgeFirewallSpec) Create(ctx context.Context) (*BridgeFirewall, error) {
	if err := s.validate(); err != nil {
		return nil, opErr("create", "firewall", s.bridge, err)
	}
	var fams []int
	o, err := build(ctx, s.in, "firewall", s.bridge, s.label, s.backend, true, func(ctx context.Context, o *owner) error {
		for _, fam := range []int{4, 6} {
			var rules []ruleLine
			for _, p := range s.subnets {
				if familyOf(p.Addr()) != fam {
					continue
				}
				rules = append(rules,
					ruleLine{table: "filter", chain: chainForward, spec: "-s " + p.String() + " -i " + s.bridge + " " + commentArg(o.mark) + " -j ACCEPT"},
					ruleLine{table: "filter", chain: chainForward, spec: "-d " + p.String() + " -o " + s.bridge + " " + commentArg(o.mark) + " -j ACCEPT"})
			}
			if len(rules) == 0 {
				continue
			}
			rules = append(rules,
				ruleLine{table: "filter", chain: chainIsolation, spec: "-i " + s.bridge + " ! -o " + s.bridge + " -m conntrack ! --ctstate DNAT " + commentArg(o.mark) + " -j " + chainIsolation2},
				ruleLine{table: "filter", chain: chainIsolation2, spec: "-o " + s.bridge + " " + commentArg(o.mark) + " -j DROP"})
			fams = append(fams, fam)
			o.addFamily(fam, []*chainUnit{unitForward})
			err := o.st.applyLocked(ctx, o.ns, o.backend, iptPlan{fam: fam, mark: o.mark, units: []*chainUnit{unitForward}, rules: rules,
				check: func(ts iptTables) error {
					for _, r := range ts.table("filter").rules {
						if r.chain == chainIsolation2 && r.arg("-o") == s.bridge {
							return fmt.Errorf("%w: bridge %q already has a podnet firewall in namespace %s (%s)", ErrExists, s.bridge, o.ns, r.comment())
						}
					}
					return nil
				}})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, opErr("create", "firewall", s.bridge, err)
	}
	return &BridgeFirewall{o: o, bridge: s.bridge, fams: fams}, nil
}

// Bridge returns the name of the bridge the firewall filters.
func (f *BridgeFirewall) Bridge() string { return f.bridge }

// Backend returns the iptables backend the rules were installed with.
func (f *BridgeFirewall) Backend() IptablesBackend { return f.o.backend }

// Mark returns the ownership mark the rules carry as their comment.
func (f *BridgeFirewall) Mark() string { return f.o.mark }

func (f *BridgeFirewall) allowRules(other string) []ruleLine {
	return []ruleLine{
		{table: "filter", chain: chainIsolation, insert: true, spec: "-i " + f.bridge + " -o " + other + " " + commentArg(f.o.mark) + " -j RETURN"},
		{table: "filter", chain: chainIsolation, insert: true, spec: "-i " + other + " -o " + f.bridge + " " + commentArg(f.o.mark) + " -j RETURN"},
	}
}

func (f *BridgeFirewall) isAllow(other string) func(*iptRule) bool {
	return func(r *iptRule) bool {
		in, out := r.arg("-i"), r.arg("-o")
		return r.chain == chainIsolation && r.target() == "RETURN" &&
			(in == f.bridge && out == other || in == other && out == f.bridge)
	}
}

// Allow lets traffic flow between this bridge and the interface other
// (usually another firewalled bridge), both ways. The permission belongs to
// this firewall: Disallow or Close removes it. Allowing twice is harmless.
//
// Equivalent to:
//
//	iptables -I PODNET-ISOLATION -i BRIDGE -o OTHER -m comment --comment MARK -j RETURN
//	iptables -I PODNET-ISOLATION -i OTHER -o BRIDGE -m comment --comment MARK -j RETURN
func (f *BridgeFirewall) Allow(ctx context.Context, other string) error {
	err := f.checkOther(other)
	if err == nil {
		err = f.o.withLocked(ctx, func(ctx context.Context) error {
			for _, fam := range f.fams {
				err := f.o.st.applyLocked(ctx, f.o.ns, f.o.backend, iptPlan{fam: fam, mark: f.o.mark, units: []*chainUnit{unitForward}, rules: f.allowRules(other),
					check: func(ts iptTables) error {
						for _, r := range ts.table("filter").rules {
							if r.comment() == f.o.mark && f.isAllow(other)(r) {
								return errAlreadyAllowed
							}
						}
						return nil
					}})
				if err != nil && !errors.Is(err, errAlreadyAllowed) {
					return err
				}
			}
			return nil
		})
	}
	return opErr("allow "+other+" on", "firewall", f.bridge, err)
}

var errAlreadyAllowed = errors.New("already allowed")

// Disallow takes back what Allow(other) permitted. Disallowing what was not
// allowed is harmless.
//
// Equivalent to:
//
//	iptables -D PODNET-ISOLATION -i BRIDGE -o OTHER -m comment --comment MARK -j RETURN
//	iptables -D PODNET-ISOLATION -i OTHER -o BRIDGE -m comment --comment MARK -j RETURN
func (f *BridgeFirewall) Disallow(ctx context.Context, other string) error {
	err := f.checkOther(other)
	if err == nil {
		err = f.o.withLocked(ctx, func(ctx context.Context) error {
			var errs []error
			for _, fam := range f.fams {
				errs = append(errs, f.o.st.removeLocked(ctx, f.o.ns, f.o.backend, fam, removal{mark: f.o.mark, match: f.isAllow(other)}))
			}
			return errors.Join(errs...)
		})
	}
	return opErr("disallow "+other+" on", "firewall", f.bridge, err)
}

func (f *BridgeFirewall) checkOther(other string) error {
	if err := ValidateLinkName(other); err != nil {
		return err
	}
	if other == f.bridge {
		return invalid(ErrInvalidOption, "a bridge is always allowed to reach itself")
	}
	return nil
}

// Close removes the firewall's rules (its Allow permissions included), and
// podnet's chains and jumps if nothing else of podnet's is left in them. It
// is idempotent; rules or a namespace already gone count as success.
func (f *BridgeFirewall) Close() error { return f.o.close() }
