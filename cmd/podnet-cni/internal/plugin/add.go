package plugin

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/ipam"
)

// Indexes of the interfaces in an ADD result, as the reference bridge
// plugin orders them.
const (
	ifBridge    = 0
	ifHost      = 1
	ifContainer = 2
)

// allocation is an address an attachment got from a range.
type allocation struct {
	r    Range
	addr netip.Addr
	pool *ipam.Pool // the range's store
}

func (a allocation) prefix() netip.Prefix { return netip.PrefixFrom(a.addr, a.r.Subnet.Bits()) }

// Add attaches the container: an address from every range set, a veth pair
// with one end inside the container's namespace as args.IfName and the
// other on the bridge (created if missing), routes, and, as configured,
// gateway addresses on the bridge, forwarding and masquerading. On failure
// it undoes what it did, except the bridge and the network's NAT rule,
// which belong to the network. The result is in the configuration's CNI
// version.
//
// Equivalent to what the reference bridge plugin with host-local IPAM does
// on ADD.
func (p *Plugin) Add(ctx context.Context, args *skel.CmdArgs) (types.Result, error) {
	c, err := ParseConfig(args.StdinData, args.Args)
	if err != nil {
		return nil, err
	}
	if c.PrevResult != nil {
		raw, _ := json.Marshal(c.PrevResult)
		return nil, unsupported("prevResult", raw, "podnet-cni creates the container's interface: it must be the first plugin of a chain")
	}
	if err := podnet.ValidateLinkName(args.IfName); err != nil {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_IFNAME: "+err.Error(), "")
	}
	host, release, err := p.host()
	if err != nil {
		return nil, internal("open the host namespace", err)
	}
	defer release()
	res, err := add(ctx, host, c, args)
	if err != nil {
		return nil, err
	}
	return res.GetAsVersion(c.CNIVersion)
}

func add(ctx context.Context, host *podnet.Namespace, c *NetConf, args *skel.CmdArgs) (_ *current.Result, err error) {
	// Three things go on at once, as each mostly waits: the addresses
	// come from the stores (the disk), the container's namespace is opened
	// and checked, and this goroutine sets up the network on the host.
	owner := ownerKey(args.ContainerID, args.IfName)
	allocCh := make(chan allocated, 1)
	go func() { allocCh <- allocate(c, owner) }()
	cnsCh := make(chan opened, 1)
	go func() { cnsCh <- openContainer(args) }()
	alloc := sync.OnceValue(func() allocated { return <-allocCh })
	container := sync.OnceValue(func() opened { return <-cnsCh })
	var undo []func() error
	defer func() {
		if o := container(); o.ns != nil {
			defer o.ns.Close()
		}
		a := alloc()
		defer a.ps.close()
		if err != nil && a.err == nil {
			undo = append([]func() error{a.release}, undo...)
		}
		if err != nil {
			var errs []error
			for i := len(undo) - 1; i >= 0; i-- {
				errs = append(errs, undo[i]())
			}
			err = withUndo(err, errors.Join(errs...))
		}
	}()

	// The gateways on the bridge are those of the ranges the addresses
	// come from: known now if every range set has one range.
	gws, known := c.gatewaysOf(nil)
	if !known {
		a := alloc()
		if a.err != nil {
			return nil, a.err
		}
		gws, _ = c.gatewaysOf(a.allocs)
	}
	br, err := setupNetwork(ctx, host, c, gws)
	if err != nil {
		return nil, err
	}
	cns := container()
	if cns.err != nil {
		return nil, cns.err
	}

	// Created before the addresses are known, if they are not yet: their
	// store may still be waiting for the disk.
	hostName := hostVethName(c.Name, args.ContainerID, args.IfName)
	hostMAC := randomMAC()
	spec := podnet.NewVethPair(hostName).In(host).Master(br).Label(vethLabel(hostName)).MAC(hostMAC).
		Peer(args.IfName, cns.ns).MTU(c.MTU).IPv6(c.hasIPv6())
	if c.MAC != nil {
		spec.PeerMAC(c.MAC)
	}
	if c.HairpinMode {
		spec.Hairpin(true)
	}
	v, err := spec.Create(ctx)
	if errors.Is(err, podnet.ErrExists) {
		return nil, types.NewError(CodeAttached, fmt.Sprintf("container %s interface %s: its veth pair exists", args.ContainerID, args.IfName), err.Error())
	}
	if err != nil {
		return nil, internal("create the veth pair", err)
	}
	undo = append(undo, v.Close)

	a := alloc()
	if a.err != nil {
		return nil, a.err
	}
	allocs := a.allocs
	for _, a := range allocs {
		if err := v.AddPeerAddress(ctx, a.prefix()); err != nil {
			return nil, internal("address the container's interface", err)
		}
	}

	resRoutes, routes := c.routes(allocs, args.IfName)
	for _, r := range routes {
		if err := addRoute(ctx, cns.ns, r); err != nil {
			return nil, internal(fmt.Sprintf("add route %v in the container", r), err)
		}
	}

	result := &current.Result{CNIVersion: current.ImplementedSpecVersion, Routes: resRoutes, DNS: c.DNS}
	brMAC, err := br.MAC(ctx)
	if err != nil {
		return nil, internal("read the bridge", err)
	}
	result.Interfaces = []*current.Interface{
		ifBridge:    {Name: br.Name(), Mac: brMAC.String()},
		ifHost:      {Name: v.Name(), Mac: hostMAC.String()},
		ifContainer: {Name: args.IfName, Mac: v.PeerMAC().String(), Sandbox: args.Netns},
	}
	for _, a := range allocs {
		result.IPs = append(result.IPs, &current.IPConfig{
			Interface: current.Int(ifContainer),
			Address:   *ipNet(a.prefix()),
			Gateway:   a.r.Gateway.AsSlice(),
		})
	}
	// Last, as nothing may fail after it: the rollback's v.Close deletes
	// the pair only while it still carries podnet's mark.
	dev := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: v.Index()}}
	if err := host.Handle().LinkSetAlias(dev, vethAlias(c.Name, args.ContainerID, args.IfName)); err != nil {
		return nil, internal("mark the host end of the veth pair", err)
	}
	return result, nil
}

// hasIPv6 reports whether c has an IPv6 range.
func (c *NetConf) hasIPv6() bool {
	for _, s := range c.subnets() {
		if s.Addr().Is6() {
			return true
		}
	}
	return false
}

// opened is the container's namespace, or why it could not be used.
type opened struct {
	ns  *podnet.Namespace
	err error
}

// openContainer opens the container's namespace and checks that it has
// no interface args.IfName: the spec requires an error if it has, and a
// second ADD must not undo the first, so this comes before any change in
// the container.
func openContainer(args *skel.CmdArgs) opened {
	ns, err := podnet.OpenNamespace(args.Netns)
	if err != nil {
		return opened{err: netnsError(args.Netns, err)}
	}
	if _, err := ns.Handle().LinkByName(args.IfName); err == nil {
		return opened{ns: ns, err: types.NewError(CodeAttached, fmt.Sprintf("interface %q already exists in %s", args.IfName, args.Netns), "")}
	}
	return opened{ns: ns}
}

// allocated is what allocate got: the open stores and an address per
// range set, or the error that stopped it (with nothing left allocated).
type allocated struct {
	ps     pools
	allocs []allocation
	err    error
}

// release gives the addresses back.
func (a *allocated) release() error {
	var errs []error
	for _, al := range a.allocs {
		errs = append(errs, al.pool.Release(al.addr))
	}
	return errors.Join(errs...)
}

// allocate opens the stores of c and allocates owner an address from
// every range set: the requested one if there is one for the set (which
// moves the set's round-robin position to it, as in host-local), else one
// from its first range with a free address. An owner that holds addresses
// already is attached already: an error.
func allocate(c *NetConf, owner string) (res allocated) {
	ps, err := openPools(c)
	if err != nil {
		return allocated{err: err}
	}
	res.ps = ps
	defer func() {
		if res.err != nil {
			res.err = withUndo(res.err, res.release())
			res.allocs = nil
		}
	}()
	var held []netip.Addr
	ps.each(c, func(_ Range, p *ipam.Pool) { held = append(held, p.Lookup(owner)...) })
	if len(held) > 0 {
		id, ifname, _ := strings.Cut(owner, "/")
		res.err = types.NewError(CodeAttached, fmt.Sprintf("container %s interface %s is already attached to network %s", id, ifname, c.Name),
			fmt.Sprintf("it holds %v", held))
		return res
	}
	for i, set := range c.RangeSets {
		if want, r, ok := c.requestedIn(i); ok {
			pool := ps[i][slices.Index(set, r)]
			if err := pool.AllocateAddrFor(owner, want, ipam.Advance()); err != nil {
				if errors.Is(err, ipam.ErrDuplicate) {
					holder, _ := pool.Owner(want)
					res.err = types.NewError(types.ErrInternal, fmt.Sprintf("requested address %s is taken", want), "held by "+holder)
				} else {
					res.err = storeError(fmt.Sprintf("allocate %s from range %s", want, r), err)
				}
				return res
			}
			res.allocs = append(res.allocs, allocation{r: r, addr: want, pool: pool})
			c.setLast(i, want)
			continue
		}
		var got *allocation
		if len(set) == 1 {
			// The pool's own round-robin position is the set's.
			a, err := ps[i][0].AllocateFor(owner)
			if err != nil && !errors.Is(err, ipam.ErrExhausted) {
				res.err = storeError(fmt.Sprintf("allocate from range %s", set[0]), err)
				return res
			}
			if err == nil {
				got = &allocation{r: set[0], addr: a, pool: ps[i][0]}
			}
		} else {
			var err error
			if got, err = c.allocateInSet(i, ps[i], owner); err != nil {
				res.err = err
				return res
			}
		}
		if got == nil {
			var rs []string
			for _, r := range set {
				rs = append(rs, r.String())
			}
			res.err = types.NewError(types.ErrInternal, fmt.Sprintf("no free address in range set %d (%s)", i, strings.Join(rs, ", ")), "")
			return res
		}
		res.allocs = append(res.allocs, *got)
	}
	return res
}

// allocateInSet allocates owner an address from range set i, of several
// ranges, as host-local does: the set is walked as one range, from the
// address after the last one the set handed out to the end of that
// address's range, then each following range from its start, wrapping
// around to the ranges before it and last to the start of the first
// range. Without a last address (or with one no longer in the set) the
// walk starts at the first range. It returns nil if the set is full.
func (c *NetConf) allocateInSet(i int, pools []*ipam.Pool, owner string) (*allocation, error) {
	set := c.RangeSets[i]
	type step struct {
		j    int
		from netip.Addr
	}
	var steps []step
	k := -1
	if last, ok := c.last(i); ok {
		k = slices.IndexFunc(set, func(r Range) bool { return r.Contains(last) })
		if k >= 0 && last != set[k].End {
			steps = append(steps, step{k, last.Next()})
		}
	}
	for n := range len(set) {
		j := (max(k, 0) + 1 + n) % len(set)
		if k < 0 {
			j = n
		}
		steps = append(steps, step{j, set[j].Start})
	}
	for _, st := range steps {
		a, err := pools[st.j].AllocateFromFor(owner, st.from)
		if errors.Is(err, ipam.ErrExhausted) {
			continue
		}
		if err != nil {
			return nil, storeError(fmt.Sprintf("allocate from range %s", set[st.j]), err)
		}
		c.setLast(i, a)
		return &allocation{r: set[st.j], addr: a, pool: pools[st.j]}, nil
	}
	return nil, nil
}

// lastFile keeps the last address range set i handed out, for a set of
// several ranges (a single range's store keeps its own).
func (c *NetConf) lastFile(i int) string {
	return filepath.Join(c.networkDir(), fmt.Sprintf("last-reserved.%d", i))
}

// last reads the last address range set i handed out.
func (c *NetConf) last(i int) (netip.Addr, bool) {
	b, err := os.ReadFile(c.lastFile(i))
	if err != nil {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(strings.TrimSpace(string(b)))
	return a, err == nil
}

// setLast records a as the last address range set i handed out, if the
// set has several ranges. It is not synced: losing it only moves where
// the next walk of the set starts, as in host-local.
func (c *NetConf) setLast(i int, a netip.Addr) {
	if len(c.RangeSets[i]) < 2 {
		return
	}
	tmp := c.lastFile(i) + ".tmp"
	if err := os.WriteFile(tmp, []byte(a.String()+"\n"), 0o600); err == nil {
		_ = os.Rename(tmp, c.lastFile(i))
	}
}

// gatewaysOf returns the gateway addresses the bridge gets (isGateway):
// the gateway of the range each address comes from. Given no
// allocations, it answers only if every range set has one range, and says
// whether it could.
func (c *NetConf) gatewaysOf(allocs []allocation) (gws []netip.Prefix, known bool) {
	if !c.IsGateway {
		return nil, true
	}
	var rs []Range
	if allocs != nil {
		for _, a := range allocs {
			rs = append(rs, a.r)
		}
	} else {
		for _, set := range c.RangeSets {
			if len(set) != 1 {
				return nil, false
			}
			rs = append(rs, set[0])
		}
	}
	for _, r := range rs {
		if gw := netip.PrefixFrom(r.Gateway, r.Subnet.Bits()); !slices.Contains(gws, gw) {
			gws = append(gws, gw)
		}
	}
	return gws, true
}

// addRoute installs r in the container. If the container has a route to
// the destination with the same metric already, through another
// attachment, r is added beside it (without NLM_F_EXCL), as the reference
// plugin does: an IPv4 route goes first, an IPv6 one becomes a next hop
// of a multipath route.
//
// Equivalent to: `ip route add DST via GW dev IFNAME metric M`, falling back
// to the same without NLM_F_EXCL.
func addRoute(ctx context.Context, cns *podnet.Namespace, r podnet.Route) error {
	err := cns.AddRoute(ctx, r)
	if !errors.Is(err, podnet.ErrExists) {
		return err
	}
	l, lerr := cns.Handle().LinkByName(r.Dev)
	if lerr != nil {
		return errors.Join(err, lerr)
	}
	nr := &netlink.Route{Dst: ipNet(r.Dst), LinkIndex: l.Attrs().Index, Priority: r.Metric, Table: r.Table}
	if r.Gateway.IsValid() {
		nr.Gw = r.Gateway.AsSlice()
	}
	return cns.Handle().RouteAddEcmp(nr)
}

// setupNetwork makes sure of what the attachments of the network share:
// the bridge with the gateway addresses (isGateway), forwarding
// (isGateway) and the masquerade rules (ipMasq, see masq.go). It holds the
// network's lock meanwhile.
//
// The bridge is created if missing, with a fixed MAC address (so that it
// does not change as ports come and go), and never deleted: like the
// reference plugin's, it outlives the attachments. An existing bridge is
// used as it is, apart from the gateway addresses.
func setupNetwork(ctx context.Context, host *podnet.Namespace, c *NetConf, gws []netip.Prefix) (*podnet.Bridge, error) {
	unlock, err := lockNetwork(c)
	if err != nil {
		return nil, types.NewError(types.ErrIOFailure, "lock the network", err.Error())
	}
	defer unlock()

	br, err := podnet.NewBridge(c.Bridge).In(host).Adopt().MTU(c.MTU).MAC(randomMAC()).Address(gws...).Create(ctx)
	if err != nil {
		return nil, internal(fmt.Sprintf("set up bridge %s", c.Bridge), err)
	}
	if br.Owned() {
		dev := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: br.Index()}}
		if err := host.Handle().LinkSetAlias(dev, bridgeAlias(c.Name)); err != nil {
			return nil, internal(fmt.Sprintf("mark bridge %s", c.Bridge), errors.Join(err, br.Close()))
		}
	}
	if err := ensureHostSetup(ctx, host, c); err != nil {
		return nil, err
	}
	return br, nil
}

// routes returns the routes of an attachment: for the result (as given,
// a route without gateway using the address's) and for the kernel (with
// the gateway filled in). isDefaultGateway adds a default route per family
// via the gateway unless ipam.routes has one with a gateway already, as in
// the reference plugin.
func (c *NetConf) routes(allocs []allocation, ifname string) ([]*types.Route, []podnet.Route) {
	var v4gw, v6gw netip.Addr
	for _, a := range allocs {
		if a.addr.Is4() && !v4gw.IsValid() {
			v4gw = a.r.Gateway
		}
		if a.addr.Is6() && !v6gw.IsValid() {
			v6gw = a.r.Gateway
		}
	}
	all := slices.Clone(c.Routes)
	if c.IsDefaultGateway {
		for _, gw := range []netip.Addr{v4gw, v6gw} {
			if !gw.IsValid() {
				continue
			}
			def := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
			if gw.Is6() {
				def = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
			}
			found := false
			for _, r := range all {
				found = found || r.Dst == def && r.GW.IsValid()
			}
			if !found {
				all = append(all, Route{Dst: def, GW: gw})
			}
		}
	}
	var res []*types.Route
	var kernel []podnet.Route
	for _, r := range all {
		tr := &types.Route{Dst: *ipNet(r.Dst), Priority: r.Priority}
		if r.GW.IsValid() {
			tr.GW = r.GW.AsSlice()
		}
		if r.Table != 0 {
			tr.Table = &r.Table
		}
		res = append(res, tr)
		kr := c.kernelRoute(r, ifname, v4gw, v6gw)
		if !slices.Contains(kernel, kr) {
			kernel = append(kernel, kr)
		}
	}
	return res, kernel
}

// kernelRoute is r as installed in the container: via r's gateway, or the
// attachment's gateway of r's family, or straight out of the interface.
func (c *NetConf) kernelRoute(r Route, ifname string, v4gw, v6gw netip.Addr) podnet.Route {
	gw := r.GW
	if !gw.IsValid() {
		gw = v6gw
		if r.Dst.Addr().Is4() {
			gw = v4gw
		}
	}
	return podnet.Route{Dst: r.Dst, Gateway: gw, Dev: ifname, Metric: r.Priority, Table: r.Table}
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// randomMAC returns a random locally administered unicast MAC address.
func randomMAC() net.HardwareAddr {
	mac := make(net.HardwareAddr, 6)
	_, _ = rand.Read(mac)
	mac[0] = mac[0]&0xfe | 0x02
	return mac
}
