package podnet

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/podnet/podnet/ipam"
	"github.com/vishvananda/netlink"
)

// NetworkSpec describes a Network: a bridge, one address pool per subnet
// (IPv4, IPv6 or both), the gateway addresses on the bridge, and optionally
// masquerading for traffic that leaves the subnets. Its setters cannot
// fail; Create validates and reports every problem.
type NetworkSpec struct {
	bridge     string
	subnets    []netip.Prefix
	in         *Namespace
	mtu        int
	masq       bool
	store      string
	label      string
	poolOpts   map[netip.Prefix][]ipam.Option
	hairpin    bool
	isolated   bool
	forwarding bool
}

// NewNetwork describes a network on a bridge named bridge with the given
// subnets (at most one IPv4 and one IPv6). Each subnet's gateway (its first
// usable address unless PoolOptions says otherwise) goes on the bridge;
// attached namespaces get addresses from the rest.
func NewNetwork(bridge string, subnets ...netip.Prefix) *NetworkSpec {
	return &NetworkSpec{bridge: bridge, subnets: subnets, poolOpts: map[netip.Prefix][]ipam.Option{}}
}

// In places the network's bridge (and its NAT rules) in ns instead of the
// calling process's namespace.
func (s *NetworkSpec) In(ns *Namespace) *NetworkSpec { s.in = ns; return s }

// MTU sets the MTU of the bridge and of every attachment.
func (s *NetworkSpec) MTU(mtu int) *NetworkSpec { s.mtu = mtu; return s }

// Masquerade source-NATs traffic from the network's subnets that leaves
// through any interface other than the bridge, and turns forwarding on in
// the bridge's namespace (restored on Close).
func (s *NetworkSpec) Masquerade() *NetworkSpec { s.masq = true; s.forwarding = true; return s }

// Forwarding turns IP forwarding on in the bridge's namespace for the
// network's families (restored on Close) without masquerading.
func (s *NetworkSpec) Forwarding() *NetworkSpec { s.forwarding = true; return s }

// Store keeps the address pools in dir (one subdirectory per subnet), so
// that allocations survive the process and are shared with other
// processes using the same directory. Without it, pools live in memory.
func (s *NetworkSpec) Store(dir string) *NetworkSpec { s.store = dir; return s }

// Label sets the label recorded in the ownership marks of the network's
// objects; it defaults to the bridge name.
func (s *NetworkSpec) Label(label string) *NetworkSpec { s.label = label; return s }

// PoolOptions passes options (range, exclusions, gateway) to the pool of
// subnet. Later calls for the same subnet add to earlier ones.
func (s *NetworkSpec) PoolOptions(subnet netip.Prefix, opts ...ipam.Option) *NetworkSpec {
	s.poolOpts[subnet] = append(s.poolOpts[subnet], opts...)
	return s
}

// Hairpin turns on hairpin mode on every attachment's bridge port.
func (s *NetworkSpec) Hairpin(on bool) *NetworkSpec { s.hairpin = on; return s }

// IsolatePorts makes the attachments unable to talk to each other directly
// (bridge port isolation); they still reach the gateway.
func (s *NetworkSpec) IsolatePorts(on bool) *NetworkSpec { s.isolated = on; return s }

func (s *NetworkSpec) validate() error {
	var errs []error
	errs = append(errs, ValidateLinkName(s.bridge), validateMTU(s.mtu), validateObjectLabel(s.label))
	var v4, v6 int
	for _, p := range s.subnets {
		switch {
		case !p.IsValid():
			errs = append(errs, invalid(ErrInvalidAddress, "subnet %v is not a valid prefix", p))
			continue
		case p.Masked() != p:
			errs = append(errs, invalid(ErrInvalidAddress, "subnet %v has host bits set (did you mean %v?)", p, p.Masked()))
			continue
		case p.Addr().Is4In6():
			errs = append(errs, invalid(ErrInvalidAddress, "subnet %v is IPv4-mapped; give it as IPv4", p))
			continue
		case p.Addr().Is4():
			v4++
		default:
			v6++
		}
	}
	if len(s.subnets) == 0 {
		errs = append(errs, invalid(ErrInvalidAddress, "network %q has no subnet", s.bridge))
	}
	if v4 > 1 || v6 > 1 {
		errs = append(errs, invalid(ErrInvalidAddress, "network %q has more than one subnet of a family", s.bridge))
	}
	for p := range s.poolOpts {
		found := false
		for _, q := range s.subnets {
			found = found || p == q
		}
		if !found {
			errs = append(errs, invalid(ErrInvalidOption, "pool options for %v, which is not a subnet of network %q", p, s.bridge))
		}
	}
	return errors.Join(errs...)
}

// Network is a bridge with address pools, gateways and NAT, created and
// closed as one object. Attach onboards namespaces; it is safe for
// concurrent use.
type Network struct {
	name  string
	label string
	ns    *Namespace
	br    *Bridge
	pools []*ipam.Pool
	gws   []netip.Prefix // gateway address/prefix-length on the bridge, per pool
	mtu   int
	group uint32
	port  PortOptions
	undo  []func() error // NAT and forwarding, in creation order

	natMu    sync.Mutex
	firewall *BridgeFirewall
	masq     bool

	mu       sync.Mutex
	attached map[*Attachment]struct{}
	closed   atomic.Bool
}

// Create builds the network: the pools, the bridge with the gateway
// addresses, forwarding and masquerading. On failure it removes what it
// made. The caller must Close the Network.
func (s *NetworkSpec) Create(ctx context.Context) (*Network, error) {
	nw, err := s.create(ctx)
	return nw, opErr("create", "network", s.bridge, err)
}

func (s *NetworkSpec) create(ctx context.Context) (nw *Network, err error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	ns, err := resolveNS(s.in)
	if err != nil {
		return nil, err
	}
	label := s.label
	if label == "" {
		label = s.bridge
	}
	nw = &Network{name: s.bridge, label: label, ns: ns, mtu: s.mtu, group: newGroup(), attached: map[*Attachment]struct{}{}}
	if s.hairpin {
		nw.port.Hairpin = &s.hairpin
	}
	if s.isolated {
		nw.port.Isolated = &s.isolated
	}
	defer func() {
		if err != nil {
			nw.closed.Store(true)
			err = errors.Join(err, nw.teardown())
			nw = nil
		}
	}()
	var bridgeAddrs []netip.Prefix
	for _, sub := range s.subnets {
		var p *ipam.Pool
		if s.store != "" {
			dir := filepath.Join(s.store, storeDirName(sub))
			p, err = ipam.Open(dir, sub, s.poolOpts[sub]...)
		} else {
			p, err = ipam.New(sub, s.poolOpts[sub]...)
		}
		if err != nil {
			return nw, err
		}
		nw.pools = append(nw.pools, p)
		gw, ok := p.Gateway()
		gwp := netip.Prefix{}
		if ok {
			gwp = netip.PrefixFrom(gw, sub.Bits())
			bridgeAddrs = append(bridgeAddrs, gwp)
		}
		nw.gws = append(nw.gws, gwp)
	}
	if err := ctx.Err(); err != nil {
		return nw, err
	}
	nw.br, err = NewBridge(s.bridge).In(ns).Address(bridgeAddrs...).MTU(s.mtu).Label(label).Create(ctx)
	if err != nil {
		return nw, err
	}
	if err := faultPoint("network:bridge"); err != nil {
		return nw, err
	}
	if err := nw.setupNAT(ctx, s); err != nil {
		return nw, err
	}
	return nw, faultPoint("network:nat")
}

// storeDirName turns a subnet into a directory name: 10.0.0.0/24 becomes
// 10.0.0.0-24, fd00::/64 becomes fd00..-64.
func storeDirName(p netip.Prefix) string {
	b := []byte(p.String())
	for i, c := range b {
		switch c {
		case '/':
			b[i] = '-'
		case ':':
			b[i] = '.'
		}
	}
	return string(b)
}

// newGroup picks a random interface group for a network's links, so that
// its attachments can be deleted in one request.
func newGroup() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint32(b[:])&0x3fffffff | 0x40000000
}

// Name returns the network's bridge name.
func (nw *Network) Name() string { return nw.name }

// Bridge returns the network's bridge.
func (nw *Network) Bridge() *Bridge { return nw.br }

// Namespace returns the namespace the bridge lives in.
func (nw *Network) Namespace() *Namespace { return nw.ns }

// Pools returns the network's address pools, one per subnet.
func (nw *Network) Pools() []*ipam.Pool { return nw.pools }

// Gateways returns the gateway addresses on the bridge.
func (nw *Network) Gateways() []netip.Addr {
	var out []netip.Addr
	for _, g := range nw.gws {
		if g.IsValid() {
			out = append(out, g.Addr())
		}
	}
	return out
}

// Subnets returns the network's subnets.
func (nw *Network) Subnets() []netip.Prefix {
	out := make([]netip.Prefix, len(nw.pools))
	for i, p := range nw.pools {
		out[i] = p.Prefix()
	}
	return out
}

// AttachOption configures Network.Attach.
type AttachOption func(*attachOptions)

type attachOptions struct {
	ifname   string
	hostName string
	addrs    []netip.Addr
	routes   []Route
	owner    string
	noGW     bool
	mtu      int
}

// IfName names the interface inside the namespace (default "eth0").
func IfName(name string) AttachOption { return func(o *attachOptions) { o.ifname = name } }

// HostIfName names the host end of the veth pair (default: generated).
func HostIfName(name string) AttachOption { return func(o *attachOptions) { o.hostName = name } }

// WithAddress requests specific addresses instead of the pools' next free
// ones: at most one per subnet; subnets without one get the next free.
func WithAddress(addrs ...netip.Addr) AttachOption {
	return func(o *attachOptions) { o.addrs = append(o.addrs, addrs...) }
}

// WithRoute adds routes inside the namespace besides the default routes.
func WithRoute(routes ...Route) AttachOption {
	return func(o *attachOptions) { o.routes = append(o.routes, routes...) }
}

// WithOwner sets the key the addresses are allocated under, such as a
// container ID and interface name. Default: podnet's ownership mark for
// this process and attachment, which lets a sweep find addresses of dead
// processes.
func WithOwner(key string) AttachOption { return func(o *attachOptions) { o.owner = key } }

// NoDefaultRoute skips the default routes via the gateways.
func NoDefaultRoute() AttachOption { return func(o *attachOptions) { o.noGW = true } }

// AttachMTU overrides the network's MTU for this attachment.
func AttachMTU(mtu int) AttachOption { return func(o *attachOptions) { o.mtu = mtu } }

// Attachment is a namespace onboarded onto a Network: a veth pair whose
// peer is inside the namespace, addresses from the pools, and routes.
// Close offboards it.
type Attachment struct {
	nw     *Network
	ns     *Namespace
	veth   *VethPair
	ifname string
	addrs  []netip.Prefix
	routes []Route
	owner  string
	closed atomic.Bool
}

// Attach onboards ns onto the network: it allocates an address from each
// pool (or takes the requested ones), creates a veth pair with the peer
// directly inside ns and the host end on the bridge, adds the addresses,
// default routes via the gateways and any extra routes. On failure it
// removes what it made and releases the addresses. Safe for concurrent use.
//
// Equivalent to what a CNI bridge plugin with host-local IPAM does on ADD.
func (nw *Network) Attach(ctx context.Context, ns *Namespace, opts ...AttachOption) (*Attachment, error) {
	a, err := nw.attach(ctx, ns, opts)
	return a, opErr("attach to", "network", nw.name, err)
}

func (nw *Network) attach(ctx context.Context, ns *Namespace, opts []AttachOption) (a *Attachment, err error) {
	o := attachOptions{ifname: "eth0", mtu: nw.mtu}
	for _, f := range opts {
		f(&o)
	}
	if nw.closed.Load() {
		return nil, ErrClosed
	}
	if ns == nil {
		return nil, invalid(ErrInvalidOption, "attach needs a namespace")
	}
	var errs []error
	errs = append(errs, ValidateLinkName(o.ifname), validateMTU(o.mtu))
	if o.hostName != "" {
		errs = append(errs, ValidateLinkName(o.hostName))
	}
	want := make([]netip.Addr, len(nw.pools))
	for _, addr := range o.addrs {
		found := false
		for i, p := range nw.pools {
			if p.Prefix().Contains(addr) {
				if want[i].IsValid() {
					errs = append(errs, invalid(ErrInvalidAddress, "two addresses requested in subnet %v", p.Prefix()))
				}
				want[i], found = addr, true
			}
		}
		if !found {
			errs = append(errs, invalid(ErrInvalidAddress, "requested address %v is in none of the network's subnets %v", addr, nw.Subnets()))
		}
	}
	for _, r := range o.routes {
		errs = append(errs, r.validate())
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	hostName := o.hostName
	if hostName == "" {
		hostName = genName("pn")
	}
	a = &Attachment{nw: nw, ns: ns, ifname: o.ifname, owner: o.owner}
	if a.owner == "" {
		a.owner = selfMark(nw.label + "/" + hostName)
	}
	defer func() {
		if err != nil {
			a.closed.Store(true)
			err = errors.Join(err, a.undo())
			a = nil
		}
	}()
	for i, p := range nw.pools {
		var addr netip.Addr
		if want[i].IsValid() {
			addr = want[i]
			err = p.AllocateAddrFor(a.owner, addr)
		} else {
			addr, err = p.AllocateFor(a.owner)
		}
		if err != nil {
			return a, err
		}
		a.addrs = append(a.addrs, netip.PrefixFrom(addr, p.Prefix().Bits()))
	}
	if err := faultPoint("attach:allocated"); err != nil {
		return a, err
	}
	vs := NewVethPair(hostName).In(nw.ns).Master(nw.br).Peer(o.ifname, ns).PeerAddress(a.addrs...).
		MTU(o.mtu).Group(nw.group).Label(nw.label)
	if nw.port.Hairpin != nil {
		vs.Hairpin(*nw.port.Hairpin)
	}
	if nw.port.Isolated != nil {
		vs.Isolated(*nw.port.Isolated)
	}
	a.veth, err = vs.Create(ctx)
	if err != nil {
		return a, err
	}
	if err := faultPoint("attach:veth"); err != nil {
		return a, err
	}
	if !o.noGW {
		for _, g := range nw.gws {
			if g.IsValid() {
				a.routes = append(a.routes, Route{Gateway: g.Addr(), Dev: o.ifname})
			}
		}
	}
	a.routes = append(a.routes, o.routes...)
	for _, r := range a.routes {
		if r.Dev == o.ifname {
			err = ns.addRouteOnLink(ctx, r, a.veth.peerIndex)
		} else {
			err = ns.AddRoute(ctx, r)
		}
		if err != nil {
			return a, err
		}
	}
	if err := faultPoint("attach:routes"); err != nil {
		return a, err
	}
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if nw.closed.Load() {
		return a, ErrClosed
	}
	nw.attached[a] = struct{}{}
	return a, nil
}

// Namespace returns the attached namespace.
func (a *Attachment) Namespace() *Namespace { return a.ns }

// Network returns the network the attachment belongs to.
func (a *Attachment) Network() *Network { return a.nw }

// Interface returns the interface name inside the namespace.
func (a *Attachment) Interface() string { return a.ifname }

// HostInterface returns the name of the veth end on the bridge.
func (a *Attachment) HostInterface() string { return a.veth.Name() }

// MAC returns the hardware address of the interface inside the namespace.
func (a *Attachment) MAC() net.HardwareAddr { return a.veth.PeerMAC() }

// Addresses returns the interface's addresses (with prefix lengths).
func (a *Attachment) Addresses() []netip.Prefix { return a.addrs }

// Addr returns the attachment's first address of the given family (4 or 6).
func (a *Attachment) Addr(family int) (netip.Addr, bool) {
	for _, p := range a.addrs {
		if bitsFamily(p.Addr()) == family {
			return p.Addr(), true
		}
	}
	return netip.Addr{}, false
}

// Routes returns the routes Attach installed in the namespace.
func (a *Attachment) Routes() []Route { return a.routes }

// Owner returns the key the addresses are allocated under.
func (a *Attachment) Owner() string { return a.owner }

// Close offboards the namespace: it deletes the veth pair (the interface
// inside the namespace goes with it) and releases the addresses to the
// pools. It is idempotent, and succeeds when the namespace is already gone.
//
// Equivalent to what a CNI bridge plugin with host-local IPAM does on DEL.
func (a *Attachment) Close() error {
	if a.closed.Swap(true) {
		return nil
	}
	a.nw.mu.Lock()
	delete(a.nw.attached, a)
	a.nw.mu.Unlock()
	return opErr("detach from", "network", a.nw.name, a.undo())
}

func (a *Attachment) undo() error {
	var errs []error
	if a.veth != nil {
		errs = append(errs, a.veth.Close())
		crashPoint("attach:teardown:veth")
	}
	errs = append(errs, a.release())
	return errors.Join(errs...)
}

func (a *Attachment) release() error {
	var errs []error
	for _, p := range a.nw.pools {
		if _, err := p.ReleaseOwner(a.owner); err != nil && !errors.Is(err, ipam.ErrNotAllocated) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Attachments returns the network's open attachments.
func (nw *Network) Attachments() []*Attachment {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	out := make([]*Attachment, 0, len(nw.attached))
	for a := range nw.attached {
		out = append(out, a)
	}
	return out
}

// Close offboards every attachment still open (their links deleted in one
// batch), removes NAT rules, restores forwarding, deletes the bridge and
// closes the pools. It runs every step and returns every error joined. It
// is idempotent.
func (nw *Network) Close() error {
	if nw.closed.Swap(true) {
		return nil
	}
	return opErr("close", "network", nw.name, nw.teardown())
}

// DetachAll offboards every open attachment: their links are deleted in
// one batch and their addresses released. The network stays up.
func (nw *Network) DetachAll() error {
	nw.mu.Lock()
	attached := nw.attached
	nw.attached = map[*Attachment]struct{}{}
	nw.mu.Unlock()
	if len(attached) == 0 {
		return nil
	}
	return opErr("detach all from", "network", nw.name, nw.detachAll(attached, false))
}

func (nw *Network) teardown() error {
	var errs []error
	nw.mu.Lock()
	attached := nw.attached
	nw.attached = map[*Attachment]struct{}{}
	nw.mu.Unlock()
	crashPoint("network:teardown")
	nw.natMu.Lock()
	undo := nw.undo
	nw.undo, nw.firewall = nil, nil
	nw.natMu.Unlock()
	for i := len(undo) - 1; i >= 0; i-- {
		errs = append(errs, undo[i]())
		crashPoint("network:teardown:nat")
	}
	// The bridge joins its ports' group, so that one request deletes it
	// with all of them: the kernel then pays its unregister waits once.
	withBridge := nw.br != nil && nw.br.owned && !nw.br.closed.Load() &&
		nw.ns.h.LinkSetGroup(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: nw.br.index}}, int(nw.group)) == nil
	errs = append(errs, nw.detachAll(attached, withBridge))
	crashPoint("network:teardown:links")
	if nw.br != nil {
		errs = append(errs, nw.br.Close())
	}
	crashPoint("network:teardown:bridge")
	for _, p := range nw.pools {
		errs = append(errs, p.Close())
	}
	return errors.Join(errs...)
}

// detachAll deletes the links of many attachments at once. It uses one
// group delete when every link in the network's group is one of ours, and
// falls back to one delete per link otherwise (never deleting a foreign
// link that happens to share the group number).
func (nw *Network) detachAll(attached map[*Attachment]struct{}, withBridge bool) error {
	var errs []error
	ours := map[string]bool{}
	if withBridge {
		ours[nw.br.name] = true
	}
	for a := range attached {
		a.closed.Store(true)
		if a.veth != nil {
			ours[a.veth.name] = true
		}
	}
	bulk := false
	if links, err := nw.ns.Links(context.Background()); err == nil {
		bulk = true
		for _, l := range links {
			if l.Attrs().Group == nw.group && !ours[l.Attrs().Name] {
				bulk = false
				break
			}
		}
	}
	if bulk {
		// On failure, fall back to deleting one by one below.
		bulk = nw.ns.DeleteLinkGroup(context.Background(), nw.group) == nil
		if bulk && withBridge {
			nw.br.closed.Store(true)
		}
	}
	for a := range attached {
		if a.veth != nil {
			if bulk {
				a.veth.closed.Store(true)
			} else {
				errs = append(errs, a.veth.Close())
			}
		}
		errs = append(errs, a.release())
		crashPoint("network:teardown:release")
	}
	return errors.Join(errs...)
}
