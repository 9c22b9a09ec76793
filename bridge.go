package podnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// BridgeSpec describes a Linux bridge. Its setters cannot fail; Create
// validates and reports every problem.
type BridgeSpec struct {
	name  string
	in    *Namespace
	addrs []netip.Prefix
	mtu   int
	mac   net.HardwareAddr
	adopt bool
	label string
	dad   bool
	group uint32
}

// NewBridge describes a bridge named name.
//
// Equivalent to: `ip link add NAME type bridge; ip addr add ...; ip link set NAME up`
func NewBridge(name string) *BridgeSpec { return &BridgeSpec{name: name} }

// In places the bridge in ns instead of the calling process's namespace.
func (s *BridgeSpec) In(ns *Namespace) *BridgeSpec { s.in = ns; return s }

// Address adds addresses (address/prefix-length) to the bridge, such as
// its gateway address. IPv4 and IPv6 may be mixed. Calls accumulate.
func (s *BridgeSpec) Address(ps ...netip.Prefix) *BridgeSpec {
	s.addrs = append(s.addrs, ps...)
	return s
}

// MTU sets the bridge's MTU (68..65535); 0 keeps the kernel's default.
func (s *BridgeSpec) MTU(mtu int) *BridgeSpec { s.mtu = mtu; return s }

// MAC sets the bridge's hardware address.
func (s *BridgeSpec) MAC(mac net.HardwareAddr) *BridgeSpec { s.mac = mac; return s }

// Group puts the bridge in interface group g (see Namespace.DeleteLinkGroup).
func (s *BridgeSpec) Group(g uint32) *BridgeSpec { s.group = g; return s }

// Label sets the label recorded in the bridge's ownership mark.
func (s *BridgeSpec) Label(label string) *BridgeSpec { s.label = label; return s }

// DAD asks for duplicate address detection on the bridge's IPv6 addresses.
// By default it is off, so the addresses are usable when Create returns.
func (s *BridgeSpec) DAD(on bool) *BridgeSpec { s.dad = on; return s }

// Adopt lets Create use an existing bridge of that name instead of failing
// with ErrExists. An adopted bridge is not deleted by Close; only the
// addresses Create added to it are removed. Without Adopt, an existing
// bridge is never touched.
func (s *BridgeSpec) Adopt() *BridgeSpec { s.adopt = true; return s }

func (s *BridgeSpec) validate() error {
	return errors.Join(ValidateLinkName(s.name), validateMTU(s.mtu), validateMAC(s.mac),
		validateAddrs("bridge address", s.addrs), validateLabel(s.label))
}

func validateLabel(l string) error {
	if len(l) > 200 {
		return invalid(ErrInvalidOption, "label is %d bytes, longer than 200", len(l))
	}
	for i := 0; i < len(l); i++ {
		if l[i] < 0x20 || l[i] == 0x7f {
			return invalid(ErrInvalidOption, "label %q has control characters", l)
		}
	}
	return nil
}

// Bridge is a Linux bridge created or adopted by podnet. The caller must
// Close it.
type Bridge struct {
	name   string
	index  int
	ns     *Namespace
	owned  bool
	alias  string
	added  []netip.Prefix   // addresses podnet added to an adopted bridge
	mac    net.HardwareAddr // given to Create for a bridge it made (the kernel keeps it)
	up     bool             // adopted, and up already
	closed atomic.Bool
}

// Create makes the bridge (or adopts the existing one when Adopt was set),
// adds its addresses and brings it up. If any step fails, what Create made
// is removed again.
func (s *BridgeSpec) Create(ctx context.Context) (*Bridge, error) {
	b, err := s.create(ctx)
	return b, opErr("create", "bridge", s.name, err)
}

func (s *BridgeSpec) create(ctx context.Context) (*Bridge, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	ns, release, err := enter(ctx, s.in)
	if err != nil {
		return nil, err
	}
	defer release()
	h := ns.h
	b := &Bridge{name: s.name, ns: ns, owned: true, alias: selfMark(s.label), mac: slices.Clone(s.mac)}
	// adopt takes l, an existing link of that name, if it is a bridge.
	adopt := func(l netlink.Link) error {
		if l.Type() != "bridge" {
			return fmt.Errorf("%w: %q exists and is a %s, not a bridge", ErrExists, s.name, l.Type())
		}
		a := l.Attrs()
		b.index, b.owned, b.alias, b.mac, b.up = a.Index, false, a.Alias, nil, a.Flags&net.FlagUp != 0
		return nil
	}
	var l netlink.Link
	if s.adopt {
		// Most adoptions find the bridge: look first, which spares a
		// failing create.
		if l, err = h.LinkByName(s.name); err != nil && !isLinkNotFound(err) {
			return nil, err
		}
	}
	if l == nil {
		link := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: s.name, MTU: s.mtu, HardwareAddr: s.mac, Group: s.group}}
		err = h.LinkAdd(link)
		switch {
		case err == nil:
			b.index = link.Index
		case errors.Is(err, unix.EEXIST) && s.adopt:
			// Someone else made it meanwhile.
			if l, err = h.LinkByName(s.name); err != nil {
				return nil, err
			}
		case errors.Is(err, unix.EEXIST):
			return nil, fmt.Errorf("%w: an interface named %q exists in namespace %s (use Adopt to use an existing bridge)", ErrExists, s.name, ns)
		default:
			return nil, err
		}
	}
	if l != nil {
		if err := adopt(l); err != nil {
			return nil, err
		}
	}
	if err := b.setup(ns, s); err != nil {
		b.closed.Store(true)
		return nil, errors.Join(err, b.undoLocked())
	}
	return b, nil
}

func (b *Bridge) setup(ns *Namespace, s *BridgeSpec) error {
	if b.owned {
		if err := setMark(ns, b.index, b.alias); err != nil {
			return err
		}
		if err := faultPoint("bridge:created"); err != nil {
			return err
		}
		if err := quietIPv6(ns, b.index, b.name, hasV6(s.addrs), s.dad, nil, 0, ""); err != nil {
			return err
		}
	}
	for _, p := range s.addrs {
		err := addAddr(ns.h, b.index, p, s.dad)
		if !b.owned && errors.Is(err, ErrExists) {
			continue // already there: not ours to remove later
		}
		if err != nil {
			return err
		}
		if !b.owned {
			b.added = append(b.added, p)
		}
	}
	if err := faultPoint("bridge:addressed"); err != nil {
		return err
	}
	if b.up {
		return nil
	}
	return ns.h.LinkSetUp(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Index: b.index}})
}

// Name returns the bridge's interface name.
func (b *Bridge) Name() string { return b.name }

// Index returns the bridge's interface index in its namespace.
func (b *Bridge) Index() int { return b.index }

// Namespace returns the namespace the bridge lives in.
func (b *Bridge) Namespace() *Namespace { return b.ns }

// MAC returns the bridge's hardware address: the one given to Create if
// Create made the bridge, else the kernel's (asked each time: a bridge
// without an address of its own takes one from its ports, which come and
// go).
//
// Equivalent to: `ip -n NS link show BRIDGE`
func (b *Bridge) MAC(ctx context.Context) (net.HardwareAddr, error) {
	if b.mac != nil {
		return slices.Clone(b.mac), nil
	}
	var mac net.HardwareAddr
	err := b.ns.withHandle(ctx, func() error {
		l, err := b.ns.h.LinkByIndex(b.index)
		if err != nil {
			return err
		}
		mac = l.Attrs().HardwareAddr
		return nil
	})
	return mac, opErr("read", "bridge", b.name, err)
}

// Owned reports whether Close deletes the bridge (false when adopted).
func (b *Bridge) Owned() bool { return b.owned }

// Addresses lists the bridge's addresses.
func (b *Bridge) Addresses(ctx context.Context) ([]netip.Prefix, error) {
	if b.closed.Load() {
		return nil, opErr("list addresses of", "bridge", b.name, ErrClosed)
	}
	return b.ns.Addresses(ctx, b.name)
}

// SetPortOptions changes the bridge-port options of a port (an interface
// enslaved to this bridge).
//
// Equivalent to: `bridge link set dev PORT hairpin on|off isolated on|off`
func (b *Bridge) SetPortOptions(ctx context.Context, port string, opts PortOptions) error {
	if b.closed.Load() {
		return opErr("set port options on", "bridge", b.name, ErrClosed)
	}
	err := b.ns.withHandle(ctx, func() error {
		idx, err := b.ns.linkIndex(port)
		if err != nil {
			return err
		}
		return setPortOptions(b.ns.h, idx, opts)
	})
	return opErr("set port options on", "bridge", b.name, err)
}

// PortOptions are a bridge port's options; nil fields are left as they are.
type PortOptions struct {
	// Hairpin lets frames go back out of the port they came in on, which a
	// namespace needs to reach itself through a NAT on the bridge's host.
	Hairpin *bool
	// Isolated ports cannot talk to each other, only to non-isolated ports
	// (such as the bridge's uplink).
	Isolated *bool
}

func setPortOptions(h *netlink.Handle, idx int, o PortOptions) error {
	l := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: idx}}
	if o.Hairpin != nil {
		if err := h.LinkSetHairpin(l, *o.Hairpin); err != nil {
			return fmt.Errorf("hairpin: %w", err)
		}
	}
	if o.Isolated != nil {
		if err := h.LinkSetIsolated(l, *o.Isolated); err != nil {
			return fmt.Errorf("isolated: %w", err)
		}
	}
	return nil
}

// Close deletes the bridge if podnet created it, or removes the addresses
// podnet added if it was adopted. It is idempotent; a bridge already gone
// counts as success.
//
// Equivalent to: `ip link del NAME`
func (b *Bridge) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	release, err := b.ns.acquire()
	if err != nil {
		if b.ns.owned {
			return nil // the namespace took the bridge with it
		}
		return opErr("close", "bridge", b.name, err)
	}
	defer release()
	return opErr("close", "bridge", b.name, b.undoLocked())
}

// undoLocked deletes an owned bridge, or removes the addresses podnet added
// to an adopted one. The caller holds b.ns.
func (b *Bridge) undoLocked() error {
	if b.owned {
		return deleteLinkIfOursLocked(b.ns, b.index, b.name, "")
	}
	var errs []error
	l := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: b.index}}
	for _, p := range b.added {
		if err := b.ns.h.AddrDel(l, &netlink.Addr{IPNet: prefixToIPNet(p)}); err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("remove address %v: %w", p, err))
		}
	}
	return errors.Join(errs...)
}
