package plugin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/podnet/podnet"
)

// DefaultDataDir is where address stores live unless ipam.dataDir says
// otherwise; the same default as host-local's.
const DefaultDataDir = "/var/lib/cni/networks"

// NetConf is a validated network configuration: the reference bridge
// plugin's keys with host-local IPAM, with the same meaning.
type NetConf struct {
	CNIVersion       string
	Name             string
	Bridge           string
	IsGateway        bool // also set by IsDefaultGateway, as in bridge
	IsDefaultGateway bool
	IPMasq           bool
	MTU              int
	HairpinMode      bool
	RangeSets        []RangeSet // one address per set
	Routes           []Route    // ipam.routes
	DataDir          string
	DNS              types.DNS
	// WaitForKernel (podnet-cni's own key "waitForKernel", default false)
	// makes DEL delete the veth pair itself and return only when the
	// kernel has freed it, like the reference plugin, rather than through
	// a detached copy (see unlink.go): for runtimes that are child
	// subreapers and do not reap children they did not start, which would
	// keep each copy as a zombie.
	WaitForKernel bool

	// RequestedIPs are the addresses the runtime asks for (host-local's
	// IP, ips), at most one per range set; MAC is the container
	// interface's hardware address it asks for (bridge's mac). See
	// requests.go.
	RequestedIPs []netip.Addr
	MAC          net.HardwareAddr

	PrevResult *current.Result // nil when the configuration has none

	// ValidAttachments is cni.dev/valid-attachments, for GC: "ID/ifname"
	// keys. HasValidAttachments tells an empty list from an absent one.
	ValidAttachments    map[string]bool
	HasValidAttachments bool
}

// RangeSet is a list of ranges of one family; an attachment gets one
// address from the first range with a free one.
type RangeSet []Range

// Range is one host-local range with its defaults filled in.
type Range struct {
	Subnet  netip.Prefix
	Start   netip.Addr // first allocatable address (default: subnet + 1)
	End     netip.Addr // last (default: the last address, before broadcast for IPv4)
	Gateway netip.Addr // default: subnet + 1

	explicitRange bool // rangeStart or rangeEnd was given
	explicitGW    bool
}

func (r Range) String() string { return r.Start.String() + "-" + r.End.String() }

// Contains reports whether a is between the range's start and end.
func (r Range) Contains(a netip.Addr) bool {
	return r.Subnet.Contains(a) && !a.Less(r.Start) && !r.End.Less(a)
}

// Route is an ipam.routes entry. A zero GW means the gateway of the
// attachment's first address of the route's family.
type Route struct {
	Dst      netip.Prefix
	GW       netip.Addr
	Priority int
	Table    int // 0: main
}

// The keys of a network configuration. Every key of the input must be one
// of these; anything else is an error naming it (CNI error 2).
var (
	// standardKeys are defined by the CNI spec for every plugin.
	standardKeys = []string{"cniVersion", "name", "type", "args", "runtimeConfig", "prevResult",
		"capabilities", "dns", "cni.dev/valid-attachments", "cni.dev/attachments"}
	// bridgeKeys are the reference bridge plugin's keys podnet-cni
	// implements.
	bridgeKeys = []string{"bridge", "isGateway", "isDefaultGateway", "ipMasq", "mtu", "hairpinMode", "ipam"}
	// ownKeys are podnet-cni's own.
	ownKeys = []string{"waitForKernel"}
	// unimplementedBridgeKeys are the reference bridge plugin's other keys.
	// They are accepted only at their default value (false, 0, null, empty),
	// which asks for nothing podnet-cni does not do.
	unimplementedBridgeKeys = []string{"forceAddress", "promiscMode", "vlan", "vlanTrunk", "preserveDefaultVlan",
		"macspoofchk", "enabledad", "disableContainerInterface", "portIsolation", "ipMasqBackend"}
	ipamKeys               = []string{"type", "ranges", "subnet", "rangeStart", "rangeEnd", "gateway", "routes", "dataDir"}
	unimplementedIPAMKeys  = []string{"resolvConf"}
	rangeKeys              = []string{"subnet", "rangeStart", "rangeEnd", "gateway"}
	routeKeys              = []string{"dst", "gw", "priority", "table"}
	unimplementedRouteKeys = []string{"mtu", "advmss", "scope"}
	dnsKeys                = []string{"nameservers", "domain", "search", "options"}
)

// ParseConfig decodes and validates a network configuration and the
// CNI_ARGS that come with it. Errors are *types.Error with the spec's
// codes: 6 for JSON that does not decode, 2 for a key podnet-cni does not
// know or does not implement (the message names the key and its value), 7
// for values that are invalid.
func ParseConfig(data []byte, cniArgs string) (*NetConf, error) {
	obj, err := decodeObject("network configuration", data)
	if err != nil {
		return nil, err
	}
	if err := checkKeys("", obj, slices.Concat(standardKeys, bridgeKeys, ownKeys), unimplementedBridgeKeys); err != nil {
		return nil, err
	}
	c := &NetConf{DataDir: DefaultDataDir}
	for _, f := range []struct {
		key string
		dst any
	}{
		{"cniVersion", &c.CNIVersion}, {"name", &c.Name}, {"bridge", &c.Bridge},
		{"isGateway", &c.IsGateway}, {"isDefaultGateway", &c.IsDefaultGateway}, {"ipMasq", &c.IPMasq},
		{"mtu", &c.MTU}, {"hairpinMode", &c.HairpinMode}, {"waitForKernel", &c.WaitForKernel},
	} {
		if err := decodeField(f.key, obj, f.dst); err != nil {
			return nil, err
		}
	}
	if c.IsDefaultGateway {
		c.IsGateway = true
	}
	if err := c.parseIPAM(obj["ipam"]); err != nil {
		return nil, err
	}
	if raw, ok := obj["dns"]; ok {
		dns, err := decodeObject("dns", raw)
		if err != nil {
			return nil, err
		}
		if err := checkKeys("dns.", dns, dnsKeys, nil); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(raw, &c.DNS); err != nil {
			return nil, decodeErr("dns", err)
		}
	}
	if err := c.parseRequests(obj, cniArgs); err != nil {
		return nil, err
	}
	if err := c.parsePrevResult(obj["prevResult"]); err != nil {
		return nil, err
	}
	if err := c.parseAttachments(obj); err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	if err := c.placeRequests(); err != nil {
		return nil, err
	}
	return c, nil
}

// decodeObject decodes a JSON object into its members, keeping their raw
// values.
func decodeObject(what string, data []byte) (map[string]json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		return nil, decodeErr(what, err)
	}
	if obj == nil {
		return nil, types.NewError(types.ErrDecodingFailure, what+" is null, not an object", "")
	}
	return obj, nil
}

func decodeErr(what string, err error) error {
	return types.NewError(types.ErrDecodingFailure, "cannot decode "+what, err.Error())
}

// decodeField decodes obj[key] into dst if present.
func decodeField(key string, obj map[string]json.RawMessage, dst any) error {
	raw, ok := obj[key]
	if !ok {
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return decodeErr(fmt.Sprintf("%q", key), err)
	}
	return nil
}

// checkKeys fails on the first key of obj (in sorted order) that is not
// in known, or that is in zeroOnly with a value other than its default.
func checkKeys(prefix string, obj map[string]json.RawMessage, known, zeroOnly []string) error {
	for _, k := range sortedKeys(obj) {
		switch {
		case slices.Contains(known, k):
		case slices.Contains(zeroOnly, k):
			if !isZeroJSON(obj[k]) {
				return unsupported(prefix+k, obj[k], "podnet-cni does not implement it")
			}
		default:
			return unsupported(prefix+k, obj[k], "unknown key")
		}
	}
	return nil
}

// unsupported is CNI error 2, whose message must name the key and value.
func unsupported(key string, value json.RawMessage, why string) error {
	v := string(value)
	if len(v) > 200 {
		v = v[:200] + "..."
	}
	return types.NewError(types.ErrUnsupportedField, fmt.Sprintf("unsupported field %q: %s", key, v), why)
}

// isZeroJSON reports whether a JSON value is false, 0, null, "" or empty.
func isZeroJSON(v json.RawMessage) bool {
	switch s := string(bytes.TrimSpace(v)); s {
	case "false", "0", "null", `""`, "[]", "{}":
		return true
	default:
		f, err := strconv.ParseFloat(s, 64)
		return err == nil && f == 0
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (c *NetConf) parseIPAM(raw json.RawMessage) error {
	if raw == nil {
		return invalidConf("missing ipam: podnet-cni needs host-local IPAM", "")
	}
	obj, err := decodeObject("ipam", raw)
	if err != nil {
		return err
	}
	if err := checkKeys("ipam.", obj, ipamKeys, unimplementedIPAMKeys); err != nil {
		return err
	}
	var typ string
	if err := decodeField("type", obj, &typ); err != nil {
		return err
	}
	if typ != "host-local" {
		return unsupported("ipam.type", obj["type"], "podnet-cni does the work of host-local itself and accepts no other IPAM type")
	}
	if err := decodeField("dataDir", obj, &c.DataDir); err != nil {
		return err
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	// A single range given directly in ipam (the old style) comes first,
	// as in host-local.
	if _, ok := obj["subnet"]; ok {
		r, err := parseRange("ipam.", obj)
		if err != nil {
			return err
		}
		c.RangeSets = append(c.RangeSets, RangeSet{r})
	} else {
		for _, k := range []string{"rangeStart", "rangeEnd", "gateway"} {
			if _, ok := obj[k]; ok {
				return invalidConf(fmt.Sprintf("ipam.%s without ipam.subnet", k), "")
			}
		}
	}
	if raw, ok := obj["ranges"]; ok {
		var sets [][]json.RawMessage
		if err := json.Unmarshal(raw, &sets); err != nil {
			return decodeErr("ipam.ranges (a list of lists of ranges)", err)
		}
		for i, set := range sets {
			var rs RangeSet
			for j, rraw := range set {
				prefix := fmt.Sprintf("ipam.ranges[%d][%d].", i, j)
				robj, err := decodeObject(prefix[:len(prefix)-1], rraw)
				if err != nil {
					return err
				}
				if err := checkKeys(prefix, robj, rangeKeys, nil); err != nil {
					return err
				}
				r, err := parseRange(prefix, robj)
				if err != nil {
					return err
				}
				rs = append(rs, r)
			}
			if len(rs) == 0 {
				return invalidConf(fmt.Sprintf("ipam.ranges[%d] is empty", i), "")
			}
			c.RangeSets = append(c.RangeSets, rs)
		}
	}
	if len(c.RangeSets) == 0 {
		return invalidConf("no IP ranges: give ipam.ranges or ipam.subnet", "")
	}
	if raw, ok := obj["routes"]; ok {
		var routes []json.RawMessage
		if err := json.Unmarshal(raw, &routes); err != nil {
			return decodeErr("ipam.routes", err)
		}
		for i, rraw := range routes {
			r, err := parseRoute(fmt.Sprintf("ipam.routes[%d].", i), rraw)
			if err != nil {
				return err
			}
			c.Routes = append(c.Routes, r)
		}
	}
	return nil
}

func invalidConf(msg, details string) error {
	return types.NewError(types.ErrInvalidNetworkConfig, msg, details)
}

// parseAddr decodes the string obj[key] as an address; ok is false when
// the key is absent.
func parseAddr(prefix, key string, obj map[string]json.RawMessage) (a netip.Addr, ok bool, err error) {
	var s string
	if _, ok := obj[key]; !ok {
		return netip.Addr{}, false, nil
	}
	if err := decodeField(key, obj, &s); err != nil {
		return netip.Addr{}, true, err
	}
	a, perr := netip.ParseAddr(s)
	if perr != nil || a.Zone() != "" {
		return netip.Addr{}, true, invalidConf(fmt.Sprintf("%s%s: %q is not an IP address", prefix, key, s), "")
	}
	return a.Unmap(), true, nil
}

// parseRange reads and completes one range, with host-local's defaults and
// checks.
func parseRange(prefix string, obj map[string]json.RawMessage) (Range, error) {
	var r Range
	var s string
	if err := decodeField("subnet", obj, &s); err != nil {
		return r, err
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return r, invalidConf(fmt.Sprintf("%ssubnet: %q is not a CIDR", prefix, s), err.Error())
	}
	if p.Addr().Is4In6() {
		return r, invalidConf(fmt.Sprintf("%ssubnet: %s is IPv4-mapped; give it as IPv4", prefix, p), "")
	}
	if p != p.Masked() {
		return r, invalidConf(fmt.Sprintf("%ssubnet: %s has host bits set (the network is %s)", prefix, p, p.Masked()), "")
	}
	if p.Addr().BitLen()-p.Bits() < 2 {
		return r, invalidConf(fmt.Sprintf("%ssubnet: %s is too small to allocate from", prefix, p), "")
	}
	r.Subnet = p
	first := p.Addr().Next()
	last := lastAddr(p)
	if p.Addr().Is4() {
		last = last.Prev() // broadcast
	}
	r.Start, r.End, r.Gateway = first, last, first
	for _, f := range []struct {
		key string
		dst *netip.Addr
		set *bool
	}{{"rangeStart", &r.Start, &r.explicitRange}, {"rangeEnd", &r.End, &r.explicitRange}, {"gateway", &r.Gateway, &r.explicitGW}} {
		a, ok, err := parseAddr(prefix, f.key, obj)
		if err != nil {
			return r, err
		}
		if !ok {
			continue
		}
		if !p.Contains(a) {
			return r, invalidConf(fmt.Sprintf("%s%s: %s is not in subnet %s", prefix, f.key, a, p), "")
		}
		*f.dst, *f.set = a, true
	}
	if r.End.Less(r.Start) {
		return r, invalidConf(fmt.Sprintf("%srangeStart %s is after rangeEnd %s", prefix, r.Start, r.End), "")
	}
	if r.Gateway == p.Addr() || p.Addr().Is4() && r.Gateway == lastAddr(p) {
		return r, invalidConf(fmt.Sprintf("%sgateway: %s is the network or broadcast address of %s", prefix, r.Gateway, p), "")
	}
	return r, nil
}

// lastAddr returns the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func parseRoute(prefix string, raw json.RawMessage) (Route, error) {
	var r Route
	obj, err := decodeObject(prefix[:len(prefix)-1], raw)
	if err != nil {
		return r, err
	}
	if err := checkKeys(prefix, obj, routeKeys, unimplementedRouteKeys); err != nil {
		return r, err
	}
	var dst string
	if err := decodeField("dst", obj, &dst); err != nil {
		return r, err
	}
	p, err := netip.ParsePrefix(dst)
	if err != nil {
		return r, invalidConf(fmt.Sprintf("%sdst: %q is not a CIDR", prefix, dst), err.Error())
	}
	if p != p.Masked() {
		return r, invalidConf(fmt.Sprintf("%sdst: %s has host bits set (did you mean %s?)", prefix, p, p.Masked()), "")
	}
	r.Dst = netip.PrefixFrom(p.Addr().Unmap(), p.Bits())
	gw, ok, err := parseAddr(prefix, "gw", obj)
	if err != nil {
		return r, err
	}
	if ok && gw.Is4() != r.Dst.Addr().Is4() {
		return r, invalidConf(fmt.Sprintf("%sgw: %s and dst %s are of different families", prefix, gw, r.Dst), "")
	}
	r.GW = gw
	if err := decodeField("priority", obj, &r.Priority); err != nil {
		return r, err
	}
	if err := decodeField("table", obj, &r.Table); err != nil {
		return r, err
	}
	if r.Priority < 0 || r.Table < 0 {
		return r, invalidConf(fmt.Sprintf("%spriority and table must not be negative", prefix), "")
	}
	return r, nil
}

func (c *NetConf) parsePrevResult(raw json.RawMessage) error {
	if raw == nil || string(raw) == "null" {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return decodeErr("prevResult", err)
	}
	pc := types.PluginConf{CNIVersion: c.CNIVersion, RawPrevResult: m}
	if err := version.ParsePrevResult(&pc); err != nil {
		return decodeErr("prevResult", err)
	}
	res, err := current.NewResultFromResult(pc.PrevResult)
	if err != nil {
		return decodeErr("prevResult", err)
	}
	c.PrevResult = res
	return nil
}

// parseAttachments reads the GC list. libcni sends it twice, under the
// spec's name and under the name an earlier spec text used by mistake.
func (c *NetConf) parseAttachments(obj map[string]json.RawMessage) error {
	for _, key := range []string{"cni.dev/valid-attachments", "cni.dev/attachments"} {
		raw, ok := obj[key]
		if !ok {
			continue
		}
		var list []types.GCAttachment
		if err := json.Unmarshal(raw, &list); err != nil {
			return decodeErr(key, err)
		}
		c.HasValidAttachments = true
		c.ValidAttachments = make(map[string]bool, len(list))
		for _, a := range list {
			c.ValidAttachments[ownerKey(a.ContainerID, a.IfName)] = true
		}
		return nil
	}
	return nil
}

// validate checks what the individual values cannot tell alone.
func (c *NetConf) validate() error {
	if c.Bridge == "" {
		return invalidConf("missing bridge: name the bridge (the reference plugin's default is cni0)", "")
	}
	if err := podnet.ValidateLinkName(c.Bridge); err != nil {
		return invalidConf(fmt.Sprintf("bridge: %q is not a usable interface name", c.Bridge), err.Error())
	}
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
		return invalidConf(fmt.Sprintf("mtu: %d is outside 68..65535", c.MTU), "")
	}
	if c.IPMasq {
		for _, s := range c.subnets() {
			if k := masqKey(c.Name, s); len(k) > 200 {
				return invalidConf(fmt.Sprintf("network name is too long for ipMasq: the rule key %q is longer than 200 bytes", k), "")
			}
		}
	}
	var all []Range
	for i, set := range c.RangeSets {
		for _, r := range set[1:] {
			if r.Subnet.Addr().Is4() != set[0].Subnet.Addr().Is4() {
				return invalidConf(fmt.Sprintf("ipam.ranges[%d] mixes IPv4 and IPv6", i), "")
			}
		}
		all = append(all, set...)
	}
	for i, a := range all {
		for _, b := range all[i+1:] {
			if a.Subnet.Addr().Is4() == b.Subnet.Addr().Is4() && !a.End.Less(b.Start) && !b.End.Less(a.Start) {
				return invalidConf(fmt.Sprintf("ipam ranges %s (%s) and %s (%s) overlap", a, a.Subnet, b, b.Subnet), "")
			}
		}
	}
	return nil
}
