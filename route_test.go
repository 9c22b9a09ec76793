package podnet_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/podnettest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRoutes(t *testing.T) {
	ctx := testCtx(t)
	host := podnettest.Sandbox(t)
	ns := podnettest.Namespace(t)
	_, err := podnet.NewVethPair("vr").In(host).Address(pfx("10.5.0.1/24"), pfx("fd05::1/64")).
		Peer("eth0", ns).PeerAddress(pfx("10.5.0.2/24"), pfx("fd05::2/64")).Create(ctx)
	require.NoError(t, err)

	want := []podnet.Route{
		{Gateway: ip("10.5.0.1")}, // default v4
		{Gateway: ip("fd05::1")},  // default v6
		{Dst: pfx("172.16.0.0/16"), Gateway: ip("10.5.0.1"), Metric: 50}, // static via gateway
		{Dst: pfx("198.51.100.0/24"), Dev: "eth0"},                       // device route
		{Dst: pfx("203.0.113.0/24"), Gateway: ip("10.5.0.1"), Table: 100},
		{Dst: pfx("2001:db8:1::/48"), Gateway: ip("fd05::1"), Dev: "eth0", Metric: 7},
	}
	for _, r := range want {
		require.NoError(t, ns.AddRoute(ctx, r), r.String())
	}
	main, err := ns.Routes(ctx, 0)
	require.NoError(t, err)
	table100, err := ns.Routes(ctx, 100)
	require.NoError(t, err)
	got := append(main, table100...)
	for _, r := range want {
		r.Dev = "eth0"
		if r.Dst.Addr().Is6() || r.Gateway.Is6() {
			if r.Metric == 0 {
				r.Metric = 1024 // the kernel's default IPv6 metric
			}
		}
		assert.Contains(t, got, r)
	}
	// The same route twice is ErrExists.
	assert.ErrorIs(t, ns.AddRoute(ctx, want[2]), podnet.ErrExists)

	for _, r := range want {
		require.NoError(t, ns.DelRoute(ctx, r), r.String())
	}
	main, err = ns.Routes(ctx, 0)
	require.NoError(t, err)
	for _, r := range main {
		assert.False(t, r.Gateway.IsValid(), "route %v left after delete", r)
	}
	assert.ErrorIs(t, ns.DelRoute(ctx, want[2]), podnet.ErrNotFound)
}

// TestBadInput checks that each kind of bad input gets an error that names
// the problem and matches the right sentinel, and that nothing is created.
func TestBadInput(t *testing.T) {
	ctx := testCtx(t)
	host := podnettest.Sandbox(t)
	ns := podnettest.Namespace(t)
	br, err := podnet.NewBridge("br0").In(host).Address(pfx("10.7.0.1/24")).Create(ctx)
	require.NoError(t, err)
	closedNS := podnettest.Namespace(t)
	require.NoError(t, closedNS.Close())
	closedBr, err := podnet.NewBridge("brc").In(host).Create(ctx)
	require.NoError(t, err)
	require.NoError(t, closedBr.Close())
	_, err = podnet.NewVethPair("dup").In(host).Peer("dupp", ns).Create(ctx)
	require.NoError(t, err)
	hostBefore, nsBefore := linkNames(t, host), linkNames(t, ns)

	cases := []struct {
		name     string
		do       func() error
		sentinel error
		says     string
	}{
		{"empty bridge name", func() error { _, err := podnet.NewBridge("").In(host).Create(ctx); return err }, podnet.ErrInvalidName, "empty"},
		{"long bridge name", func() error { _, err := podnet.NewBridge("abcdefghijklmnop").In(host).Create(ctx); return err }, podnet.ErrInvalidName, "longer than 15"},
		{"illegal veth name", func() error {
			_, err := podnet.NewVethPair("a;b").In(host).Peer("x", ns).Create(ctx)
			return err
		}, podnet.ErrInvalidName, "characters"},
		{"peer name with newline", func() error {
			_, err := podnet.NewVethPair("ok").In(host).Peer("x\ny", ns).Create(ctx)
			return err
		}, podnet.ErrInvalidName, "characters"},
		{"non-ascii name", func() error { _, err := podnet.NewBridge("brü").In(host).Create(ctx); return err }, podnet.ErrInvalidName, "characters"},
		{"duplicate bridge", func() error { _, err := podnet.NewBridge("br0").In(host).Create(ctx); return err }, podnet.ErrExists, `"br0"`},
		{"duplicate veth", func() error {
			_, err := podnet.NewVethPair("dup").In(host).Peer("fresh", ns).Create(ctx)
			return err
		}, podnet.ErrExists, `"dup"`},
		{"same names both ends", func() error {
			_, err := podnet.NewVethPair("same").In(host).Peer("same", nil).Create(ctx)
			return err
		}, podnet.ErrInvalidName, "both ends"},
		{"zero address", func() error {
			_, err := podnet.NewBridge("brz").In(host).Address(netip.Prefix{}).Create(ctx)
			return err
		}, podnet.ErrInvalidAddress, "not a valid"},
		{"multicast address", func() error {
			_, err := podnet.NewBridge("brm").In(host).Address(pfx("224.0.0.1/24")).Create(ctx)
			return err
		}, podnet.ErrInvalidAddress, "unicast"},
		{"gateway of wrong family", func() error {
			return ns.AddRoute(ctx, podnet.Route{Dst: pfx("10.0.0.0/8"), Gateway: ip("fd00::1")})
		}, podnet.ErrInvalidAddress, "different families"},
		{"gateway outside connected prefixes", func() error { return ns.AddDefaultRoute(ctx, ip("10.200.0.1")) }, podnet.ErrInvalidRoute, "not in any connected prefix"},
		{"route with host bits", func() error {
			return ns.AddRoute(ctx, podnet.Route{Dst: pfx("10.1.2.3/8"), Dev: "lo"})
		}, podnet.ErrInvalidRoute, "host bits"},
		{"route to nowhere", func() error { return ns.AddRoute(ctx, podnet.Route{Dst: pfx("10.0.0.0/8")}) }, podnet.ErrInvalidRoute, "gateway or a device"},
		{"route via missing device", func() error {
			return ns.AddRoute(ctx, podnet.Route{Dst: pfx("10.0.0.0/8"), Dev: "nope0"})
		}, podnet.ErrNotFound, `"nope0"`},
		{"bad MTU", func() error { _, err := podnet.NewBridge("brmtu").In(host).MTU(20).Create(ctx); return err }, podnet.ErrInvalidOption, "MTU"},
		{"bad MAC", func() error {
			_, err := podnet.NewVethPair("vmac").In(host).MAC([]byte{1, 2, 3, 4, 5, 6}).Create(ctx)
			return err
		}, podnet.ErrInvalidOption, "multicast"},
		{"IPv6 off with IPv6 address", func() error {
			_, err := podnet.NewVethPair("v6").In(host).IPv6(false).PeerAddress(pfx("fd00::2/64")).Create(ctx)
			return err
		}, podnet.ErrInvalidOption, "IPv6(false)"},
		{"master in another namespace", func() error {
			_, err := podnet.NewVethPair("vm").In(ns).Master(br).Create(ctx)
			return err
		}, podnet.ErrInvalidOption, "not the host end's"},
		{"closed peer namespace", func() error {
			_, err := podnet.NewVethPair("vc").In(host).Peer("eth0", closedNS).Create(ctx)
			return err
		}, podnet.ErrClosed, "peer namespace"},
		{"closed host namespace", func() error { _, err := podnet.NewBridge("brcl").In(closedNS).Create(ctx); return err }, podnet.ErrClosed, ""},
		{"closed master", func() error {
			_, err := podnet.NewVethPair("vcm").In(host).Master(closedBr).Create(ctx)
			return err
		}, podnet.ErrClosed, `"brc"`},
		{"address on closed bridge", func() error { _, err := closedBr.Addresses(ctx); return err }, podnet.ErrClosed, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			require.Error(t, err)
			assert.ErrorIs(t, err, tc.sentinel)
			assert.True(t, strings.HasPrefix(err.Error(), "podnet: "), err.Error())
			assert.Contains(t, err.Error(), tc.says)
		})
	}
	assert.Equal(t, hostBefore, linkNames(t, host), "bad input left links in the host")
	assert.Equal(t, nsBefore, linkNames(t, ns), "bad input left links in the namespace")
}

func TestValidateAllProblemsAtOnce(t *testing.T) {
	_, err := podnet.NewVethPair("bad name").Peer("", nil).MTU(1).MAC([]byte{0, 0, 0, 0, 0, 0}).
		PeerAddress(netip.Prefix{}).Create(testCtx(t))
	require.Error(t, err)
	for _, part := range []string{"bad name", "MTU 1", "all zeros", "not a valid"} {
		assert.Contains(t, err.Error(), part)
	}
}
