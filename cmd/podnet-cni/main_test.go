package main_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/cmd/podnet-cni/cnitest"
	"github.com/podnet/podnet/ipam"
	"github.com/podnet/podnet/podnettest"
)

// binDir holds the podnet-cni binary, built once by TestMain.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "podnet-cni-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		if _, err := cnitest.Build(dir, "podnet-cni", ".", "."); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		binDir = dir
		return m.Run()
	}())
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// netConf is a bridge configuration as for the reference plugin, with
// "type" changed. Subnets avoid 192.0.2.0/24 and fd00::/64, the real
// host's.
func netConf(env *cnitest.Env, bridge string, ranges ...[]map[string]any) map[string]any {
	return map[string]any{
		"type":             "podnet-cni",
		"bridge":           bridge,
		"isGateway":        true,
		"isDefaultGateway": true,
		"ipMasq":           true,
		"mtu":              1400,
		"hairpinMode":      true,
		"ipam": map[string]any{
			"type":    "host-local",
			"ranges":  ranges,
			"routes":  []map[string]any{{"dst": "198.51.100.0/24"}},
			"dataDir": env.DataDir,
		},
	}
}

var (
	v4Range = []map[string]any{{"subnet": "10.88.0.0/24"}}
	v6Range = []map[string]any{{"subnet": "fd20:88::/64"}}
)

func confList(t *testing.T, name, cniVersion string, plugin map[string]any) *libcni.NetworkConfigList {
	t.Helper()
	list, err := cnitest.ConfList(name, cniVersion, plugin)
	require.NoError(t, err)
	return list
}

func requireCode(t *testing.T, err error, code uint) {
	t.Helper()
	require.Error(t, err)
	got, ok := cnitest.Code(err)
	require.True(t, ok, "not a CNI error: %v", err)
	assert.Equal(t, code, got, "%v", err)
}

// assertNoVeth checks that the host namespace has no veth end left.
func assertNoVeth(t *testing.T, ctx context.Context, env *cnitest.Env) {
	t.Helper()
	links, err := env.Host.Links(ctx)
	require.NoError(t, err)
	for _, l := range links {
		assert.NotEqual(t, "veth", l.Type(), "veth %s left", l.Attrs().Name)
	}
}

// held returns the addresses the network's stores hold for owner.
func held(t *testing.T, env *cnitest.Env, network, owner string) []netip.Addr {
	t.Helper()
	var out []netip.Addr
	dirs, err := filepath.Glob(filepath.Join(env.DataDir, network, "*"))
	require.NoError(t, err)
	for _, dir := range dirs {
		if st, err := os.Stat(filepath.Join(dir, "journal")); err != nil || st.IsDir() {
			continue
		}
		p, err := ipam.OpenExisting(dir)
		require.NoError(t, err)
		out = append(out, p.Lookup(owner)...)
		require.NoError(t, p.Close())
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func resultAddrs(res *current.Result) []netip.Addr {
	var out []netip.Addr
	for _, ipc := range res.IPs {
		a, _ := netip.AddrFromSlice(ipc.Address.IP)
		out = append(out, a.Unmap())
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func addrOf(res *current.Result, v4 bool) netip.Addr {
	for _, a := range resultAddrs(res) {
		if a.Is4() == v4 {
			return a
		}
	}
	return netip.Addr{}
}

// TestAdd attaches several containers, IPv4 only and dual-stack, in every
// supported spec version, and checks that each result is what the kernel
// shows, that CHECK agrees, that the containers reach each other and,
// masqueraded, the internet, and that DEL takes it all back.
func TestAdd(t *testing.T) {
	for _, tc := range []struct {
		name       string
		cniVersion string
		ranges     [][]map[string]any
	}{
		{"ipv4/1.1.0", "1.1.0", [][]map[string]any{v4Range}},
		{"dual-stack/1.0.0", "1.0.0", [][]map[string]any{v4Range, v6Range}},
		{"dual-stack/0.4.0", "0.4.0", [][]map[string]any{v4Range, v6Range}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			env := cnitest.NewEnv(t, binDir)
			inet := env.Internet(t)
			list := confList(t, "net1", tc.cniVersion, netConf(env, "cni-pn0", tc.ranges...))
			dual := len(tc.ranges) == 2

			var ctrs []*cnitest.Container
			var results []*current.Result
			for i := range 3 {
				c := env.Container(t, fmt.Sprintf("ctr%d", i))
				res, err := env.Add(ctx, list, c)
				require.NoError(t, err)
				require.NoError(t, cnitest.CheckResult(ctx, env.Host, c, res, true))
				st, err := cnitest.Observe(ctx, c)
				require.NoError(t, err)
				assert.Equal(t, 1400, st.MTU)
				want := []string{"10.88.0.0/24", "198.51.100.0/24 via 10.88.0.1", "default via 10.88.0.1"}
				if dual {
					want = append(want, "default6 via fd20:88::1", "fd20:88::/64")
				}
				slices.Sort(want)
				assert.Equal(t, want, st.Routes)
				require.NoError(t, env.Check(ctx, list, c))
				assert.Equal(t, resultAddrs(res), held(t, env, "net1", c.ID+"/eth0"))
				ctrs, results = append(ctrs, c), append(results, res)
			}
			// host-local's order: the gateway .1 is skipped, then .2, .3, ...
			assert.Equal(t, netip.MustParseAddr("10.88.0.2"), addrOf(results[0], true))
			assert.Equal(t, netip.MustParseAddr("10.88.0.4"), addrOf(results[2], true))

			for i, c := range ctrs {
				for j, res := range results {
					if i == j {
						continue
					}
					for _, a := range resultAddrs(res) {
						_, err := c.NS.Ping(ctx, a)
						assert.NoError(t, err, "%s -> %s", c.ID, a)
					}
				}
				seen, err := inet.SeenFrom(ctx, c.NS, inet.Addr4)
				require.NoError(t, err, "%s -> internet", c.ID)
				assert.Equal(t, inet.HostAddr4, seen, "masqueraded")
				if dual {
					seen, err := inet.SeenFrom(ctx, c.NS, inet.Addr6)
					require.NoError(t, err, "%s -> internet over IPv6", c.ID)
					assert.Equal(t, inet.HostAddr6, seen, "masqueraded")
				}
			}
			fwd, err := env.Host.Sysctl("net.ipv4.ip_forward")
			require.NoError(t, err)
			assert.Equal(t, "1", fwd, "isGateway turns forwarding on")

			for _, c := range ctrs {
				require.NoError(t, env.Del(ctx, list, c))
				assert.Empty(t, held(t, env, "net1", c.ID+"/eth0"))
				_, err := c.NS.Handle().LinkByName("eth0")
				assert.Error(t, err, "DEL removes the interface")
			}
			links, err := env.Host.Links(ctx)
			require.NoError(t, err)
			for _, l := range links {
				assert.False(t, strings.HasPrefix(l.Attrs().Name, "pnc"), "%s left behind", l.Attrs().Name)
			}
		})
	}
}

// TestCheck removes what CHECK must notice, one thing at a time.
func TestCheck(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	env := cnitest.NewEnv(t, binDir)
	list := confList(t, "net1", "1.1.0", netConf(env, "cni-pn0", v4Range, v6Range))
	for _, tc := range []struct {
		name   string
		break_ func(c *cnitest.Container, res *current.Result) error
	}{
		{"address removed", func(c *cnitest.Container, res *current.Result) error {
			return c.NS.DelAddress(ctx, "eth0", netip.PrefixFrom(addrOf(res, false), 64))
		}},
		{"route removed", func(c *cnitest.Container, res *current.Result) error {
			return c.NS.DelRoute(ctx, podnet.Route{Dst: netip.MustParsePrefix("198.51.100.0/24"), Gateway: netip.MustParseAddr("10.88.0.1"), Dev: "eth0"})
		}},
		{"default route removed", func(c *cnitest.Container, res *current.Result) error {
			return c.NS.DelRoute(ctx, podnet.Route{Gateway: netip.MustParseAddr("fd20:88::1"), Dev: "eth0"})
		}},
		{"interface removed", func(c *cnitest.Container, res *current.Result) error {
			l, err := c.NS.Handle().LinkByName("eth0")
			if err != nil {
				return err
			}
			return c.NS.Handle().LinkDel(l)
		}},
		{"masquerade removed", func(c *cnitest.Container, res *current.Result) error {
			return podnet.NewMasquerade(netip.MustParsePrefix("10.88.0.0/24")).In(env.Host).ExceptOut("cni-pn0").Key("cni.net1.10.88.0.0-24").Remove(ctx)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := env.Container(t, "ctr-"+strings.ReplaceAll(tc.name, " ", "-"))
			res, err := env.Add(ctx, list, c)
			require.NoError(t, err)
			require.NoError(t, env.Check(ctx, list, c))
			require.NoError(t, tc.break_(c, res))
			requireCode(t, env.Check(ctx, list, c), 101)
			require.NoError(t, env.Del(ctx, list, c))
		})
	}
}

// TestHostSetupHeals undoes the network's host settings behind the
// plugin's back: CHECK notices at once, and ADD puts them back once its
// marker is older than the recheck interval (aged here by hand).
func TestHostSetupHeals(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	env := cnitest.NewEnv(t, binDir)
	inet := env.Internet(t)
	list := confList(t, "net1", "1.1.0", netConf(env, "cni-pn0", v4Range))
	c1 := env.Container(t, "ctr1")
	_, err := env.Add(ctx, list, c1)
	require.NoError(t, err)
	masq := podnet.NewMasquerade(netip.MustParsePrefix("10.88.0.0/24")).In(env.Host).Key("cni.net1.10.88.0.0-24")
	require.NoError(t, masq.Remove(ctx))
	requireCode(t, env.Check(ctx, list, c1), 101)
	_, err = env.Host.SetSysctl("net.ipv4.ip_forward", "0")
	require.NoError(t, err)
	_, err = env.Add(ctx, list, env.Container(t, "ctr-soon"))
	require.NoError(t, err)
	requireCode(t, env.Check(ctx, list, c1), 101)

	marker := filepath.Join(env.DataDir, "net1", "setup")
	old := time.Now().Add(-time.Hour)
	require.NoError(t, os.Chtimes(marker, old, old))
	_, err = env.Add(ctx, list, env.Container(t, "ctr2"))
	require.NoError(t, err)
	require.NoError(t, env.Check(ctx, list, c1))
	seen, err := inet.SeenFrom(ctx, c1.NS, inet.Addr4)
	require.NoError(t, err)
	assert.Equal(t, inet.HostAddr4, seen)
}

// TestDel deletes twice, and after the container's namespace is gone.
func TestDel(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	env := cnitest.NewEnv(t, binDir)
	list := confList(t, "net1", "1.1.0", netConf(env, "cni-pn0", v4Range))

	c := env.Container(t, "twice")
	res, err := env.Add(ctx, list, c)
	require.NoError(t, err)
	require.NoError(t, env.Del(ctx, list, c))
	// At once: DEL returns only when both ends are gone, though a
	// detached copy may still be waiting for the kernel to free them.
	require.NoError(t, cnitest.Gone(ctx, env.Host, c, 0))
	require.NoError(t, env.Del(ctx, list, c), "a second DEL succeeds")
	assert.Empty(t, held(t, env, "net1", "twice/eth0"))

	gone := &cnitest.Container{ID: "gone", IfName: "eth0"}
	ns, err := podnet.NewNamespace(podnettest.UniqueName("cnitest-", 64)).Create(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { ns.Close() })
	gone.NS = ns
	res2, err := env.Add(ctx, list, gone)
	require.NoError(t, err)
	assert.Equal(t, []netip.Addr{netip.MustParseAddr("10.88.0.2")}, resultAddrs(res))
	assert.Equal(t, []netip.Addr{netip.MustParseAddr("10.88.0.3")}, resultAddrs(res2), "round robin, as host-local: the released .2 comes back last")
	require.NoError(t, ns.Close())
	_, err = os.Stat(ns.Path())
	require.ErrorIs(t, err, os.ErrNotExist)
	require.NoError(t, env.Del(ctx, list, gone), "DEL after the namespace is gone")
	assert.Empty(t, held(t, env, "net1", "gone/eth0"))
	require.NoError(t, env.Del(ctx, list, gone))
}

// TestDelWaitForKernel: with waitForKernel, DEL deletes the pair itself
// and returns only once the kernel is done with it, so no detached copy
// is left deleting it.
func TestDelWaitForKernel(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	env := cnitest.NewEnv(t, binDir)
	conf := netConf(env, "cni-pn0", v4Range)
	conf["waitForKernel"] = true
	list := confList(t, "net1", "1.1.0", conf)
	c := env.Container(t, "waiter")
	res, err := env.Add(ctx, list, c)
	require.NoError(t, err)
	hostEnd := res.Interfaces[1].Name
	require.NoError(t, env.Del(ctx, list, c))
	copies, err := cnitest.Detached()
	require.NoError(t, err)
	for _, cp := range copies {
		assert.NotEqual(t, hostEnd, cp.Link, "a detached copy (pid %d) is deleting %s", cp.PID, hostEnd)
	}
	require.NoError(t, cnitest.Gone(ctx, env.Host, c, 0))
	assert.Empty(t, held(t, env, "net1", "waiter/eth0"))
}

// TestRequested asks for addresses and a MAC, through the "ips" and "mac"
// capabilities and CNI_ARGS, as runtimes do: the container gets exactly
// those, a second container asking for a taken address fails and leaves
// nothing, and the address can be asked for again once released.
func TestRequested(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	env := cnitest.NewEnv(t, binDir)
	conf := netConf(env, "cni-pn0", v4Range, v6Range)
	conf["capabilities"] = map[string]bool{"ips": true, "mac": true}
	list := confList(t, "net1", "1.1.0", conf)

	c1 := env.Container(t, "asks")
	c1.CapabilityArgs = map[string]any{"ips": []string{"10.88.0.77/24", "fd20:88::77"}, "mac": "02:12:34:56:78:9a"}
	res, err := env.Add(ctx, list, c1)
	require.NoError(t, err)
	want := []netip.Addr{netip.MustParseAddr("10.88.0.77"), netip.MustParseAddr("fd20:88::77")}
	assert.Equal(t, want, resultAddrs(res))
	assert.Equal(t, "02:12:34:56:78:9a", res.Interfaces[2].Mac)
	require.NoError(t, cnitest.CheckResult(ctx, env.Host, c1, res, true), "the kernel has what the result says")
	l, err := c1.NS.Handle().LinkByName("eth0")
	require.NoError(t, err)
	assert.Equal(t, "02:12:34:56:78:9a", l.Attrs().HardwareAddr.String())
	assert.Equal(t, want, held(t, env, "net1", "asks/eth0"))

	// Taken: an error, and the second container is left as it was.
	c2 := env.Container(t, "late")
	c2.Args = [][2]string{{"IP", "10.88.0.77"}}
	_, err = env.Add(ctx, list, c2)
	requireCode(t, err, types.ErrInternal)
	assert.Contains(t, err.Error(), "10.88.0.77 is taken")
	_, err = c2.NS.Handle().LinkByName("eth0")
	assert.Error(t, err, "no interface left in the container")
	assert.Empty(t, held(t, env, "net1", "late/eth0"), "no address left held")
	require.NoError(t, cnitest.Gone(ctx, env.Host, c2, 1), "only the first container's veth on the bridge")

	// A requested IPv4 address, the IPv6 one from the pool.
	c3 := env.Container(t, "args")
	c3.Args = [][2]string{{"IgnoreUnknown", "1"}, {"IP", "10.88.0.80"}, {"K8S_POD_NAME", "x"}}
	res3, err := env.Add(ctx, list, c3)
	require.NoError(t, err)
	assert.Equal(t, netip.MustParseAddr("10.88.0.80"), addrOf(res3, true))

	require.NoError(t, env.Del(ctx, list, c1))
	res2, err := env.Add(ctx, list, c2)
	require.NoError(t, err, "released: it can be asked for again")
	assert.Equal(t, netip.MustParseAddr("10.88.0.77"), addrOf(res2, true))
	require.NoError(t, env.Check(ctx, list, c2))
	require.NoError(t, env.Del(ctx, list, c2))
	require.NoError(t, env.Del(ctx, list, c3))
}

// TestAddTwice adds the same container and interface twice: the second ADD
// fails and leaves the first attachment as it was.
func TestAddTwice(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	env := cnitest.NewEnv(t, binDir)
	list := confList(t, "net1", "1.1.0", netConf(env, "cni-pn0", v4Range))
	c := env.Container(t, "ctr")
	res, err := env.Add(ctx, list, c)
	require.NoError(t, err)
	_, err = env.Add(ctx, list, c)
	requireCode(t, err, 100)
	assert.Equal(t, resultAddrs(res), held(t, env, "net1", "ctr/eth0"))
	require.NoError(t, cnitest.CheckResult(ctx, env.Host, c, res, true))

	// The same container on a second interface is another attachment.
	c2 := &cnitest.Container{NS: c.NS, ID: c.ID, IfName: "eth1"}
	res2, err := env.Add(ctx, list, c2)
	require.NoError(t, err)
	assert.NotEqual(t, resultAddrs(res), resultAddrs(res2))
	require.NoError(t, env.Del(ctx, list, c2))
	require.NoError(t, env.Del(ctx, list, c))
}

// TestAddRollback makes ADD fail after it allocated and created the veth
// pair (a route via an unreachable gateway): it must leave nothing behind
// but the bridge.
func TestAddRollback(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	env := cnitest.NewEnv(t, binDir)
	conf := netConf(env, "cni-pn0", v4Range)
	conf["ipam"].(map[string]any)["routes"] = []map[string]any{{"dst": "198.51.100.0/24", "gw": "10.99.0.1"}}
	list := confList(t, "net1", "1.1.0", conf)
	c := env.Container(t, "ctr")
	_, err := env.Add(ctx, list, c)
	requireCode(t, err, types.ErrInternal)
	assert.Contains(t, err.Error(), "198.51.100.0/24")
	assert.Empty(t, held(t, env, "net1", "ctr/eth0"))
	_, err = c.NS.Handle().LinkByName("eth0")
	assert.Error(t, err, "the container's interface is gone")
	links, err := env.Host.Links(ctx)
	require.NoError(t, err)
	for _, l := range links {
		assert.Contains(t, []string{"lo", "cni-pn0"}, l.Attrs().Name)
	}
	require.NoError(t, env.Del(ctx, list, c), "the runtime's DEL after a failed ADD")
}

// TestGC garbage-collects with a partial list of valid attachments.
func TestGC(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	env := cnitest.NewEnv(t, binDir)
	list := confList(t, "net1", "1.1.0", netConf(env, "cni-pn0", v4Range, v6Range))
	var ctrs []*cnitest.Container
	var addrs [][]netip.Addr
	for i := range 4 {
		c := env.Container(t, fmt.Sprintf("ctr%d", i))
		res, err := env.Add(ctx, list, c)
		require.NoError(t, err)
		ctrs, addrs = append(ctrs, c), append(addrs, resultAddrs(res))
	}
	valid := []types.GCAttachment{{ContainerID: "ctr0", IfName: "eth0"}, {ContainerID: "ctr2", IfName: "eth0"}}
	require.NoError(t, env.GC(ctx, list, valid))
	for i, c := range ctrs {
		_, err := c.NS.Handle().LinkByName("eth0")
		if i%2 == 0 {
			assert.Equal(t, addrs[i], held(t, env, "net1", c.ID+"/eth0"), "valid %s keeps its addresses", c.ID)
			assert.NoError(t, err, "valid %s keeps its interface", c.ID)
			require.NoError(t, env.Check(ctx, list, c))
		} else {
			assert.Empty(t, held(t, env, "net1", c.ID+"/eth0"), "stale %s is released", c.ID)
			assert.Error(t, err, "stale %s loses its interface", c.ID)
		}
	}
	// With no valid attachment left, the masquerade rules go too.
	require.NoError(t, env.GC(ctx, list, []types.GCAttachment{}))
	assert.Empty(t, held(t, env, "net1", "ctr0/eth0"))
	installed, err := podnet.NewMasquerade(netip.MustParsePrefix("10.88.0.0/24")).In(env.Host).Key("cni.net1.10.88.0.0-24").Installed(ctx)
	require.NoError(t, err)
	assert.False(t, installed)
}

// TestConfigErrors checks the CNI error codes of bad configurations.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	env := cnitest.NewEnv(t, binDir)
	c := env.Container(t, "ctr")
	good := func() map[string]any { return netConf(env, "cni-pn0", v4Range) }
	for _, tc := range []struct {
		name       string
		cniVersion string
		edit       func(m map[string]any)
		code       uint
	}{
		{"missing bridge", "1.1.0", func(m map[string]any) { delete(m, "bridge") }, types.ErrInvalidNetworkConfig},
		{"overlapping ranges", "1.1.0", func(m map[string]any) {
			m["ipam"].(map[string]any)["ranges"] = [][]map[string]any{v4Range, {{"subnet": "10.88.0.128/25"}}}
		}, types.ErrInvalidNetworkConfig},
		{"bad CIDR", "1.1.0", func(m map[string]any) {
			m["ipam"].(map[string]any)["ranges"] = [][]map[string]any{{{"subnet": "10.88.0.0/40"}}}
		}, types.ErrInvalidNetworkConfig},
		{"unknown spec version", "9.9.9", func(map[string]any) {}, types.ErrIncompatibleCNIVersion},
		{"old spec version", "0.3.1", func(map[string]any) {}, types.ErrIncompatibleCNIVersion},
		{"unknown key", "1.1.0", func(m map[string]any) { m["bridgeMode"] = "fast" }, types.ErrUnsupportedField},
		{"unimplemented key", "1.1.0", func(m map[string]any) { m["promiscMode"] = true }, types.ErrUnsupportedField},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := good()
			tc.edit(m)
			_, err := env.Add(ctx, confList(t, "net1", tc.cniVersion, m), c)
			requireCode(t, err, tc.code)
		})
	}
	links, err := env.Host.Links(ctx)
	require.NoError(t, err)
	assert.Len(t, links, 1, "nothing was created: %v", links)
}

// TestStatusVersion runs STATUS on a network that fills up, and VERSION.
func TestStatusVersion(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	env := cnitest.NewEnv(t, binDir)
	info, err := env.Version(ctx, "podnet-cni")
	require.NoError(t, err)
	assert.Equal(t, []string{"0.4.0", "1.0.0", "1.1.0"}, info.SupportedVersions())

	// A /29 from .2 to .3: two addresses.
	list := confList(t, "net1", "1.1.0", netConf(env, "cni-pn0", []map[string]any{{"subnet": "10.88.0.0/29", "rangeEnd": "10.88.0.3"}}))
	require.NoError(t, env.Status(ctx, list))
	for i := range 2 {
		_, err := env.Add(ctx, list, env.Container(t, fmt.Sprintf("ctr%d", i)))
		require.NoError(t, err)
	}
	requireCode(t, env.Status(ctx, list), types.ErrPluginNotAvailable)
	_, err = env.Add(ctx, list, env.Container(t, "one-too-many"))
	require.Error(t, err)
}

// TestConcurrentAdd adds containers in parallel plugin processes on a
// network that does not exist yet: they race to create the bridge and the
// NAT rule.
func TestConcurrentAdd(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	env := cnitest.NewEnv(t, binDir)
	list := confList(t, "net1", "1.1.0", netConf(env, "cni-pn0", v4Range, v6Range))
	const n = 6
	ctrs := make([]*cnitest.Container, n)
	for i := range ctrs {
		ctrs[i] = env.Container(t, fmt.Sprintf("ctr%d", i))
	}
	results := make([]*current.Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, c := range ctrs {
		wg.Go(func() { results[i], errs[i] = env.Add(ctx, list, c) })
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for i, c := range ctrs {
		require.NoError(t, errs[i])
		require.NoError(t, cnitest.CheckResult(ctx, env.Host, c, results[i], true))
		for _, a := range resultAddrs(results[i]) {
			assert.False(t, seen[a], "%s handed out twice", a)
			seen[a] = true
		}
		_, err := ctrs[0].NS.Ping(ctx, addrOf(results[i], false))
		assert.NoError(t, err)
	}
	for _, c := range ctrs {
		wg.Go(func() { assert.NoError(t, env.Del(ctx, list, c)) })
	}
	wg.Wait()
}

// TestReattach deletes and re-adds the same attachments over and over,
// four containers at once: each ADD right after its DEL must find the
// host veth name free (DEL returns only when the kernel has removed the
// pair, while a detached copy may still be waiting on the kernel) and the
// address released; at the end no veth, address or copy is left.
func TestReattach(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	env := cnitest.NewEnv(t, binDir)
	list := confList(t, "net1", "1.1.0", netConf(env, "cni-pn0", v4Range))
	const n, rounds = 4, 8
	var wg sync.WaitGroup
	for i := range n {
		c := env.Container(t, fmt.Sprintf("again%d", i))
		wg.Go(func() {
			for r := range rounds {
				res, err := env.Add(ctx, list, c)
				if !assert.NoError(t, err, "%s round %d", c.ID, r) {
					return
				}
				assert.NoError(t, cnitest.CheckResult(ctx, env.Host, c, res, true))
				if !assert.NoError(t, env.Del(ctx, list, c), "%s round %d", c.ID, r) {
					return
				}
				_, err = c.NS.Handle().LinkByName(c.IfName)
				assert.Error(t, err, "%s round %d: eth0 still there after DEL", c.ID, r)
			}
		})
	}
	wg.Wait()
	assertNoVeth(t, ctx, env)
	for i := range n {
		assert.Empty(t, held(t, env, "net1", fmt.Sprintf("again%d/eth0", i)))
	}
	require.NoError(t, cnitest.WaitDetached(ctx), "every detached copy ends")
}

// TestAddMissingNetns: ADD into a namespace that is gone fails with the
// spec's code 3, and the address allocated meanwhile (ADD allocates while
// it opens the namespace) is released: nothing is left.
func TestAddMissingNetns(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	env := cnitest.NewEnv(t, binDir)
	list := confList(t, "net1", "1.1.0", netConf(env, "cni-pn0", v4Range, v6Range))
	ns, err := podnet.NewNamespace(podnettest.UniqueName("cnitest-", 64)).Create(ctx)
	require.NoError(t, err)
	require.NoError(t, ns.Close())
	c := &cnitest.Container{NS: ns, ID: "ghost", IfName: "eth0"}
	_, err = env.Add(ctx, list, c)
	requireCode(t, err, types.ErrUnknownContainer)
	assert.Empty(t, held(t, env, "net1", "ghost/eth0"), "the allocation was released")
	assertNoVeth(t, ctx, env)
	// The network works on.
	res, err := env.Add(ctx, list, env.Container(t, "real"))
	require.NoError(t, err)
	// The failed ADD's allocation moved the round-robin position past .2
	// (the reference, which calls host-local only after opening the
	// namespace, would hand out .2 here).
	assert.Equal(t, netip.MustParseAddr("10.88.0.3"), addrOf(res, true))
}
