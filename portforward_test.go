package podnet_test

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/podnettest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
)

func TestPortForward(t *testing.T) {
	requireIptables(t)
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			w := newNATWorld(t)
			serveTCP(t, w.a, ":80", named("a:80"))
			serveTCP(t, w.b, ":80", named("b:80"))
			serveTCP(t, w.b, ":7000", named("b:7000"))
			serveTCP(t, w.b, ":7001", named("b:7001"))
			serveUDP(t, w.a, ":53", "a:53/udp")
			serveUDP(t, w.b, ":53", "b:53/udp")
			before := takeSnapshot(t, w.host, be.b)
			oldLocalnet, err := w.host.Sysctl("net.ipv4.conf.br0.route_localnet")
			require.NoError(t, err)

			pf, err := podnet.NewPortForward().In(w.host).Backend(be.b).
				Map(podnet.PortMapping{Proto: podnet.TCP, HostPort: 8080, To: netip.MustParseAddrPort("192.168.52.2:80")}).
				Map(podnet.PortMapping{Proto: podnet.TCP, HostPort: 8081, To: netip.MustParseAddrPort("192.168.52.3:80")},
					podnet.PortMapping{Proto: podnet.UDP, HostPort: 5353, To: netip.MustParseAddrPort("192.168.52.2:53")},
					podnet.PortMapping{Proto: podnet.UDP, HostPort: 5354, To: netip.MustParseAddrPort("192.168.52.3:53")},
					podnet.PortMapping{Proto: podnet.TCP, HostPort: 9000, HostPortEnd: 9001, To: netip.MustParseAddrPort("192.168.52.3:7000")}).
				Create(ctx)
			require.NoError(t, err)
			assert.Len(t, pf.Mappings(), 5)
			localnet, err := w.host.Sysctl("net.ipv4.conf.br0.route_localnet")
			require.NoError(t, err)
			assert.Equal(t, "1", localnet)

			const d = 3 * time.Second
			for _, tc := range []struct {
				name   string
				client *podnet.Namespace
				proto  string
				addr   string
				want   string
			}{
				{"internet", w.internet, "tcp", hostOutside + ":8080", "a:80"},
				{"internet", w.internet, "tcp", hostOutside + ":8081", "b:80"},
				{"internet range start", w.internet, "tcp", hostOutside + ":9000", "b:7000"},
				{"internet range end", w.internet, "tcp", hostOutside + ":9001", "b:7001"},
				{"internet", w.internet, "udp", hostOutside + ":5353", "a:53/udp"},
				{"internet", w.internet, "udp", hostOutside + ":5354", "b:53/udp"},
				{"host localhost", w.host, "tcp", "127.0.0.1:8080", "a:80"},
				{"host localhost", w.host, "tcp", "127.0.0.1:8081", "b:80"},
				{"host localhost", w.host, "udp", "127.0.0.1:5353", "a:53/udp"},
				{"host own address", w.host, "tcp", hostOutside + ":8081", "b:80"},
				{"host bridge address", w.host, "tcp", "192.168.52.1:9001", "b:7001"},
				{"hairpin", w.b, "tcp", hostOutside + ":8080", "a:80"},
				{"hairpin via gateway", w.b, "tcp", "192.168.52.1:8080", "a:80"},
				{"hairpin to itself", w.a, "tcp", hostOutside + ":8080", "a:80"},
				{"hairpin", w.b, "udp", hostOutside + ":5353", "a:53/udp"},
			} {
				var got string
				var err error
				if tc.proto == "tcp" {
					got, err = tcpGet(tc.client, tc.addr, d)
				} else {
					got, err = udpGet(tc.client, tc.addr, d)
				}
				if assert.NoError(t, err, "%s %s %s", tc.name, tc.proto, tc.addr) {
					assert.Equal(t, tc.want, got, "%s %s %s", tc.name, tc.proto, tc.addr)
				}
			}

			// The same host port again, from another object: ErrExists.
			_, err = podnet.NewPortForward().In(w.host).Backend(be.b).
				Map(podnet.PortMapping{Proto: podnet.TCP, HostPort: 7999, HostPortEnd: 8080, To: netip.MustParseAddrPort("192.168.52.3:80")}).
				Create(ctx)
			require.ErrorIs(t, err, podnet.ErrExists)
			assert.Contains(t, err.Error(), "tcp port 7999-8080 is already forwarded")
			// Another protocol on the same port is fine.
			pf2, err := podnet.NewPortForward().In(w.host).Backend(be.b).
				Map(podnet.PortMapping{Proto: podnet.UDP, HostPort: 8080, To: netip.MustParseAddrPort("192.168.52.3:53")}).
				Create(ctx)
			require.NoError(t, err)
			got, err := udpGet(w.internet, hostOutside+":8080", d)
			require.NoError(t, err)
			assert.Equal(t, "b:53/udp", got)

			require.NoError(t, pf.Close())
			require.NoError(t, pf.Close())
			mustFail(t, "after Close", func() (string, error) { return tcpGet(w.internet, hostOutside+":8080", time.Second) })
			localnet, err = w.host.Sysctl("net.ipv4.conf.br0.route_localnet")
			require.NoError(t, err)
			assert.Equal(t, "1", localnet, "pf2 still needs route_localnet")
			require.NoError(t, pf2.Close())
			localnet, err = w.host.Sysctl("net.ipv4.conf.br0.route_localnet")
			require.NoError(t, err)
			assert.Equal(t, oldLocalnet, localnet)
			assert.Equal(t, before, takeSnapshot(t, w.host, be.b))
		})
	}
}

// TestPortForwardRouteLookup checks that the hairpin and localhost rules
// name the interface the namespace really routes each destination through:
// the most specific route, and policy routing when there is some.
func TestPortForwardRouteLookup(t *testing.T) {
	requireIptables(t)
	ctx := testCtx(t)
	host := podnettest.Sandbox(t)
	addBridge(t, host, "br0", "10.50.0.1/16")
	addBridge(t, host, "br1", "10.60.0.1/16")
	require.NoError(t, host.AddRoute(ctx, podnet.Route{Dst: pfx("10.50.9.0/24"), Dev: "br1"}))
	mapping := func(port int, to string) podnet.PortMapping {
		return podnet.PortMapping{Proto: podnet.TCP, HostPort: port, To: netip.MustParseAddrPort(to)}
	}
	outs := func(pf *podnet.PortForward) []string {
		var o []string
		for _, r := range podnetRules(t, host, pf.Backend(), 4) {
			if strings.Contains(r, pf.Mark()) && strings.Contains(r, "-s 127.0.0.0/8") {
				o = append(o, strings.Fields(r[strings.Index(r, " -o ")+4:])[0])
			}
		}
		return o
	}
	check := func(to string, want ...string) {
		t.Helper()
		pf, err := podnet.NewPortForward().In(host).Map(mapping(80, to)).Create(ctx)
		require.NoError(t, err)
		assert.Equal(t, want, outs(pf), to)
		require.NoError(t, pf.Close())
	}
	check("10.50.1.2:80", "br0")
	check("10.50.9.2:80", "br1") // the more specific route
	check("10.60.0.1:80")        // a local address: nothing to route

	// A policy rule sending 10.50.1.0/24 through table 100, which says br1.
	rule := netlink.NewRule()
	rule.Priority, rule.Table, rule.Dst = 100, 100, prefixToIPNet(pfx("10.50.1.0/24"))
	require.NoError(t, host.Handle().RuleAdd(rule))
	require.NoError(t, host.AddRoute(ctx, podnet.Route{Dst: pfx("10.50.1.0/24"), Dev: "br1", Table: 100}))
	check("10.50.1.2:80", "br1")
	check("10.50.2.2:80", "br0")
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
