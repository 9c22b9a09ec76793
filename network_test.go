package podnet_test

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/ipam"
	"github.com/podnet/podnet/podnettest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNetworkAttachDualStack(t *testing.T) {
	ctx := testCtx(t)
	host := podnettest.Sandbox(t)
	nw, err := podnet.NewNetwork("br-ds", pfx("10.60.0.0/24"), pfx("fd60::/64")).In(host).Create(ctx)
	require.NoError(t, err)
	defer nw.Close()
	assert.Equal(t, []netip.Addr{ip("10.60.0.1"), ip("fd60::1")}, nw.Gateways())

	a, b := podnettest.Namespace(t), podnettest.Namespace(t)
	at, err := nw.Attach(ctx, a)
	require.NoError(t, err)
	bt, err := nw.Attach(ctx, b, podnet.WithAddress(ip("10.60.0.77")), podnet.IfName("net0"))
	require.NoError(t, err)

	assert.Equal(t, []netip.Prefix{pfx("10.60.0.2/24"), pfx("fd60::2/64")}, at.Addresses())
	assert.Equal(t, []netip.Prefix{pfx("10.60.0.77/24"), pfx("fd60::3/64")}, bt.Addresses())
	// What the attachment reports is what the kernel has.
	got, err := a.Addresses(ctx, "eth0")
	require.NoError(t, err)
	for _, p := range at.Addresses() {
		assert.Contains(t, got, p)
	}
	assert.Equal(t, link(t, b, "net0").Attrs().HardwareAddr, bt.MAC())
	hl := link(t, host, at.HostInterface())
	assert.Equal(t, nw.Bridge().Index(), hl.Attrs().MasterIndex)
	routes, err := b.Routes(ctx, 0)
	require.NoError(t, err)
	assert.Contains(t, routes, podnet.Route{Gateway: ip("10.60.0.1"), Dev: "net0"})
	assert.Contains(t, routes, podnet.Route{Gateway: ip("fd60::1"), Dev: "net0", Metric: 1024})
	assert.Equal(t, 2, nw.Pools()[0].Used())

	// Traffic both families, to each other and to the gateway.
	_, err = a.Ping(ctx, ip("10.60.0.77"))
	require.NoError(t, err)
	_, err = b.Ping(ctx, ip("fd60::2"))
	require.NoError(t, err)
	_, err = a.Ping(ctx, ip("fd60::1"))
	require.NoError(t, err)

	// Offboarding removes the interface and releases the addresses.
	require.NoError(t, bt.Close())
	require.NoError(t, bt.Close())
	assert.Equal(t, []string{"lo"}, linkNames(t, b))
	assert.False(t, nw.Pools()[0].Allocated(ip("10.60.0.77")))
	assert.False(t, nw.Pools()[1].Allocated(ip("fd60::3")))
	assert.NotContains(t, linkNames(t, host), bt.HostInterface())

	require.NoError(t, nw.Close())
	assert.Equal(t, []string{"lo"}, linkNames(t, host), "network close left links")
	assert.Equal(t, []string{"lo"}, linkNames(t, a))
	_, err = nw.Attach(ctx, a)
	assert.ErrorIs(t, err, podnet.ErrClosed)
}

func TestNetworkExhaustionAndReuseAfterWrap(t *testing.T) {
	ctx := testCtx(t)
	host := podnettest.Sandbox(t)
	// A /29: .1 is the gateway, .2-.6 usable, .7 broadcast.
	nw, err := podnet.NewNetwork("br-small", pfx("10.61.0.0/29")).In(host).Create(ctx)
	require.NoError(t, err)
	defer nw.Close()
	var atts []*podnet.Attachment
	for i := 0; i < 5; i++ {
		a, err := nw.Attach(ctx, podnettest.Namespace(t))
		require.NoError(t, err)
		atts = append(atts, a)
	}
	ns := podnettest.Namespace(t)
	_, err = nw.Attach(ctx, ns)
	require.ErrorIs(t, err, ipam.ErrExhausted)
	assert.Equal(t, []string{"lo"}, linkNames(t, ns), "failed attach left a link")

	freed := atts[2].Addresses()[0]
	require.NoError(t, atts[2].Close())
	again, err := nw.Attach(ctx, ns)
	require.NoError(t, err)
	assert.Equal(t, freed, again.Addresses()[0], "the freed address is handed out after wrap-around")
}

func TestNetworkConcurrentAttach(t *testing.T) {
	ctx := testCtx(t)
	host := podnettest.Sandbox(t)
	nw, err := podnet.NewNetwork("br-conc", pfx("10.62.0.0/24")).In(host).Create(ctx)
	require.NoError(t, err)
	defer nw.Close()
	const n = 32
	nss := make([]*podnet.Namespace, n)
	for i := range nss {
		nss[i] = podnettest.Namespace(t)
	}
	atts := make([]*podnet.Attachment, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			atts[i], errs[i] = nw.Attach(ctx, nss[i])
		}(i)
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for i := 0; i < n; i++ {
		require.NoError(t, errs[i])
		a := atts[i].Addresses()[0].Addr()
		assert.False(t, seen[a], "address %v handed out twice", a)
		seen[a] = true
	}
	// Half detach concurrently while the others ping the gateway.
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if i%2 == 0 {
				errs[i] = atts[i].Close()
			} else {
				_, errs[i] = nss[i].Ping(ctx, ip("10.62.0.1"))
			}
		}(i)
	}
	wg.Wait()
	for i := 0; i < n; i++ {
		require.NoError(t, errs[i], "goroutine %d", i)
	}
	assert.Equal(t, n/2, nw.Pools()[0].Used())
	assert.Len(t, nw.Attachments(), n/2)
	// Close offboards the rest in one batch.
	require.NoError(t, nw.Close())
	assert.Equal(t, []string{"lo"}, linkNames(t, host))
	for i := 1; i < n; i += 2 {
		assert.Equal(t, []string{"lo"}, linkNames(t, nss[i]))
	}
}

func TestAttachRollback(t *testing.T) {
	ctx := testCtx(t)
	host := podnettest.Sandbox(t)
	nw, err := podnet.NewNetwork("br-rb", pfx("10.63.0.0/24")).In(host).Create(ctx)
	require.NoError(t, err)
	defer nw.Close()
	ns := podnettest.Namespace(t)
	for _, point := range []string{"attach:allocated", "veth:created", "veth:up", "attach:veth", "attach:routes"} {
		injected := errors.New("injected at " + point)
		restore := podnet.SetFaultHook(func(p string) error {
			if p == point {
				return injected
			}
			return nil
		})
		_, err := nw.Attach(ctx, ns)
		restore()
		require.ErrorIs(t, err, injected)
		assert.Equal(t, 0, nw.Pools()[0].Used(), point)
		assert.Equal(t, []string{"br-rb", "lo"}, linkNames(t, host), point)
		assert.Equal(t, []string{"lo"}, linkNames(t, ns), point)
	}
	// A bad extra route fails after the link exists: rolled back too.
	_, err = nw.Attach(ctx, ns, podnet.WithRoute(podnet.Route{Dst: pfx("10.99.0.0/16"), Gateway: ip("10.200.0.1")}))
	require.ErrorIs(t, err, podnet.ErrInvalidRoute)
	assert.Equal(t, 0, nw.Pools()[0].Used())
	assert.Equal(t, []string{"lo"}, linkNames(t, ns))

	// Bad input.
	_, err = nw.Attach(ctx, ns, podnet.WithAddress(ip("10.64.0.5")))
	assert.ErrorIs(t, err, podnet.ErrInvalidAddress)
	_, err = nw.Attach(ctx, ns, podnet.WithAddress(ip("10.63.0.1")))
	assert.ErrorIs(t, err, ipam.ErrReserved)
	_, err = nw.Attach(ctx, ns, podnet.IfName("bad name"))
	assert.ErrorIs(t, err, podnet.ErrInvalidName)
	_, err = nw.Attach(ctx, nil)
	assert.ErrorIs(t, err, podnet.ErrInvalidOption)
}

func TestNetworkBadInputAndRollback(t *testing.T) {
	ctx := testCtx(t)
	host := podnettest.Sandbox(t)
	for _, tc := range []struct {
		name     string
		spec     *podnet.NetworkSpec
		sentinel error
	}{
		{"no subnet", podnet.NewNetwork("br1"), podnet.ErrInvalidAddress},
		{"host bits", podnet.NewNetwork("br1", pfx("10.0.0.1/24")), podnet.ErrInvalidAddress},
		{"two v4", podnet.NewNetwork("br1", pfx("10.0.0.0/24"), pfx("10.1.0.0/24")), podnet.ErrInvalidAddress},
		{"bad name", podnet.NewNetwork("br 1", pfx("10.0.0.0/24")), podnet.ErrInvalidName},
		{"pool options for other subnet", podnet.NewNetwork("br1", pfx("10.0.0.0/24")).PoolOptions(pfx("10.9.0.0/24")), podnet.ErrInvalidOption},
		{"pool range outside", podnet.NewNetwork("br1", pfx("10.0.0.0/24")).PoolOptions(pfx("10.0.0.0/24"), ipam.Range(ip("10.1.0.1"), ip("10.1.0.9"))), ipam.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.spec.In(host).Create(ctx)
			assert.ErrorIs(t, err, tc.sentinel)
			assert.Equal(t, []string{"lo"}, linkNames(t, host))
		})
	}
	for _, point := range []string{"bridge:addressed", "network:bridge", "network:nat"} {
		injected := errors.New("injected")
		restore := podnet.SetFaultHook(func(p string) error {
			if p == point {
				return injected
			}
			return nil
		})
		_, err := podnet.NewNetwork("br1", pfx("10.0.0.0/24")).In(host).Create(ctx)
		restore()
		require.ErrorIs(t, err, injected)
		assert.Equal(t, []string{"lo"}, linkNames(t, host), point)
	}
}

func TestTopologyValidationReportsEverything(t *testing.T) {
	_, err := podnet.Topology().
		Masquerade().
		Network("lan", "192.168.52.0/33").
		Network("lan", "10.0.0.0/24").
		Host("orange", "lan", "lan").
		Host("purple", "nowhere").
		Host("bad name", "lan").
		Router("r", "lan").
		Internet("inet", "203.0.113.5/24").
		Create(testCtx(t))
	require.Error(t, err)
	for _, want := range []string{
		"Masquerade before any Network",
		`"192.168.52.0/33"`,
		`network "lan" has the name of a network`,
		`on network "lan" twice`,
		`"nowhere", which is not defined`,
		`"bad name"`,
		"needs at least two networks",
		"host bits set",
	} {
		assert.Contains(t, err.Error(), want)
	}
	assert.ErrorIs(t, err, podnet.ErrInvalidOption)
	assert.ErrorIs(t, err, podnet.ErrNotFound)
}

func TestTopologyRouterAndRollback(t *testing.T) {
	ctx := testCtx(t)
	host := podnettest.Sandbox(t)
	lab, err := podnet.Topology().In(host).
		Network("lan1", "10.70.1.0/24").
		Network("lan2", "10.70.2.0/24").
		Host("a", "lan1").
		Host("b", "lan2").
		Router("r", "lan1", "lan2").
		Create(ctx)
	require.NoError(t, err)
	a, b := lab.Host("a"), lab.Host("b")
	require.NoError(t, a.PingNode(ctx, b), "a reaches b through the router")
	require.NoError(t, b.PingNode(ctx, a))
	assert.Error(t, lab.Host("nope").PingNode(ctx, a))
	require.NoError(t, lab.Close())
	require.NoError(t, lab.Close())
	assert.Equal(t, []string{"lo"}, linkNames(t, host))

	// The last step fails: everything is rolled back.
	for _, point := range []string{"attach:routes", "veth:up", "network:nat"} {
		count := 0
		restore := podnet.SetFaultHook(func(p string) error {
			if p == point {
				count++
				if count == 3 {
					return errors.New("injected")
				}
			}
			return nil
		})
		_, err = podnet.Topology().In(host).
			Network("lan1", "10.70.1.0/24").Network("lan2", "10.70.2.0/24").Network("lan3", "10.70.3.0/24").
			Host("a", "lan1").Host("b", "lan2").Host("c", "lan3").Router("r", "lan1", "lan2").
			Create(ctx)
		restore()
		require.Error(t, err, point)
		assert.Equal(t, []string{"lo"}, linkNames(t, host), point)
	}
}

func TestManyAttachmentsCloseInBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	ctx := testCtx(t)
	host := podnettest.Sandbox(t)
	nw, err := podnet.NewNetwork("br-many", pfx("10.65.0.0/22")).In(host).Create(ctx)
	require.NoError(t, err)
	for i := 0; i < 100; i++ {
		_, err := nw.Attach(ctx, podnettest.Namespace(t), podnet.HostIfName(fmt.Sprintf("m%d", i)))
		require.NoError(t, err)
	}
	assert.Len(t, linkNames(t, host), 102)
	require.NoError(t, nw.Close())
	assert.Equal(t, []string{"lo"}, linkNames(t, host))
}
