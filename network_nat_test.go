package podnet_test

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/podnettest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// iptablesSave returns the rule lines of iptables-save in ns.
func iptablesSave(t *testing.T, ns *podnet.Namespace) string {
	t.Helper()
	var b strings.Builder
	for _, prog := range []string{"iptables-save", "ip6tables-save"} {
		out, err := ns.Command(prog).Output()
		require.NoError(t, err)
		for _, l := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(l, "#") {
				b.WriteString(l + "\n")
			}
		}
	}
	return b.String()
}

func TestNetworksIsolatedUntilAllowed(t *testing.T) {
	ctx := testCtx(t)
	host := podnettest.Sandbox(t)
	// Docker sets the FORWARD policy to DROP; podnet's traffic must still pass.
	out, err := host.Command("iptables", "-P", "FORWARD", "DROP").CombinedOutput()
	require.NoError(t, err, "%s", out)
	before := iptablesSave(t, host)

	red, err := podnet.NewNetwork("br-red", pfx("10.81.0.0/24")).In(host).Forwarding().Create(ctx)
	require.NoError(t, err)
	blue, err := podnet.NewNetwork("br-blue", pfx("10.82.0.0/24")).In(host).Forwarding().Create(ctx)
	require.NoError(t, err)
	r, b := podnettest.Namespace(t), podnettest.Namespace(t)
	_, err = red.Attach(ctx, r)
	require.NoError(t, err)
	_, err = blue.Attach(ctx, b)
	require.NoError(t, err)
	quick := podnet.PingOptions{Count: 2, Timeout: time.Second}

	_, err = r.Ping(ctx, ip("10.82.0.2"), quick)
	require.ErrorIs(t, err, podnet.ErrUnreachable, "networks reach each other without Allow")
	_, err = b.Ping(ctx, ip("10.81.0.2"), quick)
	require.ErrorIs(t, err, podnet.ErrUnreachable)

	require.NoError(t, red.Allow(ctx, blue))
	_, err = r.Ping(ctx, ip("10.82.0.2"))
	require.NoError(t, err, "allowed networks, FORWARD policy DROP")
	_, err = b.Ping(ctx, ip("10.81.0.2"))
	require.NoError(t, err)

	require.NoError(t, red.Close())
	require.NoError(t, blue.Close())
	assert.Equal(t, before, iptablesSave(t, host), "iptables not restored exactly")
	v, err := host.Sysctl("net.ipv4.ip_forward")
	require.NoError(t, err)
	assert.Equal(t, "0", v, "forwarding not restored")
}

func TestMasqueradeNetworkRollsBackWithoutIptables(t *testing.T) {
	ctx := testCtx(t)
	host := podnettest.Sandbox(t)
	restore := podnet.SetProgramSearch(func(string) (string, error) { return "", exec.ErrNotFound }, []string{t.TempDir()})
	_, err := podnet.NewNetwork("br-noipt", pfx("10.83.0.0/24")).In(host).Masquerade().Create(ctx)
	restore()
	require.ErrorIs(t, err, podnet.ErrNotInstalled)
	assert.Contains(t, err.Error(), "apt-get install -y iptables")
	assert.Equal(t, []string{"lo"}, linkNames(t, host), "bridge left behind")
	v, err := host.Sysctl("net.ipv4.ip_forward")
	require.NoError(t, err)
	assert.Equal(t, "0", v, "forwarding left on")
	assert.Zero(t, podnet.NamespaceStates())
}

// TestParallelLabs runs 10 parallel tests, each with its own podnettest
// lab of the same shape (same bridge and host names, same subnet): the
// sandboxes keep them apart, and unique prefixes keep named namespaces
// apart.
func TestParallelLabs(t *testing.T) {
	for i := 0; i < 10; i++ {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			topo := podnet.Topology().
				Network("lan", "192.168.52.0/24").Masquerade().
				Host("orange", "lan").Host("purple", "lan").
				Internet("internet", "203.0.113.0/24")
			if i%2 == 0 {
				// Half of them with names under /run/netns, unique per test.
				topo.Named(podnettest.UniqueName("pnpar", 20) + "-")
			}
			lab := podnettest.Lab(t, topo)
			require.NoError(t, lab.Host("orange").PingNode(ctx, lab.Host("purple")))
			require.NoError(t, lab.Host("purple").PingNode(ctx, lab.Host("internet")))
		})
	}
}
