package podnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Route is a static route in a namespace. A Route with neither Dst nor Dev
// but with a Gateway is a default route of the gateway's family.
type Route struct {
	Dst     netip.Prefix // destination; the zero value means the default route
	Gateway netip.Addr   // next hop; zero for a device route
	Dev     string       // outgoing interface; may be empty when Gateway is set
	Src     netip.Addr   // preferred source address; optional
	Metric  int          // priority; 0 is the kernel's default
	Table   int          // routing table; 0 means main (254)
	OnLink  bool         // the gateway is on the link even if no prefix says so
}

func (r Route) String() string {
	s := "default"
	if r.Dst.IsValid() {
		s = r.Dst.String()
	}
	if r.Gateway.IsValid() {
		s += " via " + r.Gateway.String()
	}
	if r.Dev != "" {
		s += " dev " + r.Dev
	}
	if r.Metric != 0 {
		s += fmt.Sprintf(" metric %d", r.Metric)
	}
	if r.Table != 0 {
		s += fmt.Sprintf(" table %d", r.Table)
	}
	return s
}

// family returns 4 or 6, or 0 when it cannot be told.
func (r Route) family() int {
	switch {
	case r.Dst.IsValid():
		return bitsFamily(r.Dst.Addr())
	case r.Gateway.IsValid():
		return bitsFamily(r.Gateway)
	}
	return 0
}

func bitsFamily(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

func (r Route) validate() error {
	var errs []error
	if r.Dst.IsValid() {
		if r.Dst.Addr().Is4In6() {
			errs = append(errs, invalid(ErrInvalidAddress, "destination %v is IPv4-mapped; give it as IPv4", r.Dst))
		} else if r.Dst.Masked() != r.Dst {
			errs = append(errs, invalid(ErrInvalidRoute, "destination %v has host bits set (did you mean %v?)", r.Dst, r.Dst.Masked()))
		}
	}
	if r.Gateway.IsValid() {
		switch {
		case r.Gateway.Is4In6():
			errs = append(errs, invalid(ErrInvalidAddress, "gateway %v is IPv4-mapped; give it as IPv4", r.Gateway))
		case r.Gateway.IsUnspecified() || r.Gateway.IsMulticast():
			errs = append(errs, invalid(ErrInvalidAddress, "gateway %v is not a unicast address", r.Gateway))
		case r.Dst.IsValid() && r.Dst.Addr().Is4() != r.Gateway.Is4():
			errs = append(errs, invalid(ErrInvalidAddress, "gateway %v and destination %v are of different families", r.Gateway, r.Dst))
		}
	}
	if r.Src.IsValid() && r.family() != 0 && bitsFamily(r.Src) != r.family() {
		errs = append(errs, invalid(ErrInvalidAddress, "source %v is of the wrong family for route %v", r.Src, r))
	}
	if !r.Dst.IsValid() && !r.Gateway.IsValid() {
		errs = append(errs, invalid(ErrInvalidRoute, "route needs a destination or a gateway"))
	}
	if !r.Gateway.IsValid() && r.Dev == "" {
		errs = append(errs, invalid(ErrInvalidRoute, "route to %v needs a gateway or a device", r.Dst))
	}
	if r.Dev != "" {
		if err := ValidateLinkName(r.Dev); err != nil {
			errs = append(errs, err)
		}
	}
	if r.Metric < 0 {
		errs = append(errs, invalid(ErrInvalidRoute, "metric %d is negative", r.Metric))
	}
	if r.Table < 0 {
		errs = append(errs, invalid(ErrInvalidRoute, "table %d is negative", r.Table))
	}
	return errors.Join(errs...)
}

func (n *Namespace) toNetlinkRoute(r Route) (*netlink.Route, error) {
	nr := &netlink.Route{Priority: r.Metric, Table: r.Table}
	if r.Dst.IsValid() {
		nr.Dst = prefixToIPNet(r.Dst)
	}
	if r.Gateway.IsValid() {
		nr.Gw = r.Gateway.AsSlice()
	}
	if r.Src.IsValid() {
		nr.Src = r.Src.AsSlice()
	}
	if r.OnLink {
		nr.Flags |= int(netlink.FLAG_ONLINK)
	}
	if r.family() == 6 {
		nr.Family = netlink.FAMILY_V6
	} else {
		nr.Family = netlink.FAMILY_V4
	}
	if r.Dev != "" {
		idx, err := n.linkIndex(r.Dev)
		if err != nil {
			return nil, err
		}
		nr.LinkIndex = idx
	}
	return nr, nil
}

// AddRoute installs r.
//
// Equivalent to: `ip -n NS route add DST via GW dev DEV metric M table T`
func (n *Namespace) AddRoute(ctx context.Context, r Route) error {
	err := n.withHandle(ctx, func() error {
		if err := r.validate(); err != nil {
			return err
		}
		nr, err := n.toNetlinkRoute(r)
		if err != nil {
			return err
		}
		return explainRouteErr(r, n.h.RouteAdd(nr))
	})
	return opErr("add route", "namespace", n.String(), err)
}

// addRouteOnLink is AddRoute for a route whose device's index the caller
// already knows, saving the lookup.
func (n *Namespace) addRouteOnLink(ctx context.Context, r Route, idx int) error {
	err := n.withHandle(ctx, func() error {
		if err := r.validate(); err != nil {
			return err
		}
		dev := r.Dev
		r.Dev = ""
		nr, err := n.toNetlinkRoute(r)
		if err != nil {
			return err
		}
		r.Dev, nr.LinkIndex = dev, idx
		return explainRouteErr(r, n.h.RouteAdd(nr))
	})
	return opErr("add route", "namespace", n.String(), err)
}

// AddDefaultRoute installs a default route via gw, of gw's family.
//
// Equivalent to: `ip -n NS route add default via GW`
func (n *Namespace) AddDefaultRoute(ctx context.Context, gw netip.Addr) error {
	return n.AddRoute(ctx, Route{Gateway: gw})
}

// DelRoute removes r. A route that is not there is an error wrapping
// ErrNotFound.
//
// Equivalent to: `ip -n NS route del ...`
func (n *Namespace) DelRoute(ctx context.Context, r Route) error {
	err := n.withHandle(ctx, func() error {
		if err := r.validate(); err != nil {
			return err
		}
		nr, err := n.toNetlinkRoute(r)
		if err != nil {
			return err
		}
		err = n.h.RouteDel(nr)
		if errors.Is(err, unix.ESRCH) {
			return invalid(ErrNotFound, "no route %v", r)
		}
		return err
	})
	return opErr("delete route", "namespace", n.String(), err)
}

// Routes lists the IPv4 and IPv6 routes of a table (0 means main) in the
// namespace, IPv6 link-local and multicast routes left out.
//
// Equivalent to: `ip -n NS route show table T; ip -n NS -6 route show table T`
func (n *Namespace) Routes(ctx context.Context, table int) ([]Route, error) {
	var out []Route
	err := n.withHandle(ctx, func() error {
		if table == 0 {
			table = unix.RT_TABLE_MAIN
		}
		names := map[int]string{}
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			rs, err := redump(func() ([]netlink.Route, error) {
				return n.h.RouteListFiltered(fam, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
			})
			if err != nil {
				return err
			}
			for _, nr := range rs {
				r := Route{Dst: ipNetToPrefix(nr.Dst), Gateway: addrFromIP(nr.Gw), Src: addrFromIP(nr.Src),
					Metric: nr.Priority, OnLink: nr.Flags&int(netlink.FLAG_ONLINK) != 0}
				if nr.Table != unix.RT_TABLE_MAIN {
					r.Table = nr.Table
				}
				if r.Dst.IsValid() && r.Dst.Bits() == 0 {
					r.Dst = netip.Prefix{}
				}
				if r.Dst.IsValid() && r.Dst.Addr().Is6() && (r.Dst.Addr().IsLinkLocalUnicast() || r.Dst.Addr().IsMulticast()) {
					continue
				}
				if nr.LinkIndex > 0 {
					name, ok := names[nr.LinkIndex]
					if !ok {
						if l, err := n.h.LinkByIndex(nr.LinkIndex); err == nil {
							name = l.Attrs().Name
						}
						names[nr.LinkIndex] = name
					}
					r.Dev = name
				}
				out = append(out, r)
			}
		}
		return nil
	})
	return out, opErr("list routes", "namespace", n.String(), err)
}

func explainRouteErr(r Route, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ENETUNREACH):
		return fmt.Errorf("%w: gateway %v is not in any connected prefix: %w", ErrInvalidRoute, r.Gateway, err)
	case errors.Is(err, unix.EEXIST):
		return fmt.Errorf("%w: route %v: %w", ErrExists, r, err)
	}
	return err
}
