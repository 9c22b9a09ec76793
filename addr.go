package podnet

import (
	"context"
	"errors"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AddressOption configures AddAddress.
type AddressOption func(*addressOptions)

type addressOptions struct{ dad bool }

// WithDAD asks the kernel to run duplicate address detection on a new IPv6
// address. By default podnet adds IPv6 addresses with IFA_F_NODAD, so they
// are usable as soon as the call returns. It has no effect on IPv4.
func WithDAD(on bool) AddressOption { return func(o *addressOptions) { o.dad = on } }

// validateInterfaceAddr checks an address with prefix length meant for an
// interface.
func validateInterfaceAddr(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return invalid(ErrInvalidAddress, "address %v is not a valid address/prefix-length", p)
	case p.Addr().Is4In6():
		return invalid(ErrInvalidAddress, "address %v is an IPv4-mapped IPv6 address; give it as IPv4", p)
	case p.Addr().Zone() != "":
		return invalid(ErrInvalidAddress, "address %v has a zone", p)
	case p.Addr().IsUnspecified(), p.Addr().IsMulticast():
		return invalid(ErrInvalidAddress, "address %v is not a unicast address", p)
	}
	return nil
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	a := p.Addr()
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(p.Bits(), a.BitLen())}
}

func ipNetToPrefix(n *net.IPNet) netip.Prefix {
	if n == nil {
		return netip.Prefix{}
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

func addrFromIP(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// addAddr adds p to the link with index idx through h.
func addAddr(h *netlink.Handle, idx int, p netip.Prefix, dad bool) error {
	a := &netlink.Addr{IPNet: prefixToIPNet(p)}
	if p.Addr().Is6() && !dad {
		a.Flags = unix.IFA_F_NODAD
	}
	link := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: idx}}
	if err := h.AddrAdd(link, a); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return invalid(ErrExists, "address %v is already on the interface", p)
		}
		return err
	}
	return nil
}

func (n *Namespace) linkIndex(name string) (int, error) {
	l, err := n.h.LinkByName(name)
	if err != nil {
		if isLinkNotFound(err) {
			return 0, invalid(ErrNotFound, "no interface %q in namespace %s", name, n)
		}
		return 0, err
	}
	return l.Attrs().Index, nil
}

// AddAddress adds the address p (address and prefix length) to the
// interface ifname in the namespace. IPv6 addresses skip duplicate address
// detection unless WithDAD(true) is given.
//
// Equivalent to: `ip -n NS addr add P dev IFNAME nodad`
func (n *Namespace) AddAddress(ctx context.Context, ifname string, p netip.Prefix, opts ...AddressOption) error {
	var o addressOptions
	for _, opt := range opts {
		opt(&o)
	}
	err := n.withHandle(ctx, func() error {
		if err := validateInterfaceAddr(p); err != nil {
			return err
		}
		idx, err := n.linkIndex(ifname)
		if err != nil {
			return err
		}
		return addAddr(n.h, idx, p, o.dad)
	})
	return opErr("add address "+p.String()+" to", "interface", ifname, err)
}

// DelAddress removes the address p from the interface ifname.
//
// Equivalent to: `ip -n NS addr del P dev IFNAME`
func (n *Namespace) DelAddress(ctx context.Context, ifname string, p netip.Prefix) error {
	err := n.withHandle(ctx, func() error {
		if err := validateInterfaceAddr(p); err != nil {
			return err
		}
		idx, err := n.linkIndex(ifname)
		if err != nil {
			return err
		}
		link := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: idx}}
		err = n.h.AddrDel(link, &netlink.Addr{IPNet: prefixToIPNet(p)})
		if errors.Is(err, unix.EADDRNOTAVAIL) {
			return invalid(ErrNotFound, "address %v is not on the interface", p)
		}
		return err
	})
	return opErr("delete address "+p.String()+" from", "interface", ifname, err)
}

// Addresses lists the IPv4 and IPv6 addresses of the interface ifname,
// link-local ones included.
//
// Equivalent to: `ip -n NS addr show dev IFNAME`
func (n *Namespace) Addresses(ctx context.Context, ifname string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	err := n.withHandle(ctx, func() error {
		idx, err := n.linkIndex(ifname)
		if err != nil {
			return err
		}
		out, err = listAddrs(n.h, idx)
		return err
	})
	return out, opErr("list addresses of", "interface", ifname, err)
}

func listAddrs(h *netlink.Handle, idx int) ([]netip.Prefix, error) {
	addrs, err := redump(func() ([]netlink.Addr, error) {
		return h.AddrList(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: idx}}, netlink.FAMILY_ALL)
	})
	if err != nil {
		return nil, err
	}
	out := make([]netip.Prefix, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, ipNetToPrefix(a.IPNet))
	}
	return out, nil
}

// withHandle runs fn with the namespace guarded against Close and the
// context checked first.
func (n *Namespace) withHandle(ctx context.Context, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	release, err := n.acquire()
	if err != nil {
		return err
	}
	defer release()
	return fn()
}
