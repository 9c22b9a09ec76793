package podnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Protocol is a transport protocol a port can be forwarded for.
type Protocol string

// Protocols a PortMapping may use.
const (
	TCP Protocol = "tcp"
	UDP Protocol = "udp"
)

// PortMapping forwards a host port, or a range of them, to an address and
// port inside a namespace.
type PortMapping struct {
	Proto Protocol
	// HostPort is the (first) port on the host, 1..65535.
	HostPort int
	// HostPortEnd, when not 0, makes HostPort..HostPortEnd a range; the
	// destination ports are then To.Port() .. To.Port()+HostPortEnd-HostPort.
	HostPortEnd int
	// To is the destination: an address reachable from the namespace the
	// forward is installed in, and the (first) port, 1..65535. Its family
	// decides between iptables and ip6tables.
	To netip.AddrPort
}

func (m PortMapping) last() int {
	if m.HostPortEnd == 0 {
		return m.HostPort
	}
	return m.HostPortEnd
}

func (m PortMapping) hostPorts() string {
	if m.last() == m.HostPort {
		return strconv.Itoa(m.HostPort)
	}
	return fmt.Sprintf("%d-%d", m.HostPort, m.last())
}

func (m PortMapping) String() string {
	to := m.To.String()
	if !m.To.Addr().IsValid() {
		to = "(no destination)"
	}
	return fmt.Sprintf("%s %s -> %s", m.Proto, m.hostPorts(), to)
}

func (m PortMapping) validate() error {
	var errs []error
	if m.Proto != TCP && m.Proto != UDP {
		errs = append(errs, invalid(ErrInvalidOption, "protocol %q is not tcp or udp", string(m.Proto)))
	}
	switch {
	case m.HostPort < 1 || m.HostPort > 65535:
		errs = append(errs, invalid(ErrInvalidOption, "host port %d is outside 1..65535", m.HostPort))
	case m.HostPortEnd != 0 && (m.HostPortEnd < 1 || m.HostPortEnd > 65535):
		errs = append(errs, invalid(ErrInvalidOption, "host port range end %d is outside 1..65535", m.HostPortEnd))
	case m.HostPortEnd != 0 && m.HostPortEnd < m.HostPort:
		errs = append(errs, invalid(ErrInvalidOption, "host port range %d-%d ends before it starts", m.HostPort, m.HostPortEnd))
	}
	if err := validateHostAddr("destination", m.To.Addr()); err != nil {
		errs = append(errs, err)
	} else if m.To.Port() == 0 {
		errs = append(errs, invalid(ErrInvalidOption, "destination port of %v is 0", m.To))
	} else if m.HostPort >= 1 && m.last() >= m.HostPort && int(m.To.Port())+m.last()-m.HostPort > 65535 {
		errs = append(errs, invalid(ErrInvalidOption, "destination ports %d-%d go past 65535", m.To.Port(), int(m.To.Port())+m.last()-m.HostPort))
	}
	if len(errs) > 0 {
		return fmt.Errorf("mapping %s: %w", m, errors.Join(errs...))
	}
	return nil
}

// dnatRule returns the PODNET-DNAT rule for m.
func (m PortMapping) dnatRule(mark string) string {
	dport := strconv.Itoa(m.HostPort)
	if m.last() != m.HostPort {
		dport += ":" + strconv.Itoa(m.last())
	}
	a := m.To.Addr().String()
	var to string
	switch {
	case m.last() == m.HostPort:
		to = netip.AddrPortFrom(m.To.Addr(), m.To.Port()).String()
	case int(m.To.Port()) == m.HostPort:
		to = a // the kernel keeps the original destination port
	default:
		if m.To.Addr().Is6() {
			a = "[" + a + "]"
		}
		// A shifted range: host port p goes to p - HostPort + To.Port().
		to = fmt.Sprintf("%s:%d-%d/%d", a, m.To.Port(), int(m.To.Port())+m.last()-m.HostPort, m.HostPort)
	}
	p := string(m.Proto)
	return "-p " + p + " -m " + p + " --dport " + dport + " " + commentArg(mark) + " -j DNAT --to-destination " + to
}

// PortForwardSpec describes a set of port forwards (DNAT), applied and
// removed together in one batch. Its setters cannot fail; Create validates
// and reports every problem.
type PortForwardSpec struct {
	in        *Namespace
	maps      []PortMapping
	backend   IptablesBackend
	label     string
	localhost bool
}

// NewPortForward describes a set of port forwards: connections to a host
// port on any local address of the namespace go to the mapping's
// destination. They work from other namespaces routed through this one,
// from the namespace itself (127.0.0.1 included, for IPv4), and from the
// destination's own network (hairpin).
//
// For each mapping, equivalent to:
//
//	iptables -t nat -A PODNET-DNAT -p tcp -m tcp --dport 8080 \
//	    -m comment --comment MARK -j DNAT --to-destination 192.168.52.2:80
//
// where PODNET-DNAT is jumped to from PREROUTING and OUTPUT for packets
// addressed to a local address (`-m addrtype --dst-type LOCAL`); and for
// each interface the destinations are reached through (say br0, holding
// 192.168.52.1/24):
//
//	# hairpin: a client on br0's subnet reaching a server on it through the host
//	iptables -t nat -A PODNET-POSTROUTING -s 192.168.52.0/24 -o br0 \
//	    -m conntrack --ctstate DNAT -m comment --comment MARK -j MASQUERADE
//	# localhost: connections from 127.0.0.1 leave with br0's address
//	sysctl -w net.ipv4.conf.br0.route_localnet=1
//	iptables -t nat -A PODNET-POSTROUTING -s 127.0.0.0/8 -o br0 \
//	    -m comment --comment MARK -j MASQUERADE
//	# and nobody on br0 may use route_localnet to reach 127.0.0.1 directly
//	iptables -A PODNET-INPUT -i br0 -d 127.0.0.0/8 \
//	    -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT \
//	    -m comment --comment MARK -j DROP
//
// Forwarding must be on in the namespace (see NewForwarding) for
// destinations outside it, and a FORWARD policy of DROP needs a
// BridgeFirewall on the destination's bridge. Where br_netfilter is active
// (bridge-nf-call-iptables=1), a namespace reaching its own forwarded port
// has its frame bridged back out of the port it came in on, which needs
// hairpin mode on that bridge port (VethSpec.Hairpin).
func NewPortForward() *PortForwardSpec { return &PortForwardSpec{localhost: true} }

// In installs the forwards in ns instead of the calling process's namespace.
func (s *PortForwardSpec) In(ns *Namespace) *PortForwardSpec { s.in = ns; return s }

// Map adds mappings. Calls accumulate.
func (s *PortForwardSpec) Map(ms ...PortMapping) *PortForwardSpec {
	s.maps = append(s.maps, ms...)
	return s
}

// Localhost, when on (the default), makes IPv4 forwards reachable from
// 127.0.0.1 in the namespace too. That sets route_localnet on the
// interfaces the destinations are reached through, restored on Close, and
// installs a rule that drops what other hosts on those interfaces could
// otherwise send to 127.0.0.0/8 (CVE-2020-8558). IPv6 forwards are never
// reachable from ::1.
func (s *PortForwardSpec) Localhost(on bool) *PortForwardSpec { s.localhost = on; return s }

// Backend forces the iptables backend (default IptablesAuto).
func (s *PortForwardSpec) Backend(b IptablesBackend) *PortForwardSpec { s.backend = b; return s }

// Label sets the label recorded in the rules' ownership mark.
func (s *PortForwardSpec) Label(label string) *PortForwardSpec { s.label = label; return s }

func (s *PortForwardSpec) validate() error {
	errs := []error{s.backend.validate(), validateObjectLabel(s.label)}
	if len(s.maps) == 0 {
		errs = append(errs, invalid(ErrInvalidOption, "no port mappings"))
	}
	valid := make([]bool, len(s.maps))
	for i, m := range s.maps {
		err := m.validate()
		errs = append(errs, err)
		valid[i] = err == nil
	}
	for i, a := range s.maps {
		for j := 0; j < i; j++ {
			b := s.maps[j]
			if valid[i] && valid[j] && a.overlaps(b.Proto, familyOf(b.To.Addr()), b.HostPort, b.last()) {
				errs = append(errs, invalid(ErrInvalidOption, "mapping %s overlaps mapping %s", a, b))
			}
		}
	}
	return errors.Join(errs...)
}

func (m PortMapping) overlaps(proto Protocol, fam, first, last int) bool {
	return m.Proto == proto && familyOf(m.To.Addr()) == fam && m.HostPort <= last && first <= m.last()
}

// PortForward is a set of port forwards installed by podnet. The caller
// must Close it.
type PortForward struct {
	o    *owner
	maps []PortMapping
}

// Create installs all the mappings with one iptables-restore per address
// family, creating podnet's chains and jumps if they are missing. A host
// port already forwarded by podnet in the namespace (by any process) is an
// error wrapping ErrExists, and nothing is installed.
func (s *PortForwardSpec) Create(ctx context.Context) (*PortForward, error) {
	if err := s.validate(); err != nil {
		return nil, opErr("create", "portforward", "", err)
	}
	maps := append([]PortMapping(nil), s.maps...)
	o, err := build(ctx, s.in, "portforward", "", s.label, s.backend, true, func(ctx context.Context, o *owner) error {
		for _, fam := range []int{4, 6} {
			var ms []PortMapping
			for _, m := range maps {
				if familyOf(m.To.Addr()) == fam {
					ms = append(ms, m)
				}
			}
			if len(ms) == 0 {
				continue
			}
			if err := s.install(ctx, o, fam, ms); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, opErr("create", "portforward", "", err)
	}
	return &PortForward{o: o, maps: maps}, nil
}

// install adds the rules of the mappings ms of family fam.
func (s *PortForwardSpec) install(ctx context.Context, o *owner, fam int, ms []PortMapping) error {
	outs, err := outInterfaces(o.ns, ms)
	if err != nil {
		return err
	}
	localhost := s.localhost && fam == 4 && len(outs) > 0
	units := []*chainUnit{unitDNAT, unitPostrouting}
	if localhost {
		units = append(units, unitInput)
	}
	// The DNAT rules live in a chain of the object's own, jumped to from
	// PODNET-DNAT, so that Close is one flush however many there are.
	own := ownChain{table: "nat", name: chainPortForwardPrefix + o.id}
	rules := make([]ruleLine, 0, len(ms)+3*len(outs)+1)
	for _, m := range ms {
		rules = append(rules, ruleLine{table: "nat", chain: own.name, spec: m.dnatRule(o.mark)})
	}
	rules = append(rules, ruleLine{table: "nat", chain: chainDNAT, spec: commentArg(o.mark) + " -j " + own.name})
	for _, out := range outs {
		for _, sub := range out.subnets {
			rules = append(rules, ruleLine{table: "nat", chain: chainPostrouting,
				spec: "-s " + sub.String() + " -o " + out.name + " -m conntrack --ctstate DNAT " + commentArg(o.mark) + " -j MASQUERADE"})
		}
		if localhost {
			if err := o.hold(linkSysctl("ipv4", out.name, "route_localnet"), "1"); err != nil {
				return err
			}
			rules = append(rules,
				ruleLine{table: "nat", chain: chainPostrouting,
					spec: "-s 127.0.0.0/8 -o " + out.name + " " + commentArg(o.mark) + " -j MASQUERADE"},
				ruleLine{table: "filter", chain: chainInput,
					spec: "-d 127.0.0.0/8 -i " + out.name + " -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT " + commentArg(o.mark) + " -j DROP"})
		}
	}
	o.addFamily(fam, units, own)
	return o.st.applyLocked(ctx, o.ns, o.backend, iptPlan{fam: fam, mark: o.mark, units: units, chains: []ownChain{own}, rules: rules,
		check: func(ts iptTables) error { return checkForwarded(ts, ms, o.ns) }})
}

// checkForwarded reports a mapping whose host ports podnet already forwards.
func checkForwarded(ts iptTables, ms []PortMapping, ns *Namespace) error {
	var errs []error
	for _, r := range ts.table("nat").rules {
		if !strings.HasPrefix(r.chain, chainPortForwardPrefix) || r.target() != "DNAT" {
			continue
		}
		proto := Protocol(r.arg("-p"))
		first, last, ok := parsePortRange(r.arg("--dport"))
		if !ok {
			continue
		}
		for _, m := range ms {
			if m.overlaps(proto, familyOf(m.To.Addr()), first, last) {
				errs = append(errs, fmt.Errorf("%w: %s port %s is already forwarded in namespace %s (to %s, by %s)",
					ErrExists, m.Proto, m.hostPorts(), ns, r.arg("--to-destination"), r.comment()))
			}
		}
	}
	return errors.Join(errs...)
}

func parsePortRange(s string) (first, last int, ok bool) {
	a, b, found := strings.Cut(s, ":")
	f, err1 := strconv.Atoi(a)
	l, err2 := f, error(nil)
	if found {
		l, err2 = strconv.Atoi(b)
	}
	return f, l, err1 == nil && err2 == nil && s != ""
}

// outInterface is an interface destinations are reached through, with the
// subnets on it that hold them (for hairpin NAT).
type outInterface struct {
	name    string
	subnets []netip.Prefix
}

// outInterfaces finds, for the destinations of ms, the interfaces the
// namespace reaches them through. Local destinations need none. The caller
// holds ns.
func outInterfaces(ns *Namespace, ms []PortMapping) ([]outInterface, error) {
	rr := &routeResolver{ns: ns, linkAddrs: map[int][]netip.Prefix{}, linkNames: map[int]string{}}
	byName := map[string]*outInterface{}
	seen := map[netip.Addr]bool{}
	for _, m := range ms {
		a := m.To.Addr()
		if seen[a] {
			continue
		}
		seen[a] = true
		idx, err := rr.outLink(a)
		if err != nil {
			return nil, err
		}
		if idx == 0 {
			continue // local
		}
		name, err := rr.linkName(idx)
		if err != nil {
			return nil, fmt.Errorf("interface of the route to %v: %w", a, err)
		}
		if name == "lo" {
			continue
		}
		oi := byName[name]
		if oi == nil {
			oi = &outInterface{name: name}
			byName[name] = oi
		}
		addrs, err := rr.addrs(idx)
		if err != nil {
			return nil, err
		}
		for _, p := range addrs {
			if p.Addr().IsLinkLocalUnicast() || !p.Contains(a) {
				continue
			}
			sub := p.Masked()
			dup := false
			for _, s := range oi.subnets {
				dup = dup || s == sub
			}
			if !dup {
				oi.subnets = append(oi.subnets, sub)
			}
		}
	}
	out := make([]outInterface, 0, len(byName))
	for _, oi := range byName {
		out = append(out, *oi)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// routeResolver answers "which interface does the namespace send packets
// for a through" for many destinations. When the namespace's policy
// routing is the default (rules for the local, main and default tables
// only) it dumps the routes once and does the longest-prefix match itself;
// otherwise, and for anything but a plain unicast route, it asks the
// kernel per destination (`ip route get`).
type routeResolver struct {
	ns        *Namespace
	dumped    map[int]bool            // family -> routes dumped
	simple    map[int]bool            // family -> default policy rules
	local     map[netip.Addr]bool     // the namespace's own addresses
	routes    map[int][]netlink.Route // family -> main table unicast routes
	linkAddrs map[int][]netip.Prefix
	linkNames map[int]string
}

// outLink returns the index of the interface a is reached through, or 0
// for a local address.
func (rr *routeResolver) outLink(a netip.Addr) (int, error) {
	fam := netlink.FAMILY_V4
	if a.Is6() {
		fam = netlink.FAMILY_V6
	}
	if err := rr.dump(fam); err != nil {
		return 0, err
	}
	if rr.simple[fam] {
		if rr.local[a] {
			return 0, nil
		}
		best, bestBits, bestPrio := (*netlink.Route)(nil), -1, 0
		for i := range rr.routes[fam] {
			r := &rr.routes[fam][i]
			p := ipNetToPrefix(r.Dst)
			if r.Dst == nil {
				p = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
				if a.Is6() {
					p = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
				}
			}
			if !p.Contains(a) {
				continue
			}
			if p.Bits() > bestBits || p.Bits() == bestBits && r.Priority < bestPrio {
				best, bestBits, bestPrio = r, p.Bits(), r.Priority
			}
		}
		if best != nil && best.Type == unix.RTN_UNICAST && best.LinkIndex > 0 && len(best.MultiPath) == 0 {
			return best.LinkIndex, nil
		}
	}
	routes, err := rr.ns.h.RouteGet(net.IP(a.AsSlice()))
	if err != nil || len(routes) == 0 {
		return 0, fmt.Errorf("%w: no route to destination %v in namespace %s: %w", ErrInvalidRoute, a, rr.ns, err)
	}
	if routes[0].Type == unix.RTN_LOCAL {
		return 0, nil
	}
	return routes[0].LinkIndex, nil
}

func (rr *routeResolver) dump(fam int) error {
	if rr.dumped[fam] {
		return nil
	}
	if rr.dumped == nil {
		rr.dumped, rr.simple, rr.routes = map[int]bool{}, map[int]bool{}, map[int][]netlink.Route{}
	}
	rr.dumped[fam] = true
	rules, err := redump(func() ([]netlink.Rule, error) { return rr.ns.h.RuleList(fam) })
	if err != nil {
		return err
	}
	want := map[[2]int]bool{{0, unix.RT_TABLE_LOCAL}: true, {32766, unix.RT_TABLE_MAIN}: true, {32767, unix.RT_TABLE_DEFAULT}: true}
	for _, r := range rules {
		if !want[[2]int{r.Priority, r.Table}] || r.Src != nil || r.Dst != nil || r.IifName != "" || r.OifName != "" || r.Mark != 0 || r.Invert {
			return nil // policy routing in use: ask the kernel each time
		}
	}
	if rr.local == nil {
		rr.local = map[netip.Addr]bool{}
		addrs, err := redump(func() ([]netlink.Addr, error) { return rr.ns.h.AddrList(nil, netlink.FAMILY_ALL) })
		if err != nil {
			return err
		}
		for _, ad := range addrs {
			rr.local[ipNetToPrefix(ad.IPNet).Addr()] = true
		}
	}
	routes, err := redump(func() ([]netlink.Route, error) {
		return rr.ns.h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return err
	}
	rr.routes[fam] = routes
	rr.simple[fam] = true
	return nil
}

func (rr *routeResolver) linkName(idx int) (string, error) {
	if n, ok := rr.linkNames[idx]; ok {
		return n, nil
	}
	l, err := rr.ns.h.LinkByIndex(idx)
	if err != nil {
		return "", err
	}
	rr.linkNames[idx] = l.Attrs().Name
	return l.Attrs().Name, nil
}

func (rr *routeResolver) addrs(idx int) ([]netip.Prefix, error) {
	if a, ok := rr.linkAddrs[idx]; ok {
		return a, nil
	}
	a, err := listAddrs(rr.ns.h, idx)
	rr.linkAddrs[idx] = a
	return a, err
}

// Mappings returns the forwarded mappings.
func (p *PortForward) Mappings() []PortMapping { return append([]PortMapping(nil), p.maps...) }

// Backend returns the iptables backend the rules were installed with.
func (p *PortForward) Backend() IptablesBackend { return p.o.backend }

// Mark returns the ownership mark the rules carry as their comment.
func (p *PortForward) Mark() string { return p.o.mark }

// Close removes all the forwards' rules in one iptables-restore per
// family, podnet's chains and jumps if nothing else of podnet's is left in
// them, and restores route_localnet. It is idempotent; rules or a
// namespace already gone count as success.
func (p *PortForward) Close() error { return p.o.close() }
