package podnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync/atomic"
)

// TopologySpec describes a whole lab: networks (bridges with pools and
// NAT), hosts attached to them, routers between them, and an "internet"
// uplink. Its setters never fail: problems are collected and Create reports
// all of them before building anything.
//
//	lab, err := podnet.Topology().
//		Network("lan", "192.168.52.0/24").Masquerade().
//		Host("orange", "lan").
//		Host("purple", "lan").
//		Create(ctx)
type TopologySpec struct {
	in       *Namespace
	prefix   string
	named    bool
	label    string
	nets     []*topoNet
	nodes    []*topoNode
	internet *topoInternet
	store    string
	errs     []error
}

type topoNet struct {
	name    string
	subnets []string
	masq    bool
	mtu     int
}

type topoNode struct {
	name   string
	nets   []string
	router bool
}

type topoInternet struct {
	name   string
	subnet string
}

// Topology starts an empty lab description.
func Topology() *TopologySpec { return &TopologySpec{} }

// In builds the lab's bridges, NAT and uplink in ns (the lab's "host")
// instead of the calling process's namespace. Tests pass a sandbox.
func (t *TopologySpec) In(ns *Namespace) *TopologySpec { t.in = ns; return t }

// Named gives the lab's namespaces names under /run/netns (prefix + node
// name), so that `ip netns` shows them. By default they are anonymous.
func (t *TopologySpec) Named(prefix string) *TopologySpec {
	t.named, t.prefix = true, prefix
	return t
}

// Store keeps the networks' address pools in dir (a subdirectory per
// network), so that allocations are durable and a sweep can release those
// of a process that died.
func (t *TopologySpec) Store(dir string) *TopologySpec { t.store = dir; return t }

// Label sets the label of the lab's ownership marks.
func (t *TopologySpec) Label(label string) *TopologySpec { t.label = label; return t }

// Network adds a network: a bridge named name with the given subnets (at
// most one IPv4 and one IPv6, as CIDR strings). Masquerade and MTU that
// follow apply to it.
func (t *TopologySpec) Network(name string, subnets ...string) *TopologySpec {
	t.nets = append(t.nets, &topoNet{name: name, subnets: subnets})
	return t
}

func (t *TopologySpec) lastNet(what string) *topoNet {
	if len(t.nets) == 0 {
		t.errs = append(t.errs, invalid(ErrInvalidOption, "%s before any Network", what))
		return &topoNet{}
	}
	return t.nets[len(t.nets)-1]
}

// Masquerade masquerades the last network's traffic leaving the lab's
// host, and turns forwarding on there.
func (t *TopologySpec) Masquerade() *TopologySpec { t.lastNet("Masquerade").masq = true; return t }

// MTU sets the last network's MTU.
func (t *TopologySpec) MTU(mtu int) *TopologySpec { t.lastNet("MTU").mtu = mtu; return t }

// Host adds a host: a namespace attached to each named network, with an
// address from its pool and a default route via the first network's
// gateway.
func (t *TopologySpec) Host(name string, networks ...string) *TopologySpec {
	t.nodes = append(t.nodes, &topoNode{name: name, nets: networks})
	return t
}

// Router adds a router: a namespace with forwarding on, attached to each
// named network. Hosts on one of them get routes to the others' subnets
// via the router.
func (t *TopologySpec) Router(name string, networks ...string) *TopologySpec {
	t.nodes = append(t.nodes, &topoNode{name: name, nets: networks, router: true})
	return t
}

// Internet adds a namespace named name that stands in for the outside
// world, linked to the lab's host by a veth pair on subnet: the host end
// takes the subnet's first usable address, the internet end the second,
// and the host routes by default towards it. Nothing leaves the machine.
func (t *TopologySpec) Internet(name, subnet string) *TopologySpec {
	t.internet = &topoInternet{name: name, subnet: subnet}
	return t
}

type parsedTopo struct {
	subnets map[string][]netip.Prefix
	inet    netip.Prefix
}

func (t *TopologySpec) validate() (*parsedTopo, error) {
	errs := append([]error(nil), t.errs...)
	p := &parsedTopo{subnets: map[string][]netip.Prefix{}}
	names := map[string]string{}
	claim := func(kind, name string) {
		if prev, ok := names[name]; ok {
			errs = append(errs, invalid(ErrInvalidName, "%s %q has the name of a %s", kind, name, prev))
		}
		names[name] = kind
	}
	if err := validateObjectLabel(t.label); err != nil {
		errs = append(errs, err)
	}
	if t.named {
		if t.prefix != "" {
			if err := ValidateNamespaceName(t.prefix); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, n := range t.nets {
		claim("network", n.name)
		errs = append(errs, ValidateLinkName(n.name), validateMTU(n.mtu))
		if len(n.subnets) == 0 {
			errs = append(errs, invalid(ErrInvalidAddress, "network %q has no subnet", n.name))
		}
		for _, s := range n.subnets {
			pr, err := netip.ParsePrefix(s)
			if err != nil {
				errs = append(errs, invalid(ErrInvalidAddress, "network %q: subnet %q: %v", n.name, s, err))
				continue
			}
			p.subnets[n.name] = append(p.subnets[n.name], pr)
		}
	}
	for _, nd := range t.nodes {
		kind := "host"
		if nd.router {
			kind = "router"
		}
		claim(kind, nd.name)
		if err := ValidateNamespaceName(t.prefix + nd.name); err != nil {
			errs = append(errs, err)
		}
		if len(nd.nets) == 0 {
			errs = append(errs, invalid(ErrInvalidOption, "%s %q is on no network", kind, nd.name))
		}
		if nd.router && len(nd.nets) < 2 {
			errs = append(errs, invalid(ErrInvalidOption, "router %q needs at least two networks", nd.name))
		}
		seen := map[string]bool{}
		for _, nn := range nd.nets {
			if names[nn] != "network" {
				errs = append(errs, invalid(ErrNotFound, "%s %q is on network %q, which is not defined", kind, nd.name, nn))
			}
			if seen[nn] {
				errs = append(errs, invalid(ErrInvalidOption, "%s %q is on network %q twice", kind, nd.name, nn))
			}
			seen[nn] = true
		}
	}
	if in := t.internet; in != nil {
		claim("internet", in.name)
		if err := ValidateNamespaceName(t.prefix + in.name); err != nil {
			errs = append(errs, err)
		}
		pr, err := netip.ParsePrefix(in.subnet)
		switch {
		case err != nil:
			errs = append(errs, invalid(ErrInvalidAddress, "internet subnet %q: %v", in.subnet, err))
		case pr.Masked() != pr:
			errs = append(errs, invalid(ErrInvalidAddress, "internet subnet %v has host bits set", pr))
		case !pr.Addr().Is4() || pr.Bits() > 30:
			errs = append(errs, invalid(ErrInvalidAddress, "internet subnet %v must be IPv4 and /30 or wider", pr))
		default:
			p.inet = pr
		}
	}
	return p, errors.Join(errs...)
}

// Lab is a running topology. Close tears it down.
type Lab struct {
	host     *Namespace
	ownsHost bool
	nets     map[string]*Network
	nodes    map[string]*Node
	netOrder []*Network
	nsOrder  []*Namespace // node namespaces, in creation order
	uplink   *VethPair
	upAddr   netip.Addr
	inet     *Namespace
	closed   atomic.Bool
}

// Node is a namespace in a lab: a host, a router or the internet. It
// embeds *Namespace, so Do, Command, Listen, Dial and Ping work on it.
type Node struct {
	*Namespace
	name        string
	attachments []*Attachment
	addrs       []netip.Addr
}

// Name returns the node's name in the topology.
func (n *Node) Name() string { return n.name }

// Addrs returns the node's addresses, in network order.
func (n *Node) Addrs() []netip.Addr { return n.addrs }

// Addr returns the node's first IPv4 address, or its first address.
func (n *Node) Addr() netip.Addr {
	for _, a := range n.addrs {
		if a.Is4() {
			return a
		}
	}
	if len(n.addrs) > 0 {
		return n.addrs[0]
	}
	return netip.Addr{}
}

// Attachment returns the node's attachment to the named network, or nil.
func (n *Node) Attachment(network string) *Attachment {
	for _, a := range n.attachments {
		if a.nw.name == network {
			return a
		}
	}
	return nil
}

// PingNode pings other's address (IPv4 first) from n.
func (n *Node) PingNode(ctx context.Context, other *Node, opts ...PingOptions) (err error) {
	if n == nil || other == nil {
		return opErr("ping", "node", "", invalid(ErrNotFound, "no such node"))
	}
	_, err = n.Ping(ctx, other.Addr(), opts...)
	return err
}

// Host returns the node (host, router or internet) of that name, or nil.
func (l *Lab) Host(name string) *Node { return l.nodes[name] }

// Network returns the network of that name, or nil.
func (l *Lab) Network(name string) *Network { return l.nets[name] }

// UplinkAddr returns the host's address towards the internet (the
// address masqueraded traffic leaves with), if the lab has an internet.
func (l *Lab) UplinkAddr() netip.Addr { return l.upAddr }

// Namespace returns the lab's host namespace, where bridges and NAT live.
func (l *Lab) Namespace() *Namespace { return l.host }

// Create validates the whole description, reporting every problem at once,
// then builds the lab. If a kernel step fails it tears down everything it
// built and returns the error. The caller must Close the Lab.
func (t *TopologySpec) Create(ctx context.Context) (*Lab, error) {
	lab, err := t.create(ctx)
	return lab, opErr("create", "lab", t.label, err)
}

func (t *TopologySpec) create(ctx context.Context) (lab *Lab, err error) {
	p, err := t.validate()
	if err != nil {
		return nil, err
	}
	host, err := resolveNS(t.in)
	if err != nil {
		return nil, err
	}
	lab = &Lab{host: host, nets: map[string]*Network{}, nodes: map[string]*Node{}}
	defer func() {
		if err != nil {
			lab.closed.Store(true)
			err = errors.Join(err, lab.teardown())
			lab = nil
		}
	}()
	label := t.label
	if t.internet != nil {
		if err := lab.buildInternet(ctx, t, p.inet); err != nil {
			return lab, err
		}
	}
	for _, n := range t.nets {
		spec := NewNetwork(n.name, p.subnets[n.name]...).In(host).MTU(n.mtu).Label(labelOr(label, n.name)).Hairpin(true)
		if n.masq {
			spec.Masquerade()
		}
		if t.store != "" {
			spec.Store(filepath.Join(t.store, n.name))
		}
		nw, err := spec.Create(ctx)
		if err != nil {
			return lab, err
		}
		lab.nets[n.name] = nw
		lab.netOrder = append(lab.netOrder, nw)
	}
	// Namespaces first, then attachments, so that links can be torn down in
	// bulk per network before the namespaces go.
	for _, nd := range t.nodes {
		spec := NewAnonymousNamespace().Label(labelOr(label, nd.name))
		if t.named {
			spec = NewNamespace(t.prefix + nd.name).Label(labelOr(label, nd.name))
		}
		if nd.router {
			spec.Sysctl("net.ipv4.ip_forward", "1").Sysctl("net.ipv6.conf.all.forwarding", "1")
		}
		ns, err := spec.Create(ctx)
		if err != nil {
			return lab, err
		}
		lab.nodes[nd.name] = &Node{Namespace: ns, name: nd.name}
		lab.nsOrder = append(lab.nsOrder, ns)
	}
	for _, nd := range t.nodes {
		node := lab.nodes[nd.name]
		for i, nn := range nd.nets {
			opts := []AttachOption{IfName(fmt.Sprintf("eth%d", i))}
			if i > 0 {
				opts = append(opts, NoDefaultRoute())
			}
			a, err := lab.nets[nn].Attach(ctx, node.Namespace, opts...)
			if err != nil {
				return lab, fmt.Errorf("%s: %w", nd.name, err)
			}
			node.attachments = append(node.attachments, a)
			for _, ap := range a.Addresses() {
				node.addrs = append(node.addrs, ap.Addr())
			}
		}
	}
	return lab, lab.routeViaRouters(ctx, t)
}

func labelOr(label, name string) string {
	if label == "" {
		return name
	}
	return label + "." + name
}

// buildInternet makes the internet namespace and the uplink to it.
func (lab *Lab) buildInternet(ctx context.Context, t *TopologySpec, subnet netip.Prefix) error {
	in := t.internet
	spec := NewAnonymousNamespace().Label(labelOr(t.label, in.name))
	if t.named {
		spec = NewNamespace(t.prefix + in.name).Label(labelOr(t.label, in.name))
	}
	ns, err := spec.Create(ctx)
	if err != nil {
		return err
	}
	lab.inet = ns
	hostAddr := subnet.Addr().Next()
	inetAddr := hostAddr.Next()
	v, err := NewVethPair("").In(lab.host).Address(netip.PrefixFrom(hostAddr, subnet.Bits())).
		Peer("eth0", ns).PeerAddress(netip.PrefixFrom(inetAddr, subnet.Bits())).Label(labelOr(t.label, "uplink")).Create(ctx)
	if err != nil {
		return err
	}
	lab.uplink, lab.upAddr = v, hostAddr
	if err := lab.host.AddRoute(ctx, Route{Gateway: inetAddr, Dev: v.Name()}); err != nil {
		return err
	}
	lab.nodes[in.name] = &Node{Namespace: ns, name: in.name, addrs: []netip.Addr{inetAddr}}
	return nil
}

// routeViaRouters gives each host routes to the networks it is not on but a
// router on one of its networks is.
func (lab *Lab) routeViaRouters(ctx context.Context, t *TopologySpec) error {
	for _, r := range t.nodes {
		if !r.router {
			continue
		}
		router := lab.nodes[r.name]
		for _, hd := range t.nodes {
			if hd.name == r.name {
				continue
			}
			host := lab.nodes[hd.name]
			on := map[string]bool{}
			for _, nn := range hd.nets {
				on[nn] = true
			}
			// The router's address on a network the host shares with it.
			var via Route
			found := false
			for _, nn := range r.nets {
				if on[nn] && !found {
					ra := router.Attachment(nn)
					ha := host.Attachment(nn)
					for _, rp := range ra.Addresses() {
						if rp.Addr().Is4() {
							via, found = Route{Gateway: rp.Addr(), Dev: ha.Interface()}, true
						}
					}
				}
			}
			if !found {
				continue
			}
			for _, nn := range r.nets {
				if on[nn] {
					continue
				}
				for _, sub := range lab.nets[nn].Subnets() {
					if !sub.Addr().Is4() {
						continue
					}
					rt := via
					rt.Dst = sub
					if err := host.AddRoute(ctx, rt); err != nil {
						return fmt.Errorf("%s: route to %v via router %s: %w", hd.name, sub, r.name, err)
					}
				}
			}
		}
	}
	return nil
}

// Close tears the lab down in reverse order of creation: each network's
// attachments in one batch, then namespaces, NAT, bridges and the uplink.
// It runs every step and returns every error joined. It is idempotent.
func (lab *Lab) Close() error {
	if lab.closed.Swap(true) {
		return nil
	}
	return opErr("close", "lab", "", lab.teardown())
}

// teardown closes the networks (each deletes its bridge and all its
// attachments' links in one request, removes its NAT and releases its
// addresses), then the node namespaces, the uplink and the internet, each
// in reverse order of creation.
func (lab *Lab) teardown() error {
	var errs []error
	for i := len(lab.netOrder) - 1; i >= 0; i-- {
		crashPoint("lab:teardown:network")
		errs = append(errs, lab.netOrder[i].Close())
	}
	for i := len(lab.nsOrder) - 1; i >= 0; i-- {
		crashPoint("lab:teardown:namespace")
		errs = append(errs, lab.nsOrder[i].Close())
	}
	crashPoint("lab:teardown:uplink")
	if lab.uplink != nil {
		errs = append(errs, lab.uplink.Close())
	}
	if lab.inet != nil {
		errs = append(errs, lab.inet.Close())
	}
	return errors.Join(errs...)
}
