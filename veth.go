package podnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// VethSpec describes a veth pair: a host end in one namespace (the
// calling process's unless In is given) and a peer end, usually inside
// another namespace. Its setters cannot fail; Create validates and reports
// every problem.
type VethSpec struct {
	name, peerName string
	in, peerNS     *Namespace
	master         *Bridge
	mtu            int
	mac, peerMAC   net.HardwareAddr
	addrs, peerAdd []netip.Prefix
	port           PortOptions
	group          uint32
	label          string
	dad            bool
	ipv6           *bool
}

// NewVethPair describes a veth pair whose host end is named name. An empty
// name makes Create generate a unique one ("pn" and random hex digits).
//
// Equivalent to: `ip link add NAME type veth peer name PEER netns NS`
func NewVethPair(name string) *VethSpec { return &VethSpec{name: name} }

// In places the host end in ns instead of the calling process's namespace.
func (s *VethSpec) In(ns *Namespace) *VethSpec { s.in = ns; return s }

// Peer names the peer end and the namespace it is created in (nil: the
// host end's namespace). The peer is created directly inside ns, never
// moved there afterwards. An empty name is generated.
func (s *VethSpec) Peer(name string, ns *Namespace) *VethSpec {
	s.peerName, s.peerNS = name, ns
	return s
}

// Master enslaves the host end to br, which must live in the host end's
// namespace.
//
// Equivalent to: `ip link set NAME master BRIDGE`
func (s *VethSpec) Master(br *Bridge) *VethSpec { s.master = br; return s }

// MTU sets the MTU of both ends (68..65535); 0 keeps the default.
func (s *VethSpec) MTU(mtu int) *VethSpec { s.mtu = mtu; return s }

// MAC sets the host end's hardware address.
func (s *VethSpec) MAC(mac net.HardwareAddr) *VethSpec { s.mac = mac; return s }

// PeerMAC sets the peer end's hardware address.
func (s *VethSpec) PeerMAC(mac net.HardwareAddr) *VethSpec { s.peerMAC = mac; return s }

// Address adds addresses to the host end. Calls accumulate.
func (s *VethSpec) Address(ps ...netip.Prefix) *VethSpec { s.addrs = append(s.addrs, ps...); return s }

// PeerAddress adds addresses to the peer end. Calls accumulate.
func (s *VethSpec) PeerAddress(ps ...netip.Prefix) *VethSpec {
	s.peerAdd = append(s.peerAdd, ps...)
	return s
}

// Hairpin sets the hairpin mode of the host end as a bridge port.
func (s *VethSpec) Hairpin(on bool) *VethSpec { s.port.Hairpin = &on; return s }

// Isolated sets the host end's bridge-port isolation: isolated ports do not
// talk to each other.
func (s *VethSpec) Isolated(on bool) *VethSpec { s.port.Isolated = &on; return s }

// Group puts the host end in interface group g, so that many pairs can be
// deleted in one request (Namespace.DeleteLinkGroup).
func (s *VethSpec) Group(g uint32) *VethSpec { s.group = g; return s }

// Label sets the label recorded in the host end's ownership mark.
func (s *VethSpec) Label(label string) *VethSpec { s.label = label; return s }

// DAD asks for duplicate address detection on IPv6 addresses. Off by
// default, so addresses are usable when Create returns.
func (s *VethSpec) DAD(on bool) *VethSpec { s.dad = on; return s }

// IPv6 forces IPv6 on (true) or off (false) on both ends. By default IPv6
// is on only when an IPv6 address is given for either end: an IPv4-only
// pair gets no link-local address and sends no IPv6 multicast, which keeps
// attaching the thousandth port to a bridge as cheap as the first.
func (s *VethSpec) IPv6(on bool) *VethSpec { s.ipv6 = &on; return s }

func (s *VethSpec) validate() error {
	var errs []error
	if s.name != "" {
		errs = append(errs, ValidateLinkName(s.name))
	}
	if s.peerName != "" {
		errs = append(errs, ValidateLinkName(s.peerName))
	}
	if s.name != "" && s.name == s.peerName && (s.peerNS == nil || s.peerNS == s.in) {
		errs = append(errs, invalid(ErrInvalidName, "both ends are named %q in the same namespace", s.name))
	}
	errs = append(errs, validateMTU(s.mtu), validateMAC(s.mac), validateMAC(s.peerMAC),
		validateAddrs("host end", s.addrs), validateAddrs("peer end", s.peerAdd), validateLabel(s.label))
	if s.ipv6 != nil && !*s.ipv6 && (hasV6(s.addrs) || hasV6(s.peerAdd)) {
		errs = append(errs, invalid(ErrInvalidOption, "IPv6(false) with an IPv6 address"))
	}
	if s.master != nil {
		if s.master.closed.Load() {
			errs = append(errs, fmt.Errorf("master bridge %q: %w", s.master.name, ErrClosed))
		} else if s.in != nil && s.master.ns != s.in || s.in == nil && s.master.ns != hostNSOrNil() {
			errs = append(errs, invalid(ErrInvalidOption, "master bridge %q is in namespace %s, not the host end's", s.master.name, s.master.ns))
		}
	}
	if (s.port.Hairpin != nil || s.port.Isolated != nil) && s.master == nil {
		errs = append(errs, invalid(ErrInvalidOption, "hairpin and isolation need a master bridge"))
	}
	if s.peerNS != nil && s.peerNS.closed.Load() {
		errs = append(errs, fmt.Errorf("peer namespace %s: %w", s.peerNS, ErrClosed))
	}
	return errors.Join(errs...)
}

func hostNSOrNil() *Namespace {
	ns, _ := defaultNamespace()
	return ns
}

// VethPair is a veth pair created by podnet. The caller must Close it.
type VethPair struct {
	name, peerName   string
	index, peerIndex int
	ns, peerNS       *Namespace
	alias            string
	mac, peerMAC     net.HardwareAddr
	closed           atomic.Bool
}

// Create makes the pair with the peer directly inside its namespace,
// enslaves the host end, applies addresses and port options and brings
// both ends up. If any step fails, the pair is deleted again.
func (s *VethSpec) Create(ctx context.Context) (*VethPair, error) {
	v, err := s.create(ctx)
	return v, opErr("create", "veth", s.name, err)
}

func (s *VethSpec) create(ctx context.Context) (*VethPair, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	ns, release, err := enter(ctx, s.in)
	if err != nil {
		return nil, err
	}
	defer release()
	peerNS := ns
	if s.peerNS != nil {
		peerNS = s.peerNS
	}
	if peerNS != ns {
		prelease, err := peerNS.acquire()
		if err != nil {
			return nil, fmt.Errorf("peer namespace %s: %w", peerNS, err)
		}
		defer prelease()
	}

	v := &VethPair{name: s.name, peerName: s.peerName, ns: ns, peerNS: peerNS, alias: selfMark(s.label)}
	link := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{MTU: s.mtu, HardwareAddr: s.mac, Group: s.group,
			// Created up: it has no carrier until the peer comes up, after
			// the IPv6 sysctls are set, so nothing is sent before that.
			Flags: net.FlagUp},
		PeerHardwareAddr: s.peerMAC,
		PeerMTU:          uint32(s.mtu),
	}
	if peerNS != ns {
		link.PeerNamespace = netlink.NsFd(peerNS.fd)
	}
	if s.master != nil {
		link.MasterIndex = s.master.index
	}
	for try := 0; ; try++ {
		if s.name == "" {
			v.name = genName("pn")
		}
		if s.peerName == "" {
			v.peerName = genName("pp")
		}
		link.Name, link.PeerName = v.name, v.peerName
		err = ns.h.LinkAdd(link)
		if err == nil || !errors.Is(err, unix.EEXIST) || (s.name != "" && s.peerName != "") || try == 3 {
			break
		}
	}
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("%w: interface %q exists in namespace %s or %q exists in namespace %s: %w",
				ErrExists, v.name, ns, v.peerName, peerNS, err)
		}
		if link.Index != 0 {
			// LinkAdd created the pair but failed to enslave it.
			err = errors.Join(err, deleteLinkIfOursLocked(ns, link.Index, v.name, ""))
		}
		return nil, err
	}
	v.index = link.Index
	if err := v.setup(s); err != nil {
		v.closed.Store(true)
		return nil, errors.Join(err, deleteLinkIfOursLocked(ns, v.index, v.name, ""))
	}
	return v, nil
}

// setup configures a freshly created pair; the caller holds both namespaces.
func (v *VethPair) setup(s *VethSpec) error {
	ns, peerNS := v.ns, v.peerNS
	if err := setMark(ns, v.index, v.alias); err != nil {
		return err
	}
	if err := faultPoint("veth:created"); err != nil {
		return err
	}
	wantV6 := hasV6(s.addrs) || hasV6(s.peerAdd)
	if s.ipv6 != nil {
		wantV6 = *s.ipv6
	}
	peer, err := peerNS.h.LinkByName(v.peerName)
	if err != nil {
		return fmt.Errorf("find peer %q: %w", v.peerName, err)
	}
	v.peerIndex = peer.Attrs().Index
	v.peerMAC = peer.Attrs().HardwareAddr
	if err := quietIPv6(ns, v.index, v.name, wantV6, s.dad, peerNS, v.peerIndex, v.peerName); err != nil {
		return err
	}
	if err := faultPoint("veth:sysctl"); err != nil {
		return err
	}
	v.mac = s.mac
	for _, p := range s.addrs {
		if err := addAddr(ns.h, v.index, p, s.dad); err != nil {
			return fmt.Errorf("host end: %w", err)
		}
	}
	for _, p := range s.peerAdd {
		if err := addAddr(peerNS.h, v.peerIndex, p, s.dad); err != nil {
			return fmt.Errorf("peer end: %w", err)
		}
	}
	if err := faultPoint("veth:addressed"); err != nil {
		return err
	}
	if s.port.Hairpin != nil || s.port.Isolated != nil {
		if err := setPortOptions(ns.h, v.index, s.port); err != nil {
			return err
		}
	}
	if err := peerNS.h.LinkSetUp(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: v.peerIndex}}); err != nil {
		return fmt.Errorf("set peer up: %w", err)
	}
	return faultPoint("veth:up")
}

// Name returns the host end's interface name.
func (v *VethPair) Name() string { return v.name }

// PeerName returns the peer end's interface name.
func (v *VethPair) PeerName() string { return v.peerName }

// Index returns the host end's interface index.
func (v *VethPair) Index() int { return v.index }

// PeerIndex returns the peer end's interface index in its namespace.
func (v *VethPair) PeerIndex() int { return v.peerIndex }

// PeerMAC returns the peer end's hardware address.
func (v *VethPair) PeerMAC() net.HardwareAddr { return v.peerMAC }

// Namespace returns the host end's namespace.
func (v *VethPair) Namespace() *Namespace { return v.ns }

// PeerNamespace returns the peer end's namespace.
func (v *VethPair) PeerNamespace() *Namespace { return v.peerNS }

// AddPeerAddress adds the address p to the peer end, found by its index
// (no lookup by name). IPv6 addresses skip duplicate address detection
// unless WithDAD(true) is given. For addresses known before Create, use
// PeerAddress: they are in place before the peer comes up.
//
// Equivalent to: `ip -n PEERNS addr add P dev PEER nodad`
func (v *VethPair) AddPeerAddress(ctx context.Context, p netip.Prefix, opts ...AddressOption) error {
	var o addressOptions
	for _, opt := range opts {
		opt(&o)
	}
	err := v.peerNS.withHandle(ctx, func() error {
		if v.closed.Load() {
			return ErrClosed
		}
		if err := validateInterfaceAddr(p); err != nil {
			return err
		}
		return addAddr(v.peerNS.h, v.peerIndex, p, o.dad)
	})
	return opErr("add address "+p.String()+" to", "interface", v.peerName, err)
}

// Close deletes the pair (both ends). It is idempotent; a pair already
// gone, for example with its peer's namespace, counts as success.
//
// Equivalent to: `ip link del NAME`
func (v *VethPair) Close() error {
	if v.closed.Swap(true) {
		return nil
	}
	return opErr("close", "veth", v.name, deleteLinkIfOurs(v.ns, v.index, v.name, v.alias))
}
