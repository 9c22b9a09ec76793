package podnet_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/podnet/podnet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
