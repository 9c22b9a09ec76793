package cnicompare

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/podnet/podnet/cmd/podnet-cni/cnitest"
)

// binDir holds the three plugin binaries, built once by TestMain.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "podnet-cni-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		for _, b := range []struct{ name, pkg, workdir string }{
			{"bridge", "github.com/containernetworking/plugins/plugins/main/bridge", "."},
			{"host-local", "github.com/containernetworking/plugins/plugins/ipam/host-local", "."},
			{"podnet-cni", "./cmd/podnet-cni", "../.."}, // the root module, with its own dependencies
		} {
			if _, err := cnitest.Build(dir, b.name, b.pkg, b.workdir); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		binDir = dir
		return m.Run()
	}())
}

// impls are the two implementations of one configuration: the type of
// the plugin is all that differs.
var impls = []struct{ name, typ string }{
	{"podnet", "podnet-cni"},
	{"reference", "bridge"},
}

// bridgeConf is a configuration as a Kubernetes node might use it.
func bridgeConf(typ, dataDir string, dual bool) map[string]any {
	ranges := [][]map[string]any{{{"subnet": "10.88.0.0/16"}}}
	if dual {
		ranges = append(ranges, []map[string]any{{"subnet": "fd20:88::/64"}})
	}
	return map[string]any{
		"type":             typ,
		"bridge":           "cni0",
		"isGateway":        true,
		"isDefaultGateway": true,
		"ipMasq":           true,
		"mtu":              1450,
		"hairpinMode":      true,
		"ipam": map[string]any{
			"type":    "host-local",
			"ranges":  ranges,
			"routes":  []map[string]any{{"dst": "198.51.100.0/24"}},
			"dataDir": dataDir,
		},
	}
}

func confList(tb testing.TB, env *cnitest.Env, typ string, dual bool) *libcni.NetworkConfigList {
	tb.Helper()
	list, err := cnitest.ConfList("k8s-pod-network", "1.1.0", bridgeConf(typ, env.DataDir, dual))
	require.NoError(tb, err)
	return list
}

// observed is what one implementation did to one container, in terms
// that must be the same for both.
type observed struct {
	IPs      []string // address and gateway of each result IP
	Routes   []string // the result's routes
	State    cnitest.State
	Reaches  []netip.Addr // the other containers' addresses it pings
	SeenAs   []netip.Addr // its source address as the internet sees it
	Detached bool         // DEL, run twice, removed its interface
}

// TestSameAsReference attaches three containers to a dual-stack network
// with each implementation and compares results, kernel state (addresses,
// routes, MTU), reachability and masquerading, then DEL and the address
// the next ADD gets. CHECK must pass for both.
func TestSameAsReference(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	got := map[string][]observed{}
	for _, impl := range impls {
		env := cnitest.NewEnv(t, binDir)
		inet := env.Internet(t)
		list := confList(t, env, impl.typ, true)
		var ctrs []*cnitest.Container
		var results []*current.Result
		for i := range 3 {
			c := env.Container(t, fmt.Sprintf("ctr%d", i))
			res, err := env.Add(ctx, list, c)
			require.NoError(t, err, impl.name)
			require.NoError(t, cnitest.CheckResult(ctx, env.Host, c, res, true), impl.name)
			require.NoError(t, env.Check(ctx, list, c), impl.name)
			ctrs, results = append(ctrs, c), append(results, res)
		}
		var obs []observed
		for i, c := range ctrs {
			var o observed
			for _, ipc := range results[i].IPs {
				o.IPs = append(o.IPs, ipc.Address.String()+" gw "+ipc.Gateway.String())
			}
			for _, r := range results[i].Routes {
				o.Routes = append(o.Routes, r.String())
			}
			slices.Sort(o.Routes)
			st, err := cnitest.Observe(ctx, c)
			require.NoError(t, err)
			o.State = st
			for j, res := range results {
				if j == i {
					continue
				}
				for _, ipc := range res.IPs {
					a, _ := netip.AddrFromSlice(ipc.Address.IP)
					if _, err := c.NS.Ping(ctx, a.Unmap()); err == nil {
						o.Reaches = append(o.Reaches, a.Unmap())
					}
				}
			}
			for _, dst := range []netip.Addr{inet.Addr4, inet.Addr6} {
				seen, err := inet.SeenFrom(ctx, c.NS, dst)
				assert.NoError(t, err, "%s: %s -> %s", impl.name, c.ID, dst)
				o.SeenAs = append(o.SeenAs, seen)
			}
			obs = append(obs, o)
		}
		for i, c := range ctrs {
			require.NoError(t, env.Del(ctx, list, c), impl.name)
			require.NoError(t, env.Del(ctx, list, c), impl.name)
			_, err := c.NS.Handle().LinkByName("eth0")
			obs[i].Detached = err != nil
		}
		// Both allocate round-robin: the next container gets the next
		// address, not a released one.
		res, err := env.Add(ctx, list, env.Container(t, "next"))
		require.NoError(t, err, impl.name)
		var o observed
		for _, ipc := range res.IPs {
			o.IPs = append(o.IPs, ipc.Address.String()+" gw "+ipc.Gateway.String())
		}
		got[impl.name] = append(obs, o)
	}
	ref, pn := got["reference"], got["podnet"]
	require.Len(t, pn, len(ref))
	for i := range ref {
		assert.Equal(t, ref[i], pn[i], "container %d: reference (expected) vs podnet-cni (actual)", i)
	}
	// And what both did is what was asked.
	assert.Equal(t, []string{"10.88.0.2/16 gw 10.88.0.1", "fd20:88::2/64 gw fd20:88::1"}, pn[0].IPs)
	routes := []string{"10.88.0.0/16", "198.51.100.0/24 via 10.88.0.1", "default via 10.88.0.1", "default6 via fd20:88::1", "fd20:88::/64"}
	slices.Sort(routes)
	assert.Equal(t, routes, pn[0].State.Routes)
	assert.Equal(t, 1450, pn[0].State.MTU)
	assert.Len(t, pn[0].Reaches, 4)
	assert.Equal(t, []netip.Addr{netip.MustParseAddr("203.0.113.2"), netip.MustParseAddr("2001:db8:5::2")}, pn[0].SeenAs)
	assert.True(t, pn[0].Detached)
	assert.Equal(t, []string{"10.88.0.5/16 gw 10.88.0.1", "fd20:88::5/64 gw fd20:88::1"}, pn[3].IPs)
}

// TestRequestedSameAsReference asks both implementations for addresses and
// a MAC, through the "ips" and "mac" capabilities and through CNI_ARGS,
// and compares what the containers get, and that a taken address is
// refused by both, leaving the container without an interface.
func TestRequestedSameAsReference(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type outcome struct {
		IPs     []string // each container's result addresses, or its error
		MACs    []string // each container's eth0 MAC
		Refused bool     // the taken address was refused
		Left    bool     // the refused container has an eth0
	}
	got := map[string]outcome{}
	for _, impl := range impls {
		env := cnitest.NewEnv(t, binDir)
		conf := bridgeConf(impl.typ, env.DataDir, true)
		conf["capabilities"] = map[string]bool{"ips": true, "mac": true}
		list, err := cnitest.ConfList("k8s-pod-network", "1.1.0", conf)
		require.NoError(t, err)
		var o outcome
		c1 := env.Container(t, "caps")
		c1.CapabilityArgs = map[string]any{"ips": []string{"10.88.7.7/16", "fd20:88::7:7/64"}, "mac": "02:00:00:07:07:07"}
		c2 := env.Container(t, "args")
		c2.Args = [][2]string{{"IgnoreUnknown", "1"}, {"IP", "10.88.8.8"}, {"MAC", "02:00:00:08:08:08"}}
		for _, c := range []*cnitest.Container{c1, c2} {
			res, err := env.Add(ctx, list, c)
			require.NoError(t, err, impl.name)
			require.NoError(t, cnitest.CheckResult(ctx, env.Host, c, res, true), impl.name)
			var ips []string
			for _, ipc := range res.IPs {
				ips = append(ips, ipc.Address.String())
			}
			o.IPs = append(o.IPs, strings.Join(ips, " "))
			l, err := c.NS.Handle().LinkByName("eth0")
			require.NoError(t, err, impl.name)
			o.MACs = append(o.MACs, l.Attrs().HardwareAddr.String())
		}
		c3 := env.Container(t, "taken")
		c3.Args = [][2]string{{"IP", "10.88.7.7"}}
		_, err = env.Add(ctx, list, c3)
		o.Refused = err != nil
		_, lerr := c3.NS.Handle().LinkByName("eth0")
		o.Left = lerr == nil
		got[impl.name] = o
	}
	assert.Equal(t, got["reference"], got["podnet"], "reference (expected) vs podnet-cni (actual)")
	assert.Equal(t, outcome{
		// The pool's next address follows the last requested one, as in
		// host-local.
		IPs:     []string{"10.88.7.7/16 fd20:88::7:7/64", "10.88.8.8/16 fd20:88::7:8/64"},
		MACs:    []string{"02:00:00:07:07:07", "02:00:00:08:08:08"},
		Refused: true,
	}, got["podnet"])
}

// TestRangeSetSameAsReference walks a range set of two ranges with both
// implementations: they hand out the same addresses, in the same order,
// after a release in the first range (the walk goes on in the second
// range before coming back), and both refuse when the set is full.
func TestRangeSetSameAsReference(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got := map[string][]string{}
	for _, impl := range impls {
		env := cnitest.NewEnv(t, binDir)
		conf := bridgeConf(impl.typ, env.DataDir, false)
		// No gateways on the bridge: bridge refuses a second IPv4 one
		// (10.89.0.1 beside 10.88.0.1) unless forceAddress, which would
		// replace the first; podnet-cni puts both.
		conf["isGateway"], conf["isDefaultGateway"] = false, false
		ipam := conf["ipam"].(map[string]any)
		ipam["ranges"] = [][]map[string]any{{
			{"subnet": "10.88.0.0/24", "rangeStart": "10.88.0.10", "rangeEnd": "10.88.0.12"},
			{"subnet": "10.89.0.0/24", "rangeStart": "10.89.0.10", "rangeEnd": "10.89.0.11"},
		}}
		list, err := cnitest.ConfList("k8s-pod-network", "1.1.0", conf)
		require.NoError(t, err)
		var ctrs []*cnitest.Container
		add := func() {
			c := env.Container(t, fmt.Sprintf("ctr%d", len(ctrs)))
			ctrs = append(ctrs, c)
			res, err := env.Add(ctx, list, c)
			if err != nil {
				got[impl.name] = append(got[impl.name], "refused")
				return
			}
			require.NoError(t, cnitest.CheckResult(ctx, env.Host, c, res, false), impl.name)
			got[impl.name] = append(got[impl.name], res.IPs[0].Address.String())
		}
		for range 4 {
			add()
		}
		require.NoError(t, env.Del(ctx, list, ctrs[1]), impl.name)
		got[impl.name] = append(got[impl.name], "released "+got[impl.name][1])
		for range 3 {
			add()
		}
	}
	assert.Equal(t, got["reference"], got["podnet"], "reference (expected) vs podnet-cni (actual)")
	assert.Equal(t, []string{"10.88.0.10/24", "10.88.0.11/24", "10.88.0.12/24", "10.89.0.10/24",
		"released 10.88.0.11/24", "10.89.0.11/24", "10.88.0.11/24", "refused"}, got["podnet"])
}
