package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/podnet/podnet/podnettest"
)

// TestPluginConcurrent runs the commands in-process, many at once, as
// parallel plugin processes would, with a sandbox as the host: under the
// race detector this covers the plugin's own code, which the binary tests
// run out of its reach.
func TestPluginConcurrent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	exe, err := os.Executable()
	require.NoError(t, err)
	// DEL deletes through detached copies of the test binary (TestMain).
	p := &Plugin{Host: podnettest.Sandbox(t), Exe: exe}
	conf := map[string]any{
		"cniVersion": "1.1.0", "name": "net1", "type": "podnet-cni",
		"bridge": "cni-pn0", "isDefaultGateway": true, "ipMasq": true,
		"ipam": map[string]any{"type": "host-local", "dataDir": t.TempDir(),
			"ranges": [][]map[string]any{{{"subnet": "10.88.0.0/24"}}, {{"subnet": "fd20:88::/64"}}}},
	}
	stdin := func(extra map[string]any) []byte {
		m := map[string]any{}
		for k, v := range conf {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		b, err := json.Marshal(m)
		require.NoError(t, err)
		return b
	}
	const n = 8
	args := make([]*skel.CmdArgs, n)
	for i := range args {
		ns := podnettest.NamedNamespace(t, "pncni-")
		args[i] = &skel.CmdArgs{ContainerID: fmt.Sprintf("ctr%d", i), Netns: ns.Path(), IfName: "eth0", StdinData: stdin(nil)}
	}
	results := make([]*current.Result, n)
	var wg sync.WaitGroup
	for i, a := range args {
		wg.Go(func() {
			res, err := p.Add(ctx, a)
			if assert.NoError(t, err) {
				results[i], err = current.NewResultFromResult(res)
				assert.NoError(t, err)
			}
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, res := range results {
		require.NotNil(t, res, "ADD %d failed", i)
		require.Len(t, res.IPs, 2)
		for _, ipc := range res.IPs {
			assert.False(t, seen[ipc.Address.String()], "%s handed out twice", ipc.Address)
			seen[ipc.Address.String()] = true
		}
	}
	for i, a := range args {
		wg.Go(func() {
			check := *a
			check.StdinData = stdin(map[string]any{"prevResult": results[i]})
			assert.NoError(t, p.Check(ctx, &check))
			assert.NoError(t, p.Del(ctx, a))
			assert.NoError(t, p.Del(ctx, a))
		})
	}
	wg.Wait()
	assert.NoError(t, p.GC(ctx, &skel.CmdArgs{StdinData: stdin(map[string]any{"cni.dev/valid-attachments": []any{}})}))
	assert.NoError(t, p.Status(ctx, &skel.CmdArgs{StdinData: stdin(nil)}))
	installed, err := masquerade(p.Host, &NetConf{Name: "net1", Bridge: "cni-pn0"}, netip.MustParsePrefix("10.88.0.0/24")).Installed(ctx)
	require.NoError(t, err)
	assert.False(t, installed, "GC of an empty network removes its masquerade rule")
}
