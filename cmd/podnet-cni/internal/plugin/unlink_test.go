package plugin

import (
	"context"
	"os"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/podnettest"
)

// TestMain lets the test binary stand in for the plugin binary as the
// detached copy DEL starts (Plugin.Exe).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == UnlinkArg {
		os.Exit(UnlinkMain(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// attachment makes a veth pair like an ADD's: host end on a bridge in
// host, with an alias, peer eth0 in a container namespace.
func attachment(t *testing.T, host *podnet.Namespace, alias string) (netlink.Link, *podnet.Namespace) {
	t.Helper()
	ctx := context.Background()
	br, err := podnet.NewBridge("br0").In(host).Adopt().Create(ctx)
	require.NoError(t, err)
	ctr := podnettest.Namespace(t)
	v, err := podnet.NewVethPair("pnctest0").In(host).Master(br).Peer("eth0", ctr).Create(ctx)
	require.NoError(t, err)
	l, err := host.Handle().LinkByIndex(v.Index())
	require.NoError(t, err)
	require.NoError(t, host.Handle().LinkSetAlias(l, alias))
	l, err = host.Handle().LinkByIndex(v.Index())
	require.NoError(t, err)
	return l, ctr
}

// requireGone fails unless both ends of the pair are gone, now.
func requireGone(t *testing.T, host, ctr *podnet.Namespace, name string) {
	t.Helper()
	_, err := host.Handle().LinkByName(name)
	require.True(t, isGone(err), "host end %s still there (%v)", name, err)
	_, err = ctr.Handle().LinkByName("eth0")
	require.True(t, isGone(err), "container end still there (%v)", err)
}

// TestUnlink deletes a pair through a detached copy of the test binary,
// and falls back to deleting it in-process when the copy cannot do it.
// Either way both ends are gone when unlink returns.
func TestUnlink(t *testing.T) {
	host := podnettest.Sandbox(t)
	exe, err := os.Executable()
	require.NoError(t, err)
	for _, tc := range []struct {
		name, exe    string
		wantDetached bool
	}{
		{"detached", exe, true},
		{"copy exits without deleting", "/bin/true", false},
		{"copy fails", "/bin/false", false},
		{"no such executable", "/nonexistent/podnet-cni", false},
		{"not detached", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, ctr := attachment(t, host, "podnet-cni:test/"+tc.name)
			p := &Plugin{Host: host, Exe: tc.exe}
			detached, err := p.unlink(host, l, true)
			require.NoError(t, err)
			assert.Equal(t, tc.wantDetached, detached)
			requireGone(t, host, ctr, l.Attrs().Name)
		})
	}
}

// TestUnlinkMainRefuses checks that the copy deletes only the link DEL
// looked at: same index, name and alias.
func TestUnlinkMainRefuses(t *testing.T) {
	host := podnettest.Sandbox(t)
	l, ctr := attachment(t, host, "podnet-cni:test/ours")
	idx := strconv.Itoa(l.Attrs().Index)
	var code int
	run := func(args ...string) {
		require.NoError(t, host.Do(func() error { code = UnlinkMain(args); return nil }))
	}
	run(idx, l.Attrs().Name, "podnet-cni:test/other")
	assert.Equal(t, 1, code, "another alias")
	run(idx, "pncother0", "podnet-cni:test/ours")
	assert.Equal(t, 1, code, "another name")
	run("x", l.Attrs().Name, "podnet-cni:test/ours")
	assert.Equal(t, 2, code, "bad index")
	_, err := host.Handle().LinkByIndex(l.Attrs().Index)
	require.NoError(t, err, "refused: the link stays")

	run(idx, l.Attrs().Name, "podnet-cni:test/ours")
	assert.Equal(t, 0, code)
	requireGone(t, host, ctr, l.Attrs().Name)
	run(idx, l.Attrs().Name, "podnet-cni:test/ours")
	assert.Equal(t, 0, code, "already gone counts as deleted")
}
