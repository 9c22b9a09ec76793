package podnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Shared helpers for the links podnet creates (bridges and veth ends).

var (
	hostOnce sync.Once
	hostNS   *Namespace
	hostErr  error
)

// defaultNamespace returns the calling process's namespace, opened once and
// never closed; builders use it when no In(ns) is given.
func defaultNamespace() (*Namespace, error) {
	hostOnce.Do(func() { hostNS, hostErr = CurrentNamespace() })
	return hostNS, hostErr
}

func resolveNS(ns *Namespace) (*Namespace, error) {
	if ns == nil {
		return defaultNamespace()
	}
	if ns.closed.Load() {
		return nil, fmt.Errorf("namespace %s: %w", ns, ErrClosed)
	}
	return ns, nil
}

// enter resolves in (nil: the calling process's namespace), checks ctx and
// guards the namespace against a concurrent Close for the caller, which
// must call release when done.
func enter(ctx context.Context, in *Namespace) (ns *Namespace, release func(), err error) {
	if ns, err = resolveNS(in); err != nil {
		return nil, nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if release, err = ns.acquire(); err != nil {
		return nil, nil, fmt.Errorf("namespace %s: %w", ns, err)
	}
	return ns, release, nil
}

func validateMTU(mtu int) error {
	if mtu != 0 && (mtu < 68 || mtu > 65535) {
		return invalid(ErrInvalidOption, "MTU %d is outside 68..65535", mtu)
	}
	return nil
}

func validateMAC(mac net.HardwareAddr) error {
	if mac == nil {
		return nil
	}
	if len(mac) != 6 {
		return invalid(ErrInvalidOption, "MAC %v is not 6 bytes", mac)
	}
	if mac[0]&1 != 0 {
		return invalid(ErrInvalidOption, "MAC %v is a multicast address", mac)
	}
	if [6]byte(mac) == [6]byte{} {
		return invalid(ErrInvalidOption, "MAC %v is all zeros", mac)
	}
	return nil
}

func validateAddrs(what string, ps []netip.Prefix) error {
	var errs []error
	seen := make(map[netip.Addr]bool, len(ps))
	for _, p := range ps {
		if err := validateInterfaceAddr(p); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
			continue
		}
		if seen[p.Addr()] {
			errs = append(errs, invalid(ErrInvalidAddress, "%s: address %v given twice", what, p.Addr()))
		}
		seen[p.Addr()] = true
	}
	return errors.Join(errs...)
}

func hasV6(ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Addr().Is6() {
			return true
		}
	}
	return false
}

// quietIPv6 prepares the IPv6 side of new links (given as namespace,
// index and name; a nil namespace is skipped) before they get carrier.
//
// Without IPv6 addresses wanted, the links get no link-local address
// (addr_gen_mode none, one netlink request each, no thread switch): with
// no IPv6 address they send no DAD, MLD or router solicitation, so a new
// port does not flood every other port of a bridge with multicast, which
// keeps attaching the thousandth port as cheap as the first. IPv6 stays
// enabled, so an address added later still works.
//
// With IPv6 wanted and no DAD asked for, accept_dad is turned off on them
// (in one thread handoff), so that the kernel's link-local address skips
// DAD too (the kernel clears its tentative flag from a work queue, a moment
// after the link comes up; podnet's own addresses use IFA_F_NODAD and are
// never tentative).
func quietIPv6(ns *Namespace, idx int, name string, wantV6, dad bool, peerNS *Namespace, peerIdx int, peerName string) error {
	if !wantV6 {
		for _, l := range []struct {
			ns  *Namespace
			idx int
		}{{ns, idx}, {peerNS, peerIdx}} {
			if l.ns == nil {
				continue
			}
			dev := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: l.idx}}
			if err := l.ns.h.LinkSetIP6AddrGenMode(dev, addrGenModeNone); err != nil && !errors.Is(err, unix.EAFNOSUPPORT) {
				return fmt.Errorf("addr_gen_mode none: %w", err)
			}
		}
		return nil
	}
	if dad {
		return nil
	}
	sets := []nsSysctls{{ns, [][2]string{{linkSysctl("ipv6", name, "accept_dad"), "0"}}}}
	if peerNS != nil {
		sets = append(sets, nsSysctls{peerNS, [][2]string{{linkSysctl("ipv6", peerName, "accept_dad"), "0"}}})
	}
	return applySysctlsIn(sets...)
}

// addrGenModeNone is IN6_ADDR_GEN_MODE_NONE: no link-local address.
const addrGenModeNone = 1

// nsSysctls are sysctl writes for one namespace.
type nsSysctls struct {
	ns  *Namespace
	kvs [][2]string
}

// applySysctlsIn writes each set of sysctls inside its namespace, all on
// one fresh thread that visits the namespaces in turn: one thread handoff
// however many namespaces, which matters on a loaded machine. A missing
// file (IPv6 compiled out or disabled at boot) is not an error.
func applySysctlsIn(sets ...nsSysctls) error {
	n := 0
	for _, s := range sets {
		n += len(s.kvs)
	}
	if n == 0 {
		return nil
	}
	return onFreshThread(func() error {
		for _, s := range sets {
			if len(s.kvs) == 0 {
				continue
			}
			if err := unix.Setns(s.ns.fd, unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("setns: %w", err)
			}
			for _, kv := range s.kvs {
				if err := writeSysctl(kv[0], kv[1]); err != nil && !errors.Is(err, unix.ENOENT) {
					return fmt.Errorf("sysctl %s in %s: %w", kv[0], s.ns, err)
				}
			}
		}
		return nil
	})
}

// setMark writes podnet's ownership mark as the alias of link idx. The
// kernel ignores IFLA_IFALIAS in a create request, so it takes its own.
func setMark(ns *Namespace, idx int, mark string) error {
	if err := ns.h.LinkSetAlias(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: idx}}, mark); err != nil {
		return fmt.Errorf("set ownership mark: %w", err)
	}
	return nil
}

// deleteLinkIfOurs deletes the link idx in ns if it still has the name and
// alias podnet gave it, so that an ifindex reused by someone else is never
// deleted. A link already gone counts as success.
func deleteLinkIfOurs(ns *Namespace, idx int, name, alias string) error {
	release, err := ns.acquire()
	if err != nil {
		if ns.owned {
			return nil // an owned namespace took its links with it
		}
		return err
	}
	defer release()
	return deleteLinkIfOursLocked(ns, idx, name, alias)
}

// deleteLinkIfOursLocked is deleteLinkIfOurs for a caller that holds ns.
// An empty alias skips the alias check (for rollback, before it is set).
func deleteLinkIfOursLocked(ns *Namespace, idx int, name, alias string) error {
	l, err := ns.h.LinkByIndex(idx)
	if err != nil {
		if isGone(err) {
			return nil
		}
		return err
	}
	if l.Attrs().Name != name || alias != "" && l.Attrs().Alias != alias {
		return nil // ours is gone; the index now belongs to another link
	}
	if err := ns.h.LinkDel(l); err != nil && !isGone(err) {
		return err
	}
	return nil
}

// DeleteLinkGroup deletes every link of interface group group in the
// namespace in one netlink request; a veth's peer goes with it. It is the
// fast way to tear down many links: the kernel batches the waits that
// deleting links one by one pays each time. Group 0 (the default group) is
// refused.
//
// Equivalent to: `ip -n NS link delete group GROUP`
func (n *Namespace) DeleteLinkGroup(ctx context.Context, group uint32) error {
	if group == 0 {
		return opErr("delete link group", "namespace", n.String(), invalid(ErrInvalidOption, "group 0 is every link's default group"))
	}
	err := n.withHandle(ctx, func() error {
		return onThreadIn(n.fd, func() error {
			req := nl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
			req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
			req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(group)))
			_, err := req.Execute(unix.NETLINK_ROUTE, 0)
			if isGone(err) {
				return nil
			}
			return err
		})
	})
	return opErr(fmt.Sprintf("delete link group %d in", group), "namespace", n.String(), err)
}

// Links lists the names of the links in the namespace.
//
// Equivalent to: `ip -n NS link show`
func (n *Namespace) Links(ctx context.Context) ([]netlink.Link, error) {
	var out []netlink.Link
	err := n.withHandle(ctx, func() error {
		var err error
		out, err = redump(n.h.LinkList)
		return err
	})
	return out, opErr("list links", "namespace", n.String(), err)
}
