package main

import (
	"bytes"
	"context"
	"sort"
	"strings"
	"testing"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/podnettest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
)

func runCmd(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func TestUsage(t *testing.T) {
	code, out, _ := runCmd("-h")
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "usage: podnet")
	code, _, errOut := runCmd()
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "usage")
	code, _, errOut = runCmd("frobnicate")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, `unknown command "frobnicate"`)
	code, _, _ = runCmd("ls", "-bogus")
	assert.Equal(t, 2, code)
	code, _, errOut = runCmd("ls", "extra")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "unexpected arguments")
	code, _, errOut = runCmd("ls", "-netns", "no-such-ns-here")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "not found")
}

// TestLsAndSweep plants links in a named sandbox: one marked by a process
// that does not exist, one marked by this (live) process, one foreign.
// ls shows them; sweep -n removes nothing; sweep removes only the dead one.
// -named keeps ls and sweep out of other tests' namespaces (their dead
// owners' objects are theirs to sweep), and keeps those tests' sweeps out
// of this one's.
func TestLsAndSweep(t *testing.T) {
	ctx := context.Background()
	sandbox := podnettest.NamedNamespace(t, "pncmd-")
	dead := podnet.Mark{Owner: podnet.Owner{PID: 4194303, Start: 1}, Label: "ghost"}.String()
	live := podnet.Mark{Owner: podnet.Self(), Label: "mine"}.String()
	for name, alias := range map[string]string{"deadbr": dead, "livebr": live, "foreign": "not podnet"} {
		require.NoError(t, sandbox.Handle().LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}))
		l, err := sandbox.Handle().LinkByName(name)
		require.NoError(t, err)
		require.NoError(t, sandbox.Handle().LinkSetAlias(l, alias))
	}
	code, out, errOut := runCmd("ls", "-netns", sandbox.Name(), "-named", sandbox.Name())
	require.Equal(t, 0, code, errOut)
	assert.Regexp(t, `link\s+deadbr\s+-\s+4194303\s+no\s+ghost`, out)
	assert.Regexp(t, `link\s+livebr\s+-\s+\d+\s+yes\s+mine`, out)
	assert.NotContains(t, out, "foreign")

	code, out, _ = runCmd("sweep", "-n", "-netns", sandbox.Name(), "-named", sandbox.Name())
	require.Equal(t, 0, code)
	assert.Contains(t, out, "would remove link deadbr")
	assert.NotContains(t, out, "livebr")
	names := func() string {
		links, err := sandbox.Links(ctx)
		require.NoError(t, err)
		var s []string
		for _, l := range links {
			s = append(s, l.Attrs().Name)
		}
		sort.Strings(s)
		return strings.Join(s, " ")
	}
	assert.Contains(t, names(), "deadbr", "dry run removed something")

	code, out, errOut = runCmd("sweep", "-netns", sandbox.Name(), "-named", sandbox.Name())
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "removed link deadbr")
	assert.Equal(t, "foreign livebr lo", names())
}
