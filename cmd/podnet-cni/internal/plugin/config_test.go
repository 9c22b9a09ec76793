package plugin

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig([]byte(`{
		"cniVersion": "1.1.0", "name": "net1", "type": "podnet-cni",
		"bridge": "cni-br0", "isDefaultGateway": true, "ipMasq": true, "mtu": 1400, "hairpinMode": true,
		"promiscMode": false, "vlan": 0, "waitForKernel": true,
		"ipam": {
			"type": "host-local", "dataDir": "/tmp/x",
			"ranges": [
				[{"subnet": "10.22.0.0/24", "rangeStart": "10.22.0.10", "rangeEnd": "10.22.0.20"}, {"subnet": "10.23.0.0/24"}],
				[{"subnet": "fd20:1::/64", "gateway": "fd20:1::fe"}]
			],
			"routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.7.0/24", "gw": "10.22.0.254", "priority": 5}]
		},
		"dns": {"nameservers": ["10.22.0.1"]},
		"args": {"k8s": {"whatever": 1}}
	}`), "IgnoreUnknown=1;K8S_POD_NAME=x")
	require.NoError(t, err)
	assert.Equal(t, "net1", c.Name)
	assert.Equal(t, "cni-br0", c.Bridge)
	assert.True(t, c.IsGateway, "isDefaultGateway implies isGateway")
	assert.True(t, c.IPMasq)
	assert.Equal(t, 1400, c.MTU)
	assert.True(t, c.HairpinMode)
	assert.True(t, c.WaitForKernel)
	assert.Equal(t, "/tmp/x", c.DataDir)
	require.Len(t, c.RangeSets, 2)
	require.Len(t, c.RangeSets[0], 2)
	r := c.RangeSets[0][0]
	assert.Equal(t, Range{Subnet: pfx("10.22.0.0/24"), Start: addr("10.22.0.10"), End: addr("10.22.0.20"), Gateway: addr("10.22.0.1"), explicitRange: true}, r)
	assert.Equal(t, Range{Subnet: pfx("10.23.0.0/24"), Start: addr("10.23.0.1"), End: addr("10.23.0.254"), Gateway: addr("10.23.0.1")}, c.RangeSets[0][1],
		"host-local's defaults: from .1 to the address before broadcast, gateway .1")
	assert.Equal(t, Range{Subnet: pfx("fd20:1::/64"), Start: addr("fd20:1::1"), End: addr("fd20:1::ffff:ffff:ffff:ffff"), Gateway: addr("fd20:1::fe"), explicitGW: true}, c.RangeSets[1][0])
	assert.Equal(t, []Route{{Dst: pfx("0.0.0.0/0")}, {Dst: pfx("192.168.7.0/24"), GW: addr("10.22.0.254"), Priority: 5}}, c.Routes)
	assert.Equal(t, []string{"10.22.0.1"}, c.DNS.Nameservers)

	// The old single-range form, and the default data directory.
	c, err = ParseConfig([]byte(`{"cniVersion": "0.4.0", "name": "n", "type": "t", "bridge": "b",
		"ipam": {"type": "host-local", "subnet": "10.1.0.0/16", "gateway": "10.1.0.254"}}`), "")
	require.NoError(t, err)
	assert.Equal(t, DefaultDataDir, c.DataDir)
	assert.False(t, c.WaitForKernel, "DEL detaches by default")
	assert.Equal(t, []RangeSet{{{Subnet: pfx("10.1.0.0/16"), Start: addr("10.1.0.1"), End: addr("10.1.255.254"), Gateway: addr("10.1.0.254"), explicitGW: true}}}, c.RangeSets)
}

// TestParseRequests reads requested addresses and MACs from their three
// sources as the reference plugins do: addresses from all of them, the
// MAC from the last of CNI_ARGS, args.cni and runtimeConfig.
func TestParseRequests(t *testing.T) {
	conf := `{"cniVersion": "1.1.0", "name": "n", "type": "podnet-cni", "bridge": "b0",
		"capabilities": {"ips": true, "mac": true},
		"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.22.0.0/24"}], [{"subnet": "fd20::/64"}]]},
		"args": {"k8s": {"other": "plugin's"}, "cni": {"ips": ["fd20::5/64"], "mac": "02:00:00:00:00:02"}},
		"runtimeConfig": {"ips": ["10.22.0.5"], "mac": "02:00:00:00:00:03"}}`
	c, err := ParseConfig([]byte(conf), "IgnoreUnknown=1;IP=10.22.0.5;MAC=02:00:00:00:00:01;K8S_POD_NAME=x")
	require.NoError(t, err)
	assert.Equal(t, []netip.Addr{addr("10.22.0.5"), addr("fd20::5")}, c.RequestedIPs, "all sources, each address once")
	assert.Equal(t, "02:00:00:00:00:03", c.MAC.String(), "runtimeConfig wins")
	a, r, ok := c.requestedIn(1)
	require.True(t, ok)
	assert.Equal(t, addr("fd20::5"), a)
	assert.Equal(t, pfx("fd20::/64"), r.Subnet)

	c, err = ParseConfig([]byte(`{"cniVersion": "1.1.0", "name": "n", "type": "podnet-cni", "bridge": "b0",
		"ipam": {"type": "host-local", "subnet": "10.22.0.0/24"}}`), "MAC=02:00:00:00:00:01;IP=10.22.0.9/24")
	require.NoError(t, err)
	assert.Equal(t, []netip.Addr{addr("10.22.0.9")}, c.RequestedIPs)
	assert.Equal(t, "02:00:00:00:00:01", c.MAC.String())
	_, _, ok = c.requestedIn(0)
	assert.True(t, ok)

	c, err = ParseConfig([]byte(`{"cniVersion": "1.1.0", "name": "n", "type": "podnet-cni", "bridge": "b0",
		"ipam": {"type": "host-local", "subnet": "10.22.0.0/24"}}`), "")
	require.NoError(t, err)
	assert.Empty(t, c.RequestedIPs)
	assert.Nil(t, c.MAC)
}

func TestParseConfigErrors(t *testing.T) {
	const ipam = `"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.22.0.0/24"}]]}`
	conf := func(extra string) string {
		return `{"cniVersion": "1.1.0", "name": "n", "type": "podnet-cni", "bridge": "b0", ` + extra + `}`
	}
	withRanges := func(ranges string) string {
		return conf(`"ipam": {"type": "host-local", "ranges": ` + ranges + `}`)
	}
	for _, tc := range []struct {
		name    string
		conf    string
		cniArgs string
		code    uint
		msg     string // part of the message
	}{
		{"not JSON", `{"name": `, "", types.ErrDecodingFailure, "cannot decode"},
		{"wrong type", conf(`"mtu": "1500", ` + ipam), "", types.ErrDecodingFailure, `"mtu"`},
		{"wrong type of own key", conf(`"waitForKernel": "yes", ` + ipam), "", types.ErrDecodingFailure, `"waitForKernel"`},
		{"unknown key", conf(`"bridgeName": "x", ` + ipam), "", types.ErrUnsupportedField, `"bridgeName": "x"`},
		{"unknown key differs in case", conf(`"IsGateway": true, ` + ipam), "", types.ErrUnsupportedField, `"IsGateway"`},
		{"unimplemented key", conf(`"vlan": 100, ` + ipam), "", types.ErrUnsupportedField, `"vlan": 100`},
		{"unknown ipam key", conf(`"ipam": {"type": "host-local", "subnet": "10.1.0.0/24", "foo": 1}`), "", types.ErrUnsupportedField, `"ipam.foo": 1`},
		{"unimplemented ipam key", conf(`"ipam": {"type": "host-local", "subnet": "10.1.0.0/24", "resolvConf": "/etc/resolv.conf"}`), "", types.ErrUnsupportedField, "ipam.resolvConf"},
		{"unknown range key", withRanges(`[[{"subnet": "10.1.0.0/24", "start": "10.1.0.5"}]]`), "", types.ErrUnsupportedField, "ipam.ranges[0][0].start"},
		{"unimplemented route key", conf(`"ipam": {"type": "host-local", "subnet": "10.1.0.0/24", "routes": [{"dst": "0.0.0.0/0", "mtu": 1400}]}`), "", types.ErrUnsupportedField, "ipam.routes[0].mtu"},
		{"other ipam type", conf(`"ipam": {"type": "dhcp"}`), "", types.ErrUnsupportedField, `"ipam.type": "dhcp"`},
		{"capability", conf(`"capabilities": {"ips": true, "portMappings": true}, ` + ipam), "", types.ErrUnsupportedField, "capabilities.portMappings"},
		{"runtimeConfig", conf(`"runtimeConfig": {"portMappings": [{"hostPort": 80}]}, ` + ipam), "", types.ErrUnsupportedField, "runtimeConfig.portMappings"},
		{"args.cni", conf(`"args": {"cni": {"labels": [{"key": "a"}]}}, ` + ipam), "", types.ErrUnsupportedField, "args.cni.labels"},
		{"CNI_ARGS unknown", conf(ipam), "FOO=bar", types.ErrInvalidEnvironmentVariables, "FOO"},
		{"CNI_ARGS bad IP", conf(ipam), "IgnoreUnknown=1;IP=ten", types.ErrInvalidEnvironmentVariables, `IP="ten"`},
		{"CNI_ARGS multicast MAC", conf(ipam), "MAC=01:00:5e:00:00:01", types.ErrInvalidEnvironmentVariables, "multicast"},
		{"requested address outside the ranges", conf(`"runtimeConfig": {"ips": ["10.99.0.5"]}, ` + ipam), "", types.ErrInvalidNetworkConfig, "10.99.0.5 is in no range"},
		{"requested address outside rangeEnd", withRanges(`[[{"subnet": "10.22.0.0/24", "rangeEnd": "10.22.0.50"}]]`), "IP=10.22.0.60", types.ErrInvalidNetworkConfig, "10.22.0.60 is in no range"},
		{"requested gateway", conf(ipam), "IP=10.22.0.1", types.ErrInvalidNetworkConfig, "gateway"},
		{"two requested in one set", conf(`"args": {"cni": {"ips": ["10.22.0.5", "10.22.0.6/24"]}}, ` + ipam), "", types.ErrInvalidNetworkConfig, "same range set"},
		{"requested address not an address", conf(`"runtimeConfig": {"ips": ["10.22.0.500"]}, ` + ipam), "", types.ErrInvalidNetworkConfig, `"10.22.0.500"`},
		{"requested addresses not a list", conf(`"runtimeConfig": {"ips": "10.22.0.5"}, ` + ipam), "", types.ErrDecodingFailure, `"ips"`},
		{"requested MAC not a MAC", conf(`"args": {"cni": {"mac": "02:00:00"}}, ` + ipam), "", types.ErrInvalidNetworkConfig, "args.cni.mac"},
		{"requested MAC zero", conf(`"runtimeConfig": {"mac": "00:00:00:00:00:00"}, ` + ipam), "", types.ErrInvalidNetworkConfig, "zero"},
		{"missing bridge", `{"cniVersion": "1.1.0", "name": "n", "type": "t", ` + ipam + `}`, "", types.ErrInvalidNetworkConfig, "missing bridge"},
		{"bad bridge name", conf(`"bridge": "has space", ` + ipam), "", types.ErrInvalidNetworkConfig, "bridge"},
		{"bad mtu", conf(`"mtu": 40, ` + ipam), "", types.ErrInvalidNetworkConfig, "mtu"},
		{"missing ipam", conf(`"isGateway": true`), "", types.ErrInvalidNetworkConfig, "missing ipam"},
		{"no ranges", conf(`"ipam": {"type": "host-local"}`), "", types.ErrInvalidNetworkConfig, "no IP ranges"},
		{"bad CIDR", withRanges(`[[{"subnet": "10.22.0.0/33"}]]`), "", types.ErrInvalidNetworkConfig, `"10.22.0.0/33" is not a CIDR`},
		{"host bits", withRanges(`[[{"subnet": "10.22.0.5/24"}]]`), "", types.ErrInvalidNetworkConfig, "host bits"},
		{"too small", withRanges(`[[{"subnet": "10.22.0.4/31"}]]`), "", types.ErrInvalidNetworkConfig, "too small"},
		{"start outside", withRanges(`[[{"subnet": "10.22.0.0/24", "rangeStart": "10.23.0.1"}]]`), "", types.ErrInvalidNetworkConfig, "not in subnet"},
		{"start after end", withRanges(`[[{"subnet": "10.22.0.0/24", "rangeStart": "10.22.0.9", "rangeEnd": "10.22.0.5"}]]`), "", types.ErrInvalidNetworkConfig, "after rangeEnd"},
		{"gateway is broadcast", withRanges(`[[{"subnet": "10.22.0.0/24", "gateway": "10.22.0.255"}]]`), "", types.ErrInvalidNetworkConfig, "broadcast"},
		{"bad address", withRanges(`[[{"subnet": "10.22.0.0/24", "gateway": "ten"}]]`), "", types.ErrInvalidNetworkConfig, "not an IP address"},
		{"overlapping range sets", withRanges(`[[{"subnet": "10.22.0.0/24"}], [{"subnet": "10.22.0.0/16"}]]`), "", types.ErrInvalidNetworkConfig, "overlap"},
		{"overlapping ranges", withRanges(`[[{"subnet": "10.22.0.0/24", "rangeEnd": "10.22.0.100"}, {"subnet": "10.22.0.0/24", "rangeStart": "10.22.0.100"}]]`), "", types.ErrInvalidNetworkConfig, "overlap"},
		{"mixed families in a set", withRanges(`[[{"subnet": "10.22.0.0/24"}, {"subnet": "fd20::/64"}]]`), "", types.ErrInvalidNetworkConfig, "mixes"},
		{"empty range set", withRanges(`[[]]`), "", types.ErrInvalidNetworkConfig, "empty"},
		{"route gateway family", conf(`"ipam": {"type": "host-local", "subnet": "10.1.0.0/24", "routes": [{"dst": "0.0.0.0/0", "gw": "fd20::1"}]}`), "", types.ErrInvalidNetworkConfig, "different families"},
		{"bad route dst", conf(`"ipam": {"type": "host-local", "subnet": "10.1.0.0/24", "routes": [{"dst": "default"}]}`), "", types.ErrInvalidNetworkConfig, "not a CIDR"},
		{"masquerade key too long", conf(`"name": "` + strings.Repeat("n", 190) + `", "ipMasq": true, ` + ipam), "", types.ErrInvalidNetworkConfig, "network name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.conf), tc.cniArgs)
			var te *types.Error
			require.True(t, errors.As(err, &te), "want a *types.Error, got %v", err)
			assert.Equal(t, tc.code, te.Code, "%v", te)
			assert.Contains(t, te.Error(), tc.msg)
		})
	}
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }
