package podnet_test

import (
	"testing"
	"time"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/podnettest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBridgePortOptions(t *testing.T) {
	ctx := testCtx(t)
	host := podnettest.Sandbox(t)
	br, err := podnet.NewBridge("br0").In(host).Address(pfx("10.40.0.1/24")).Create(ctx)
	require.NoError(t, err)
	a, b := podnettest.Namespace(t), podnettest.Namespace(t)
	va, err := podnet.NewVethPair("va").In(host).Master(br).Hairpin(true).Isolated(true).
		Peer("eth0", a).PeerAddress(pfx("10.40.0.2/24")).Create(ctx)
	require.NoError(t, err)
	_, err = podnet.NewVethPair("vb").In(host).Master(br).Isolated(true).
		Peer("eth0", b).PeerAddress(pfx("10.40.0.3/24")).Create(ctx)
	require.NoError(t, err)

	pi, err := host.Handle().LinkGetProtinfo(link(t, host, va.Name()))
	require.NoError(t, err)
	assert.True(t, pi.Hairpin)
	assert.True(t, pi.Isolated)

	// Isolated ports reach the bridge (the gateway) but not each other.
	quick := podnet.PingOptions{Count: 2, Timeout: time.Second}
	_, err = a.Ping(ctx, ip("10.40.0.1"))
	require.NoError(t, err)
	_, err = a.Ping(ctx, ip("10.40.0.3"), quick)
	require.ErrorIs(t, err, podnet.ErrUnreachable)

	off := false
	require.NoError(t, br.SetPortOptions(ctx, "va", podnet.PortOptions{Isolated: &off, Hairpin: &off}))
	pi, err = host.Handle().LinkGetProtinfo(link(t, host, "va"))
	require.NoError(t, err)
	assert.False(t, pi.Hairpin)
	assert.False(t, pi.Isolated)
	_, err = a.Ping(ctx, ip("10.40.0.3"))
	require.NoError(t, err, "a port that is no longer isolated reaches an isolated one")
	assert.ErrorIs(t, br.SetPortOptions(ctx, "nope", podnet.PortOptions{Isolated: &off}), podnet.ErrNotFound)
}
