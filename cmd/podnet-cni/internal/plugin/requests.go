package plugin

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// What a runtime may ask of an attachment, as the reference plugins take
// it:
//
//   - addresses (host-local): CNI_ARGS IP=ADDR, args.cni.ips and
//     runtimeConfig.ips (the "ips" capability), all of them, each an
//     address or address/prefix (the prefix is ignored). Each must be in a
//     range of the configuration, not its gateway, and at most one per
//     range set; that set then gives that address and no other.
//   - the container interface's MAC (bridge): CNI_ARGS MAC=, args.cni.mac
//     and runtimeConfig.mac (the "mac" capability), the last one given
//     winning in that order.
//
// Other capabilities, runtimeConfig keys and args.cni keys ask for
// something podnet-cni does not do (port mappings, bandwidth, ...) and
// are refused; arguments in namespaces other than "cni" are for other
// plugins and pass.

// supportedCaps are the capabilities podnet-cni implements.
var supportedCaps = []string{"ips", "mac"}

// parseRequests reads the requested addresses and MAC from obj and
// cniArgs, and refuses what podnet-cni does not implement.
func (c *NetConf) parseRequests(obj map[string]json.RawMessage, cniArgs string) error {
	if raw, ok := obj["capabilities"]; ok {
		var caps map[string]bool
		if err := json.Unmarshal(raw, &caps); err != nil {
			return decodeErr("capabilities", err)
		}
		for _, k := range sortedKeys(caps) {
			if caps[k] && !slices.Contains(supportedCaps, k) {
				return unsupported("capabilities."+k, json.RawMessage("true"), "podnet-cni implements the capabilities "+strings.Join(supportedCaps, " and ")+" only")
			}
		}
	}
	envIP, envMAC, err := parseCNIArgs(cniArgs)
	if err != nil {
		return err
	}
	var ips []string
	if envIP != "" {
		ips = append(ips, envIP)
	}
	mac := envMAC
	macFrom := "CNI_ARGS MAC"
	for _, path := range [][]string{{"args", "cni"}, {"runtimeConfig"}} {
		m, err := subObject(obj, path...)
		if err != nil {
			return err
		}
		if m == nil {
			continue
		}
		prefix := strings.Join(path, ".") + "."
		if err := checkKeys(prefix, m, []string{"ips", "mac"}, nil); err != nil {
			return err
		}
		var more []string
		if err := decodeField("ips", m, &more); err != nil {
			return err
		}
		ips = append(ips, more...)
		var s string
		if err := decodeField("mac", m, &s); err != nil {
			return err
		}
		if s != "" {
			mac, macFrom = s, prefix+"mac"
		}
	}
	for _, s := range ips {
		a, err := parseRequestedIP(s)
		if err != nil {
			return invalidConf(fmt.Sprintf("requested address %q: %v", s, err), "")
		}
		if !slices.Contains(c.RequestedIPs, a) {
			c.RequestedIPs = append(c.RequestedIPs, a)
		}
	}
	if mac != "" {
		hw, err := parseRequestedMAC(mac)
		if err != nil {
			return invalidConf(fmt.Sprintf("%s: %q: %v", macFrom, mac, err), "")
		}
		c.MAC = hw
	}
	return nil
}

// subObject returns the object at path in obj (each key naming a member
// of the object before it), or nil if a key is absent.
func subObject(obj map[string]json.RawMessage, path ...string) (map[string]json.RawMessage, error) {
	for i, key := range path {
		raw, ok := obj[key]
		if !ok {
			return nil, nil
		}
		var err error
		if obj, err = decodeObject(strings.Join(path[:i+1], "."), raw); err != nil {
			return nil, err
		}
	}
	return obj, nil
}

// parseCNIArgs applies the reference plugins' rule to CNI_ARGS: unknown
// keys are an error unless IgnoreUnknown is set. It returns IP and MAC.
func parseCNIArgs(s string) (ip, mac string, err error) {
	if s == "" {
		return "", "", nil
	}
	ignoreUnknown := false
	var unknown []string
	for _, pair := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			return "", "", types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS: %q is not KEY=VALUE", pair), "")
		}
		switch k {
		case "IgnoreUnknown":
			b, err := strconv.ParseBool(strings.ToLower(v))
			if err != nil {
				return "", "", types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS: IgnoreUnknown=%q is not a boolean", v), "")
			}
			ignoreUnknown = b
		case "IP":
			if _, err := parseRequestedIP(v); err != nil {
				return "", "", types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS: IP=%q: %v", v, err), "")
			}
			ip = v
		case "MAC":
			if _, err := parseRequestedMAC(v); err != nil {
				return "", "", types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS: MAC=%q: %v", v, err), "")
			}
			mac = v
		default:
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 && !ignoreUnknown {
		return "", "", types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_ARGS: unknown keys "+strings.Join(unknown, ", "), "set IgnoreUnknown=1 to ignore them")
	}
	return ip, mac, nil
}

// parseRequestedIP takes an address or address/prefix, as host-local.
func parseRequestedIP(s string) (netip.Addr, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("not an address or CIDR")
		}
		return p.Addr().Unmap(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("not an address")
	}
	return a.Unmap(), nil
}

// parseRequestedMAC takes an Ethernet unicast address.
func parseRequestedMAC(s string) (net.HardwareAddr, error) {
	hw, err := net.ParseMAC(s)
	switch {
	case err != nil || len(hw) != 6:
		return nil, fmt.Errorf("not an Ethernet address")
	case hw[0]&1 != 0:
		return nil, fmt.Errorf("a multicast address")
	case slices.Equal(hw, make(net.HardwareAddr, 6)):
		return nil, fmt.Errorf("the zero address")
	}
	return hw, nil
}

// placeRequests checks the requested addresses against the ranges: each
// in a range, not its gateway, at most one per range set. It returns a
// configuration error (code 7) naming the address otherwise.
func (c *NetConf) placeRequests() error {
	taken := make([]netip.Addr, len(c.RangeSets))
	for _, a := range c.RequestedIPs {
		set, r, ok := c.rangeOf(a)
		if !ok {
			return invalidConf(fmt.Sprintf("requested address %s is in no range of the configuration", a), "")
		}
		if a == r.Gateway {
			return invalidConf(fmt.Sprintf("requested address %s is the gateway of range %s", a, r), "")
		}
		if taken[set].IsValid() {
			return invalidConf(fmt.Sprintf("requested addresses %s and %s are in the same range set: an attachment gets one address per set", taken[set], a), "")
		}
		taken[set] = a
	}
	return nil
}

// rangeOf returns the range set and range a is in.
func (c *NetConf) rangeOf(a netip.Addr) (set int, r Range, ok bool) {
	for i, rs := range c.RangeSets {
		for _, r := range rs {
			if r.Contains(a) {
				return i, r, true
			}
		}
	}
	return 0, Range{}, false
}

// requestedIn returns the requested address of range set i, if any.
func (c *NetConf) requestedIn(i int) (netip.Addr, Range, bool) {
	for _, a := range c.RequestedIPs {
		if set, r, ok := c.rangeOf(a); ok && set == i {
			return a, r, true
		}
	}
	return netip.Addr{}, Range{}, false
}
