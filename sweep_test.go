package podnet_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/podnettest"
)

// TestSweepNamed plants a dead owner's link in two named namespaces:
// List and Sweep with SweepNamed see and remove only the one whose name
// has the prefix.
func TestSweepNamed(t *testing.T) {
	ctx := testCtx(t)
	host := podnettest.Sandbox(t)
	dead := podnet.Mark{Owner: podnet.Owner{PID: 4194303, Start: 1}, Label: "ghost"}.String()
	a, b := podnettest.NamedNamespace(t, "pnswa-"), podnettest.NamedNamespace(t, "pnswb-")
	for _, ns := range []*podnet.Namespace{a, b} {
		require.NoError(t, ns.Handle().LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "deadbr"}}))
		l, err := ns.Handle().LinkByName("deadbr")
		require.NoError(t, err)
		require.NoError(t, ns.Handle().LinkSetAlias(l, dead))
	}
	in := func(objs []podnet.Object, ns *podnet.Namespace) bool {
		for _, o := range objs {
			if o.Kind == "link" && o.Name == "deadbr" && o.Namespace == ns.Name() {
				return true
			}
		}
		return false
	}

	listed, err := podnet.List(ctx, podnet.SweepIn(host), podnet.SweepNamed(a.Name()))
	require.NoError(t, err)
	assert.True(t, in(listed, a), "a's dead link listed")
	assert.False(t, in(listed, b), "b is outside the prefix")

	removed, err := podnet.Sweep(ctx, podnet.SweepIn(host), podnet.SweepNamed(a.Name()))
	require.NoError(t, err)
	assert.True(t, in(removed, a))
	assert.False(t, in(removed, b))
	_, err = a.Handle().LinkByName("deadbr")
	assert.Error(t, err, "a's dead link removed")
	_, err = b.Handle().LinkByName("deadbr")
	require.NoError(t, err, "b's dead link left alone")

	removed, err = podnet.Sweep(ctx, podnet.SweepIn(host), podnet.SweepNamed(b.Name()))
	require.NoError(t, err)
	assert.True(t, in(removed, b))
	_, err = b.Handle().LinkByName("deadbr")
	assert.Error(t, err, "b's dead link removed")
}
