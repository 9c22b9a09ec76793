package podnet_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/podnettest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBridgeIsolation(t *testing.T) {
	requireIptables(t)
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			w := newNATWorld(t)
			br1 := addBridge(t, w.host, "br1", "192.168.53.1/24")
			c := podnettest.Namespace(t)
			attach(t, w.host, br1, "veth-c", c, "192.168.53.2/24", "192.168.53.1")
			serveTCP(t, w.a, ":80", named("a"))
			serveTCP(t, c, ":80", named("c"))
			before := takeSnapshot(t, w.host, be.b)

			// Not firewalled: the host routes between its bridges.
			got, err := tcpGet(w.a, "192.168.53.2:80", 3*time.Second)
			require.NoError(t, err)
			require.Equal(t, "c", got)

			fw0, err := podnet.NewBridgeFirewall("br0", pfx("192.168.52.0/24")).In(w.host).Backend(be.b).Create(ctx)
			require.NoError(t, err)
			fw1, err := podnet.NewBridgeFirewall("br1", pfx("192.168.53.0/24")).In(w.host).Backend(be.b).Create(ctx)
			require.NoError(t, err)
			_, err = podnet.NewBridgeFirewall("br1", pfx("192.168.53.0/24")).In(w.host).Backend(be.b).Create(ctx)
			require.ErrorIs(t, err, podnet.ErrExists)

			const fail = 500 * time.Millisecond
			mustFail(t, "a -> c isolated", func() (string, error) { return tcpGet(w.a, "192.168.53.2:80", fail) })
			mustFail(t, "c -> a isolated", func() (string, error) { return tcpGet(c, "192.168.52.2:80", fail) })
			// Within a bridge, and out to the uplink, traffic flows.
			serveTCP(t, w.internet, ":81", named("internet"))
			got, err = tcpGet(w.b, "192.168.52.2:80", 3*time.Second)
			require.NoError(t, err)
			assert.Equal(t, "a", got)
			m, err := podnet.NewMasquerade(pfx("192.168.52.0/24")).In(w.host).ExceptOut("br0").Backend(be.b).Create(ctx)
			require.NoError(t, err)
			got, err = tcpGet(w.a, internetIP+":81", 3*time.Second)
			require.NoError(t, err)
			assert.Equal(t, "internet", got)

			// A forwarded port is reachable across isolated networks.
			pf, err := podnet.NewPortForward().In(w.host).Backend(be.b).
				Map(podnet.PortMapping{Proto: podnet.TCP, HostPort: 8080, To: netip.MustParseAddrPort("192.168.52.2:80")}).Create(ctx)
			require.NoError(t, err)
			got, err = tcpGet(c, "192.168.53.1:8080", 3*time.Second)
			require.NoError(t, err)
			assert.Equal(t, "a", got)

			require.NoError(t, fw0.Allow(ctx, "br1"))
			require.NoError(t, fw0.Allow(ctx, "br1"), "allowing twice is harmless")
			for _, dir := range []struct {
				from *podnet.Namespace
				addr string
				want string
			}{{w.a, "192.168.53.2:80", "c"}, {c, "192.168.52.2:80", "a"}} {
				got, err := tcpGet(dir.from, dir.addr, 3*time.Second)
				require.NoError(t, err, dir.addr)
				assert.Equal(t, dir.want, got)
			}
			require.NoError(t, fw0.Disallow(ctx, "br1"))
			mustFail(t, "a -> c disallowed", func() (string, error) { return tcpGet(w.a, "192.168.53.2:80", fail) })

			require.NoError(t, fw0.Allow(ctx, "br1"))
			for _, cl := range []interface{ Close() error }{pf, m, fw1, fw0} {
				require.NoError(t, cl.Close())
			}
			assert.ErrorIs(t, fw0.Allow(ctx, "br1"), podnet.ErrClosed)
			assert.Equal(t, before, takeSnapshot(t, w.host, be.b))
		})
	}
}

// TestForwardPolicyDrop shows that a host whose FORWARD policy is DROP (as
// Docker sets it), with someone else's rules in place, still forwards
// podnet's traffic, and gets its exact rules back afterwards.
func TestForwardPolicyDrop(t *testing.T) {
	requireIptables(t)
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			w := newNATWorld(t)
			serveTCP(t, w.internet, ":80", func(remote string) string { return remote })
			serveTCP(t, w.a, ":80", named("a"))
			for _, fam := range []int{4, 6} {
				ipt(t, w.host, be.b, fam, "-P", "FORWARD", "DROP")
				ipt(t, w.host, be.b, fam, "-N", "DOCKER-USER")
				ipt(t, w.host, be.b, fam, "-A", "FORWARD", "-j", "DOCKER-USER")
				ipt(t, w.host, be.b, fam, "-A", "DOCKER-USER", "-j", "RETURN")
				src := map[int]string{4: "10.99.0.0/16", 6: "fd99::/64"}[fam]
				ipt(t, w.host, be.b, fam, "-t", "nat", "-A", "POSTROUTING", "-s", src, "!", "-o", "uplink", "-j", "MASQUERADE")
				ipt(t, w.host, be.b, fam, "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
			}
			before := takeSnapshot(t, w.host, be.b)
			require.Contains(t, before[0], ":FORWARD DROP")

			m, err := podnet.NewMasquerade(pfx("192.168.52.0/24")).In(w.host).ExceptOut("br0").Backend(be.b).Create(ctx)
			require.NoError(t, err)
			pf, err := podnet.NewPortForward().In(w.host).Backend(be.b).
				Map(podnet.PortMapping{Proto: podnet.TCP, HostPort: 8080, To: netip.MustParseAddrPort("192.168.52.2:80")}).Create(ctx)
			require.NoError(t, err)
			mustFail(t, "dropped without a firewall", func() (string, error) { return tcpGet(w.a, internetIP+":80", 500*time.Millisecond) })

			fw, err := podnet.NewBridgeFirewall("br0", pfx("192.168.52.0/24")).In(w.host).Backend(be.b).Create(ctx)
			require.NoError(t, err)
			got, err := tcpGet(w.a, internetIP+":80", 3*time.Second)
			require.NoError(t, err)
			assert.Equal(t, hostOutside, got)
			got, err = tcpGet(w.internet, hostOutside+":8080", 3*time.Second)
			require.NoError(t, err)
			assert.Equal(t, "a", got)
			got, err = tcpGet(w.b, hostOutside+":8080", 3*time.Second)
			require.NoError(t, err)
			assert.Equal(t, "a", got, "hairpin")

			rules := podnetRules(t, w.host, be.b, 4)
			require.NotEmpty(t, rules)
			assert.Equal(t, "-A FORWARD -m comment --comment podnet -j PODNET-FORWARD", firstForwardRule(t, w.host, be.b))

			for _, c := range []interface{ Close() error }{fw, pf, m} {
				require.NoError(t, c.Close())
			}
			assert.Equal(t, before, takeSnapshot(t, w.host, be.b))
		})
	}
}

func firstForwardRule(t *testing.T, ns *podnet.Namespace, b podnet.IptablesBackend) string {
	for _, l := range splitLines(saveRules(t, ns, b, 4)) {
		if len(l) > 10 && l[:10] == "-A FORWARD" {
			return l
		}
	}
	return ""
}
