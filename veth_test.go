package podnet_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/podnettest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// twoOnABridge builds the core of the seed inside a sandbox: a bridge with
// a gateway address and two namespaces attached to it.
func twoOnABridge(t *testing.T, dual bool) (host, a, b *podnet.Namespace, br *podnet.Bridge, va, vb *podnet.VethPair) {
	t.Helper()
	ctx := testCtx(t)
	host = podnettest.Sandbox(t)
	a, b = podnettest.Namespace(t), podnettest.Namespace(t)
	spec := podnet.NewBridge("br0").In(host).Address(pfx("192.168.52.1/24")).MTU(1400)
	if dual {
		spec.Address(pfx("fd52::1/64"))
	}
	br, err := spec.Create(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, br.Close()) })
	for i, ns := range []*podnet.Namespace{a, b} {
		vs := podnet.NewVethPair(fmt.Sprintf("veth-%c", 'a'+i)).In(host).Master(br).MTU(1400).
			Peer("eth0", ns).PeerAddress(pfx(fmt.Sprintf("192.168.52.%d/24", i+2)))
		if dual {
			vs.PeerAddress(pfx(fmt.Sprintf("fd52::%d/64", i+2)))
		}
		v, err := vs.Create(ctx)
		require.NoError(t, err)
		t.Cleanup(func() { assert.NoError(t, v.Close()) })
		require.NoError(t, ns.AddDefaultRoute(ctx, ip("192.168.52.1")))
		if i == 0 {
			va = v
		} else {
			vb = v
		}
	}
	return
}

func TestBridgeAndVethKernelState(t *testing.T) {
	ctx := testCtx(t)
	host, a, _, br, va, _ := twoOnABridge(t, true)

	bl := link(t, host, "br0")
	assert.Equal(t, "bridge", bl.Type())
	assert.Equal(t, 1400, bl.Attrs().MTU)
	assert.NotZero(t, bl.Attrs().Flags&net.FlagUp)
	m, ok := podnet.ParseMark(bl.Attrs().Alias)
	require.True(t, ok, "bridge alias %q is not an ownership mark", bl.Attrs().Alias)
	assert.Equal(t, podnet.Self(), m.Owner)
	mac, err := br.MAC(ctx)
	require.NoError(t, err)
	assert.Equal(t, bl.Attrs().HardwareAddr, mac)
	addrs, err := br.Addresses(ctx)
	require.NoError(t, err)
	assert.Contains(t, addrs, pfx("192.168.52.1/24"))
	assert.Contains(t, addrs, pfx("fd52::1/64"))

	hl := link(t, host, "veth-a")
	assert.Equal(t, br.Index(), hl.Attrs().MasterIndex, "host end is not enslaved to the bridge")
	assert.Equal(t, 1400, hl.Attrs().MTU)
	assert.NotZero(t, hl.Attrs().Flags&net.FlagUp)
	assert.Equal(t, va.Index(), hl.Attrs().Index)

	pl := link(t, a, "eth0")
	assert.Equal(t, "veth", pl.Type())
	assert.Equal(t, 1400, pl.Attrs().MTU)
	assert.NotZero(t, pl.Attrs().Flags&net.FlagUp)
	assert.Equal(t, va.PeerIndex(), pl.Attrs().Index)
	assert.Equal(t, va.PeerMAC(), pl.Attrs().HardwareAddr)
	peerAddrs, err := a.Addresses(ctx, "eth0")
	require.NoError(t, err)
	assert.Contains(t, peerAddrs, pfx("192.168.52.2/24"))
	assert.Contains(t, peerAddrs, pfx("fd52::2/64"))

	// The IPv6 addresses podnet added are not tentative: usable at once.
	// (The kernel's own link-local address skips DAD too, but the kernel
	// clears its tentative flag from a work queue, a moment later.)
	v6, err := a.Handle().AddrList(pl, netlink.FAMILY_V6)
	require.NoError(t, err)
	checked := 0
	for _, ad := range v6 {
		if ad.IP.IsLinkLocalUnicast() {
			continue
		}
		checked++
		assert.Zero(t, ad.Flags&unix.IFA_F_TENTATIVE, "address %v is tentative", ad.IPNet)
	}
	assert.Equal(t, 1, checked)

	routes, err := a.Routes(ctx, 0)
	require.NoError(t, err)
	assert.Contains(t, routes, podnet.Route{Gateway: ip("192.168.52.1"), Dev: "eth0"})
}

func TestTCPBothWaysRightAfterCreate(t *testing.T) {
	for _, tc := range []struct {
		name         string
		aAddr, bAddr string
	}{
		{"ipv4", "192.168.52.2", "192.168.52.3"},
		{"ipv6", "[fd52::2]", "[fd52::3]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			_, a, b, _, _, _ := twoOnABridge(t, true)
			la, err := a.Listen(ctx, "tcp", tc.aAddr+":7000")
			require.NoError(t, err)
			defer la.Close()
			lb, err := b.Listen(ctx, "tcp", tc.bAddr+":7000")
			require.NoError(t, err)
			defer lb.Close()
			echoServer(la)
			echoServer(lb)
			require.NoError(t, tcpRoundTrip(ctx, b, tc.aAddr+":7000"), "b -> a")
			require.NoError(t, tcpRoundTrip(ctx, a, tc.bAddr+":7000"), "a -> b")
		})
	}
}

func TestIPv4OnlyPairHasNoIPv6(t *testing.T) {
	ctx := testCtx(t)
	host := podnettest.Sandbox(t)
	ns := podnettest.Namespace(t)
	v, err := podnet.NewVethPair("").In(host).Peer("", ns).PeerAddress(pfx("10.1.0.2/24")).Create(ctx)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(v.Name(), "pn"), v.Name())
	assert.LessOrEqual(t, len(v.Name()), 15)
	// Give IPv6 time to do what it would (DAD, MLD, router solicitation).
	time.Sleep(1500 * time.Millisecond)
	for _, side := range []struct {
		ns   *podnet.Namespace
		name string
	}{{host, v.Name()}, {ns, v.PeerName()}} {
		val, err := side.ns.Sysctl("net/ipv6/conf/" + side.name + "/addr_gen_mode")
		require.NoError(t, err)
		assert.Equal(t, "1", val, side.name)
		addrs, err := side.ns.Addresses(ctx, side.name)
		require.NoError(t, err)
		for _, a := range addrs {
			assert.True(t, a.Addr().Is4(), "%s has %v", side.name, a)
		}
		// Not one IPv6 packet left either end.
		out, err := side.ns.Command("cat", "/proc/net/dev_snmp6/"+side.name).Output()
		require.NoError(t, err)
		assert.Regexp(t, `(?m)^Ip6OutRequests\s+0$`, string(out), side.name)
		assert.Regexp(t, `(?m)^Ip6OutMcastPkts\s+0$`, string(out), side.name)
	}
	// A dual-stack pair, by contrast, has IPv6 working at once.
	ns2 := podnettest.Namespace(t)
	v6, err := podnet.NewVethPair("").In(host).Address(pfx("fd10::1/64")).Peer("", ns2).PeerAddress(pfx("fd10::2/64")).Create(ctx)
	require.NoError(t, err)
	_, err = ns2.Ping(ctx, ip("fd10::1"))
	require.NoError(t, err)
	require.NoError(t, v6.Close())
	require.NoError(t, v.Close())
	require.NoError(t, v.Close())
	assert.Equal(t, []string{"lo"}, linkNames(t, host))
	assert.Equal(t, []string{"lo"}, linkNames(t, ns))
}

func TestVethCloseAfterPeerNamespaceGone(t *testing.T) {
	ctx := testCtx(t)
	host := podnettest.Sandbox(t)
	ns, err := podnet.NewAnonymousNamespace().Create(ctx)
	require.NoError(t, err)
	v, err := podnet.NewVethPair("vgone").In(host).Peer("eth0", ns).Create(ctx)
	require.NoError(t, err)
	require.NoError(t, ns.Close())
	// The kernel removes the pair with the namespace (asynchronously); Close
	// succeeds whether or not it has yet.
	require.NoError(t, v.Close())
	require.Eventually(t, func() bool { return len(linkNames(t, host)) == 1 }, 5e9, 1e7)
}

// TestVethAddPeerAddress adds addresses to the peer after Create, by
// index: they are on the peer, an IPv6 one is not tentative, a bad one is
// refused, and a closed pair says so.
func TestVethAddPeerAddress(t *testing.T) {
	ctx := testCtx(t)
	host := podnettest.Sandbox(t)
	ns := podnettest.Namespace(t)
	v, err := podnet.NewVethPair("vlate").In(host).Peer("eth0", ns).IPv6(true).Create(ctx)
	require.NoError(t, err)
	require.NoError(t, v.AddPeerAddress(ctx, pfx("10.7.0.2/24")))
	require.NoError(t, v.AddPeerAddress(ctx, pfx("fd07::2/64")))
	addrs, err := ns.Addresses(ctx, "eth0")
	require.NoError(t, err)
	assert.Contains(t, addrs, pfx("10.7.0.2/24"))
	assert.Contains(t, addrs, pfx("fd07::2/64"))
	l := link(t, ns, "eth0")
	nl, err := ns.Handle().AddrList(l, unix.AF_INET6)
	require.NoError(t, err)
	for _, a := range nl {
		if a.IP.Equal(net.ParseIP("fd07::2")) {
			assert.Zero(t, a.Flags&unix.IFA_F_TENTATIVE, "fd07::2 is tentative")
		}
	}
	err = v.AddPeerAddress(ctx, pfx("10.7.0.2/24"))
	require.ErrorIs(t, err, podnet.ErrExists)
	err = v.AddPeerAddress(ctx, netip.Prefix{})
	require.ErrorIs(t, err, podnet.ErrInvalidAddress)
	require.NoError(t, v.Close())
	require.ErrorIs(t, v.AddPeerAddress(ctx, pfx("10.7.0.3/24")), podnet.ErrClosed)
}

func TestVethRollback(t *testing.T) {
	ctx := testCtx(t)
	host := podnettest.Sandbox(t)
	ns := podnettest.Namespace(t)
	br, err := podnet.NewBridge("br0").In(host).Create(ctx)
	require.NoError(t, err)
	defer br.Close()

	// A peer name that exists in the target namespace.
	_, err = podnet.NewVethPair("taken").In(host).Peer("eth0", ns).Create(ctx)
	require.NoError(t, err)
	_, err = podnet.NewVethPair("second").In(host).Master(br).Peer("eth0", ns).Create(ctx)
	require.ErrorIs(t, err, podnet.ErrExists)
	require.ErrorIs(t, err, unix.EEXIST)
	assert.Contains(t, err.Error(), `"eth0"`)
	assert.NotContains(t, linkNames(t, host), "second")

	// A failure after the pair exists: IPv6 is disabled in the peer's
	// namespace, so adding an IPv6 address fails and the pair must go.
	ns2 := podnettest.Namespace(t)
	_, err = ns2.SetSysctl("net.ipv6.conf.all.disable_ipv6", "1")
	require.NoError(t, err)
	_, err = ns2.SetSysctl("net.ipv6.conf.default.disable_ipv6", "1")
	require.NoError(t, err)
	_, err = podnet.NewVethPair("v6fail").In(host).Master(br).Peer("eth0", ns2).PeerAddress(pfx("fd00::2/64")).Create(ctx)
	require.Error(t, err)
	assert.NotContains(t, linkNames(t, host), "v6fail")
	assert.Equal(t, []string{"lo"}, linkNames(t, ns2))

	// Injected faults at every step.
	for _, point := range []string{"veth:created", "veth:sysctl", "veth:addressed", "veth:up"} {
		injected := errors.New("injected at " + point)
		restore := podnet.SetFaultHook(func(p string) error {
			if p == point {
				return injected
			}
			return nil
		})
		_, err := podnet.NewVethPair("vfault").In(host).Master(br).Hairpin(true).Peer("eth1", ns).
			PeerAddress(pfx("10.2.0.2/24")).Address(pfx("10.3.0.1/24")).Create(ctx)
		restore()
		require.ErrorIs(t, err, injected)
		assert.Equal(t, []string{"br0", "lo", "taken"}, linkNames(t, host), point)
		assert.Equal(t, []string{"eth0", "lo"}, linkNames(t, ns), point)
	}
}

func TestBridgeRollbackAndAdopt(t *testing.T) {
	ctx := testCtx(t)
	host := podnettest.Sandbox(t)
	for _, point := range []string{"bridge:created", "bridge:addressed"} {
		injected := errors.New("injected")
		restore := podnet.SetFaultHook(func(p string) error {
			if p == point {
				return injected
			}
			return nil
		})
		_, err := podnet.NewBridge("brf").In(host).Address(pfx("10.0.0.1/24")).Create(ctx)
		restore()
		require.ErrorIs(t, err, injected)
		assert.Equal(t, []string{"lo"}, linkNames(t, host), point)
	}

	// A foreign bridge is never taken by accident.
	foreign := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "brx", Alias: "someone else"}}
	require.NoError(t, host.Handle().LinkAdd(foreign))
	_, err := podnet.NewBridge("brx").In(host).Address(pfx("10.9.0.1/24")).Create(ctx)
	require.ErrorIs(t, err, podnet.ErrExists)
	addrs, err := host.Addresses(ctx, "brx")
	require.NoError(t, err)
	assert.Empty(t, addrs)

	// Adopted explicitly: used, then only podnet's address is removed.
	require.NoError(t, host.AddAddress(ctx, "brx", pfx("10.8.0.1/24")))
	br, err := podnet.NewBridge("brx").In(host).Adopt().Address(pfx("10.8.0.1/24"), pfx("10.9.0.1/24")).Create(ctx)
	require.NoError(t, err)
	assert.False(t, br.Owned())
	l, err := host.Handle().LinkByName("brx")
	require.NoError(t, err)
	assert.NotZero(t, l.Attrs().Flags&net.FlagUp, "adopted: brought up")
	mac, err := br.MAC(ctx)
	require.NoError(t, err)
	assert.Equal(t, l.Attrs().HardwareAddr, mac, "adopted: the kernel's address")
	require.NoError(t, br.Close())
	assert.Contains(t, linkNames(t, host), "brx")
	addrs, err = host.Addresses(ctx, "brx")
	require.NoError(t, err)
	var v4 []netip.Prefix
	for _, a := range addrs {
		if a.Addr().Is4() {
			v4 = append(v4, a)
		}
	}
	assert.Equal(t, []netip.Prefix{pfx("10.8.0.1/24")}, v4)

	// A non-bridge of that name cannot be adopted.
	_, err = podnet.NewVethPair("notbr").In(host).Create(ctx)
	require.NoError(t, err)
	_, err = podnet.NewBridge("notbr").In(host).Adopt().Create(ctx)
	require.ErrorIs(t, err, podnet.ErrExists)
	assert.Contains(t, err.Error(), "not a bridge")
}

func TestDeleteLinkGroup(t *testing.T) {
	ctx := testCtx(t)
	host := podnettest.Sandbox(t)
	ns := podnettest.Namespace(t)
	for i := 0; i < 20; i++ {
		_, err := podnet.NewVethPair(fmt.Sprintf("g%d", i)).In(host).Group(7).Peer(fmt.Sprintf("p%d", i), ns).Create(ctx)
		require.NoError(t, err)
	}
	_, err := podnet.NewVethPair("other").In(host).Peer("", ns).Create(ctx)
	require.NoError(t, err)
	require.NoError(t, host.DeleteLinkGroup(ctx, 7))
	names := linkNames(t, host)
	assert.Len(t, names, 2, "%v", names)
	assert.Contains(t, names, "other")
	assert.Len(t, linkNames(t, ns), 2)
	assert.ErrorIs(t, host.DeleteLinkGroup(ctx, 0), podnet.ErrInvalidOption)
}
