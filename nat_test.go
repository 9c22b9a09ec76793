package podnet_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/podnettest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMasquerade(t *testing.T) {
	requireIptables(t)
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			w := newNATWorld(t)
			serveTCP(t, w.internet, internetIP+":80", func(remote string) string { return remote })
			before := takeSnapshot(t, w.host, be.b)

			mustFail(t, "without masquerade", func() (string, error) { return tcpGet(w.a, internetIP+":80", time.Second) })

			for _, tc := range []struct {
				name string
				spec *podnet.MasqueradeSpec
				rule string // the rule as iptables-save shows it, %s for the mark
			}{
				{"except bridge", podnet.NewMasquerade(pfx("192.168.52.0/24")).ExceptOut("br0"),
					`-A PODNET-POSTROUTING -s 192.168.52.0/24 ! -o br0 -m comment --comment "%s" -j MASQUERADE`},
				{"out uplink", podnet.NewMasquerade(pfx("192.168.52.0/24")).Out("uplink"),
					`-A PODNET-POSTROUTING -s 192.168.52.0/24 -o uplink -m comment --comment "%s" -j MASQUERADE`},
				{"leaving the prefix", podnet.NewMasquerade(pfx("192.168.52.0/24")),
					`-A PODNET-POSTROUTING -s 192.168.52.0/24 ! -d 192.168.52.0/24 -m comment --comment "%s" -j MASQUERADE`},
				{"fixed source", podnet.NewMasquerade(pfx("192.168.52.0/24")).ExceptOut("br0").ToSource(ip(hostOutside)),
					`-A PODNET-POSTROUTING -s 192.168.52.0/24 ! -o br0 -m comment --comment "%s" -j SNAT --to-source ` + hostOutside},
			} {
				m, err := tc.spec.In(w.host).Backend(be.b).Create(ctx)
				require.NoError(t, err, tc.name)
				assert.Equal(t, be.b, m.Backend())
				got, err := tcpGet(w.a, internetIP+":80", 5*time.Second)
				require.NoError(t, err, tc.name)
				assert.Equal(t, hostOutside, got, "%s: the server must see the host's outside address", tc.name)

				rules := podnetRules(t, w.host, be.b, 4)
				assert.Contains(t, rules, `-A POSTROUTING -m comment --comment podnet -j PODNET-POSTROUTING`)
				assert.Contains(t, rules, fmt.Sprintf(tc.rule, m.Mark()))
				require.NoError(t, m.Close())
				require.NoError(t, m.Close())
				assert.Equal(t, before, takeSnapshot(t, w.host, be.b), tc.name)
			}
			// Conntrack remembers the NAT of existing connections only: a
			// new one fails again.
			mustFail(t, "after Close", func() (string, error) { return tcpGet(w.a, internetIP+":80", time.Second) })
		})
	}
}

// TestIPv6 runs masquerade and port forwarding over IPv6 (ip6tables):
// the "internet" is 2001:db8:1::1, the host's outside address
// 2001:db8:1::2, and the private network fd52::/64 on br0.
func TestIPv6(t *testing.T) {
	requireIptables(t)
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			host, internet, a, b := podnettest.Sandbox(t), podnettest.Namespace(t), podnettest.Namespace(t), podnettest.Namespace(t)
			up, err := podnet.NewVethPair("uplink").In(host).Address(pfx("2001:db8:1::2/64")).
				Peer("eth0", internet).PeerAddress(pfx("2001:db8:1::1/64")).Create(ctx)
			require.NoError(t, err)
			t.Cleanup(func() { assert.NoError(t, up.Close()) })
			br := addBridge(t, host, "br0", "fd52::1/64")
			for i, ns := range []*podnet.Namespace{a, b} {
				v, err := podnet.NewVethPair(fmt.Sprintf("veth%d", i)).In(host).Master(br).Hairpin(true).
					Peer("eth0", ns).PeerAddress(pfx(fmt.Sprintf("fd52::%d/64", i+2))).Create(ctx)
				require.NoError(t, err)
				t.Cleanup(func() { assert.NoError(t, v.Close()) })
				require.NoError(t, ns.AddDefaultRoute(ctx, ip("fd52::1")))
			}
			serveTCP(t, internet, "[2001:db8:1::1]:80", func(remote string) string { return remote })
			serveTCP(t, a, "[fd52::2]:80", named("a6"))
			serveUDP(t, a, "[fd52::2]:53", "a6/udp")
			before := takeSnapshot(t, host, be.b)

			fwd, err := podnet.NewForwarding().In(host).IPv6(true).Create(ctx)
			require.NoError(t, err)
			m, err := podnet.NewMasquerade(pfx("fd52::/64")).In(host).ExceptOut("br0").Backend(be.b).Create(ctx)
			require.NoError(t, err)
			pf, err := podnet.NewPortForward().In(host).Backend(be.b).
				Map(podnet.PortMapping{Proto: podnet.TCP, HostPort: 8080, To: netip.MustParseAddrPort("[fd52::2]:80")},
					podnet.PortMapping{Proto: podnet.UDP, HostPort: 5353, To: netip.MustParseAddrPort("[fd52::2]:53")}).Create(ctx)
			require.NoError(t, err)
			assert.NotEmpty(t, podnetRules(t, host, be.b, 6))
			assert.Empty(t, podnetRules(t, host, be.b, 4), "IPv6 objects touch only ip6tables")

			got, err := tcpGet(a, "[2001:db8:1::1]:80", 3*time.Second)
			require.NoError(t, err)
			assert.Equal(t, "2001:db8:1::2", got)
			got, err = tcpGet(internet, "[2001:db8:1::2]:8080", 3*time.Second)
			require.NoError(t, err)
			assert.Equal(t, "a6", got)
			got, err = udpGet(internet, "[2001:db8:1::2]:5353", 3*time.Second)
			require.NoError(t, err)
			assert.Equal(t, "a6/udp", got)
			got, err = tcpGet(b, "[2001:db8:1::2]:8080", 3*time.Second)
			require.NoError(t, err)
			assert.Equal(t, "a6", got, "hairpin")

			for _, c := range []interface{ Close() error }{pf, m, fwd} {
				require.NoError(t, c.Close())
			}
			assert.Equal(t, before, takeSnapshot(t, host, be.b))
			v, err := host.Sysctl("net.ipv6.conf.all.forwarding")
			require.NoError(t, err)
			assert.Equal(t, "0", v)
		})
	}
}
