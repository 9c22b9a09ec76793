package podnet_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/podnettest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestForwardingRestoresOldValue(t *testing.T) {
	ctx := testCtx(t)
	host := podnettest.Sandbox(t)
	get := func(key string) string {
		v, err := host.Sysctl(key)
		require.NoError(t, err)
		return v
	}
	const v4, v6 = "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"
	require.Equal(t, "0", get(v4))
	require.Equal(t, "0", get(v6))

	f1, err := podnet.NewForwarding().In(host).IPv4(true).IPv6(true).Create(ctx)
	require.NoError(t, err)
	assert.Equal(t, "1", get(v4))
	assert.Equal(t, "1", get(v6))
	f2, err := podnet.NewForwarding().In(host).IPv4(true).Create(ctx)
	require.NoError(t, err)
	_, err = podnet.NewForwarding().In(host).IPv4(false).Create(ctx)
	require.ErrorIs(t, err, podnet.ErrInvalidOption, "a conflicting value while another object holds it")
	require.NoError(t, f1.Close())
	assert.Equal(t, "1", get(v4), "f2 still holds IPv4 forwarding")
	assert.Equal(t, "0", get(v6))
	require.NoError(t, f2.Close())
	require.NoError(t, f2.Close())
	assert.Equal(t, "0", get(v4))

	// A value podnet did not change is left alone.
	_, err = host.SetSysctl(v4, "1")
	require.NoError(t, err)
	f3, err := podnet.NewForwarding().In(host).IPv4(true).Create(ctx)
	require.NoError(t, err)
	require.NoError(t, f3.Close())
	assert.Equal(t, "1", get(v4))

	// Turning forwarding off is restored too; a value someone else changed
	// meanwhile is theirs and kept.
	f4, err := podnet.NewForwarding().In(host).IPv4(false).Create(ctx)
	require.NoError(t, err)
	assert.Equal(t, "0", get(v4))
	require.NoError(t, f4.Close())
	assert.Equal(t, "1", get(v4))
	f5, err := podnet.NewForwarding().In(host).IPv6(true).Create(ctx)
	require.NoError(t, err)
	_, err = host.SetSysctl(v6, "0")
	require.NoError(t, err)
	require.NoError(t, f5.Close())
	assert.Equal(t, "0", get(v6))
	assert.Zero(t, podnet.NamespaceStates())
}

func TestBackendAuto(t *testing.T) {
	requireIptables(t)
	ctx := testCtx(t)

	fresh := podnettest.Sandbox(t)
	m, err := podnet.NewMasquerade(pfx("10.1.0.0/16")).In(fresh).Create(ctx)
	require.NoError(t, err)
	assert.Equal(t, podnet.IptablesNFT, m.Backend())
	assert.NotEmpty(t, podnetRules(t, fresh, podnet.IptablesNFT, 4))
	require.NoError(t, m.Close())

	// Legacy tables holding a rule make podnet use legacy, so that its
	// rules show next to the others in iptables-legacy-save.
	legacy := podnettest.Sandbox(t)
	ipt(t, legacy, podnet.IptablesLegacy, 6, "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
	m, err = podnet.NewMasquerade(pfx("10.1.0.0/16")).In(legacy).Create(ctx)
	require.NoError(t, err)
	defer m.Close()
	assert.Equal(t, podnet.IptablesLegacy, m.Backend())
	assert.NotEmpty(t, podnetRules(t, legacy, podnet.IptablesLegacy, 4))
	assert.Empty(t, podnetRules(t, legacy, podnet.IptablesNFT, 4))
	// Later objects in the namespace follow, and forcing works.
	pf, err := podnet.NewPortForward().In(legacy).Localhost(false).
		Map(podnet.PortMapping{Proto: podnet.TCP, HostPort: 80, To: netip.MustParseAddrPort("10.1.0.2:80")}).Create(ctx)
	if err == nil {
		defer pf.Close()
	}
	require.ErrorIs(t, err, podnet.ErrInvalidRoute, "no route to 10.1.0.2 in this namespace")
	m2, err := podnet.NewMasquerade(pfx("10.2.0.0/16")).In(legacy).Backend(podnet.IptablesNFT).Create(ctx)
	require.NoError(t, err)
	assert.Equal(t, podnet.IptablesNFT, m2.Backend())
	require.NoError(t, m2.Close())
}

// TestConcurrentObjects creates and closes objects from many goroutines in
// one namespace that starts empty; afterwards iptables-save shows exactly
// nothing again (nf_tables), or nothing but empty tables (legacy).
func TestConcurrentObjects(t *testing.T) {
	requireIptables(t)
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			host := podnettest.Sandbox(t)
			br := addBridge(t, host, "br0", "10.50.0.1/16", "fd50::1/64")
			before := takeSnapshot(t, host, be.b)
			if be.b == podnet.IptablesNFT {
				require.Equal(t, snapshot{"", ""}, before)
			}
			const workers, rounds = 6, 3
			var wg sync.WaitGroup
			errs := make(chan error, workers*rounds*4)
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for r := 0; r < rounds; r++ {
						port := 10000 + 100*w + 2*r
						pf, err := podnet.NewPortForward().In(host).Backend(be.b).
							Map(podnet.PortMapping{Proto: podnet.TCP, HostPort: port, To: netip.MustParseAddrPort(fmt.Sprintf("10.50.%d.2:80", w))},
								podnet.PortMapping{Proto: podnet.UDP, HostPort: port + 1, To: netip.MustParseAddrPort(fmt.Sprintf("[fd50::%x]:53", w+2))}).
							Create(ctx)
						if err != nil {
							errs <- err
							continue
						}
						m, err := podnet.NewMasquerade(pfx(fmt.Sprintf("10.50.%d.0/24", w))).In(host).ExceptOut(br.Name()).Backend(be.b).Create(ctx)
						if err != nil {
							errs <- err
						}
						fw, err := podnet.NewBridgeFirewall(fmt.Sprintf("brx%d", w), pfx(fmt.Sprintf("10.60.%d.0/24", w)), pfx(fmt.Sprintf("fd60:%x::/64", w))).
							In(host).Backend(be.b).Create(ctx)
						if err != nil {
							errs <- err
						} else {
							errs <- fw.Allow(ctx, "br0")
							errs <- fw.Close()
						}
						if m != nil {
							errs <- m.Close()
						}
						errs <- pf.Close()
					}
				}()
			}
			// Meanwhile another program changes the same tables, as another
			// process would; podnet must neither lose nor take its rules.
			foreign := make(chan []byte, 1)
			go func() {
				var out []byte
				for k := 0; k < 15; k++ {
					for _, args := range [][]string{
						{"-A", "INPUT", "-s", fmt.Sprintf("10.77.%d.0/24", k), "-j", "ACCEPT"},
						{"-t", "nat", "-A", "POSTROUTING", "-s", fmt.Sprintf("10.78.%d.0/24", k), "-j", "MASQUERADE"},
					} {
						o, err := host.Command(iptablesProg(be.b, 4, ""), append([]string{"--wait"}, args...)...).CombinedOutput()
						if err != nil {
							out = append(out, o...)
						}
					}
				}
				foreign <- out
			}()
			wg.Wait()
			close(errs)
			for err := range errs {
				assert.NoError(t, err)
			}
			require.Empty(t, string(<-foreign))
			after := saveRules(t, host, be.b, 4)
			for k := 0; k < 15; k++ {
				assert.Contains(t, after, fmt.Sprintf("-A INPUT -s 10.77.%d.0/24 -j ACCEPT", k))
				assert.Contains(t, after, fmt.Sprintf("-A POSTROUTING -s 10.78.%d.0/24 -j MASQUERADE", k))
				ipt(t, host, be.b, 4, "-D", "INPUT", "-s", fmt.Sprintf("10.77.%d.0/24", k), "-j", "ACCEPT")
				ipt(t, host, be.b, 4, "-t", "nat", "-D", "POSTROUTING", "-s", fmt.Sprintf("10.78.%d.0/24", k), "-j", "MASQUERADE")
			}
			assert.NotContains(t, after, "PODNET")
			// With nf_tables, the tables the other program used stay (empty):
			// podnet deletes only tables it alone created.
			final := takeSnapshot(t, host, be.b)
			for i := range final {
				final[i] = dropEmptyTables(final[i])
			}
			assert.Equal(t, before, final)
		})
	}
}

func TestRulesCarryOwnerMark(t *testing.T) {
	requireIptables(t)
	ctx := testCtx(t)
	w := newNATWorld(t)
	pf, err := podnet.NewPortForward().In(w.host).Label("web").
		Map(podnet.PortMapping{Proto: podnet.TCP, HostPort: 8080, To: netip.MustParseAddrPort("192.168.52.2:80")}).Create(ctx)
	require.NoError(t, err)
	defer pf.Close()
	m, err := podnet.NewMasquerade(pfx("192.168.52.0/24")).In(w.host).ExceptOut("br0").Create(ctx)
	require.NoError(t, err)
	defer m.Close()
	fw, err := podnet.NewBridgeFirewall("br0", pfx("192.168.52.0/24")).In(w.host).Create(ctx)
	require.NoError(t, err)
	defer fw.Close()

	marks := map[string]int{}
	rules := podnetRules(t, w.host, pf.Backend(), 4)
	for _, r := range rules {
		i := strings.Index(r, "--comment ")
		require.Positive(t, i, r)
		c := strings.Fields(r[i+len("--comment "):])[0]
		if c == "podnet" {
			require.Regexp(t, `-j PODNET-[A-Z0-9]+$`, r, "only the jumps between podnet's chains are shared")
			continue
		}
		mk, ok := podnet.ParseMark(strings.Trim(c, `"`))
		require.True(t, ok, r)
		assert.Equal(t, podnet.Self(), mk.Owner)
		marks[strings.Trim(c, `"`)]++
	}
	assert.Len(t, marks, 3)
	assert.Equal(t, 5, marks[pf.Mark()], "jump to its chain, DNAT, hairpin and localhost NAT, localhost guard")
	assert.Equal(t, 1, marks[m.Mark()])
	assert.Equal(t, 4, marks[fw.Mark()])
	mk, _ := podnet.ParseMark(pf.Mark())
	assert.Regexp(t, `^portforward\.[0-9a-f]{12}\.web$`, mk.Label)
	id := strings.Split(mk.Label, ".")[1]
	assert.Contains(t, rules, `-A PODNET-DNAT -m comment --comment "`+pf.Mark()+`" -j PODNET-PF-`+id)
	assert.Contains(t, rules, `-A PODNET-PF-`+id+` -p tcp -m tcp --dport 8080 -m comment --comment "`+pf.Mark()+`" -j DNAT --to-destination 192.168.52.2:80`)
}

func TestCloseAfterNamespaceClosed(t *testing.T) {
	requireIptables(t)
	ctx := testCtx(t)
	ns, err := podnet.NewAnonymousNamespace().Create(ctx)
	require.NoError(t, err)
	m, err := podnet.NewMasquerade(pfx("10.1.0.0/16")).In(ns).Create(ctx)
	require.NoError(t, err)
	f, err := podnet.NewForwarding().In(ns).IPv4(true).Create(ctx)
	require.NoError(t, err)
	require.NoError(t, ns.Close())
	assert.NoError(t, m.Close())
	assert.NoError(t, f.Close())
	assert.Zero(t, podnet.NamespaceStates())
	_, err = podnet.NewMasquerade(pfx("10.1.0.0/16")).In(ns).Create(ctx)
	assert.ErrorIs(t, err, podnet.ErrClosed)
}

func TestIptablesMissing(t *testing.T) {
	ctx := testCtx(t)
	host := podnettest.Sandbox(t)
	restore := podnet.SetProgramSearch(func(string) (string, error) { return "", exec.ErrNotFound }, []string{t.TempDir()})
	defer restore()
	_, err := podnet.NewMasquerade(pfx("10.1.0.0/16")).In(host).Backend(podnet.IptablesNFT).Create(ctx)
	require.ErrorIs(t, err, podnet.ErrNotInstalled)
	assert.Contains(t, err.Error(), "iptables-nft-save")
	assert.Contains(t, err.Error(), "apt-get install -y iptables")
	_, err = podnet.NewPortForward().In(host).Backend(podnet.IptablesLegacy).Localhost(false).
		Map(podnet.PortMapping{Proto: podnet.TCP, HostPort: 80, To: netip.MustParseAddrPort("127.0.0.2:80")}).Create(ctx)
	require.ErrorIs(t, err, podnet.ErrInvalidAddress, "validation comes first")
	assert.Zero(t, podnet.NamespaceStates())
}

func TestNATBadInput(t *testing.T) {
	ctx := testCtx(t)
	host := podnettest.Sandbox(t)
	to := netip.MustParseAddrPort("192.168.52.2:80")
	pf := func(ms ...podnet.PortMapping) error {
		_, err := podnet.NewPortForward().In(host).Map(ms...).Create(ctx)
		return err
	}
	tcp := func(host, end int, to netip.AddrPort) podnet.PortMapping {
		return podnet.PortMapping{Proto: podnet.TCP, HostPort: host, HostPortEnd: end, To: to}
	}
	masq := func(s *podnet.MasqueradeSpec) error { _, err := s.In(host).Create(ctx); return err }
	fw := func(s *podnet.BridgeFirewallSpec) error { _, err := s.In(host).Create(ctx); return err }
	for _, tc := range []struct {
		name string
		err  error
		want error
		msg  string
	}{
		{"no mappings", pf(), podnet.ErrInvalidOption, "no port mappings"},
		{"port 0", pf(tcp(0, 0, to)), podnet.ErrInvalidOption, "host port 0 is outside 1..65535"},
		{"port too big", pf(tcp(65536, 0, to)), podnet.ErrInvalidOption, "host port 65536 is outside 1..65535"},
		{"range backwards", pf(tcp(8090, 8080, to)), podnet.ErrInvalidOption, "range 8090-8080 ends before it starts"},
		{"range end too big", pf(tcp(8090, 70000, to)), podnet.ErrInvalidOption, "range end 70000 is outside 1..65535"},
		{"range past 65535 at the destination", pf(tcp(1000, 2000, netip.MustParseAddrPort("192.168.52.2:65000"))), podnet.ErrInvalidOption, "go past 65535"},
		{"protocol", pf(podnet.PortMapping{Proto: "sctp", HostPort: 80, To: to}), podnet.ErrInvalidOption, `protocol "sctp"`},
		{"zero destination", pf(tcp(80, 0, netip.AddrPort{})), podnet.ErrInvalidAddress, "destination address is the zero value"},
		{"destination port 0", pf(tcp(80, 0, netip.MustParseAddrPort("192.168.52.2:0"))), podnet.ErrInvalidOption, "destination port"},
		{"mapped destination", pf(tcp(80, 0, netip.MustParseAddrPort("[::ffff:192.168.52.2]:80"))), podnet.ErrInvalidAddress, "IPv4-mapped"},
		{"loopback destination", pf(tcp(80, 0, netip.MustParseAddrPort("127.0.0.1:80"))), podnet.ErrInvalidAddress, "not a unicast, non-loopback"},
		{"overlap", pf(tcp(80, 90, to), tcp(85, 0, to)), podnet.ErrInvalidOption, "overlaps"},
		{"backend", func() error {
			_, err := podnet.NewPortForward().In(host).Backend(7).Map(tcp(80, 0, to)).Create(ctx)
			return err
		}(), podnet.ErrInvalidOption, "unknown iptables backend 7"},
		{"label", masq(podnet.NewMasquerade(pfx("10.0.0.0/8")).Label("a b")), podnet.ErrInvalidOption, "label"},
		{"zero prefix", masq(podnet.NewMasquerade(netip.Prefix{})), podnet.ErrInvalidAddress, "zero value"},
		{"host bits", masq(podnet.NewMasquerade(pfx("10.1.2.3/16"))), podnet.ErrInvalidAddress, "did you mean 10.1.0.0/16"},
		{"out and except", masq(podnet.NewMasquerade(pfx("10.0.0.0/8")).Out("eth0").ExceptOut("br0")), podnet.ErrInvalidOption, "both given"},
		{"bad interface", masq(podnet.NewMasquerade(pfx("10.0.0.0/8")).Out("eth0;reboot")), podnet.ErrInvalidName, "eth0;reboot"},
		{"wrong family", masq(podnet.NewMasquerade(pfx("10.0.0.0/8")).ToSource(ip("2001:db8::1"))), podnet.ErrInvalidAddress, "different families"},
		{"firewall without subnet", fw(podnet.NewBridgeFirewall("br0")), podnet.ErrInvalidAddress, "no subnet"},
		{"firewall bad name", fw(podnet.NewBridgeFirewall("a-name-that-is-too-long", pfx("10.0.0.0/8"))), podnet.ErrInvalidName, "longer than 15"},
		{"firewall mapped subnet", fw(podnet.NewBridgeFirewall("br0", pfx("::ffff:10.0.0.0/104"))), podnet.ErrInvalidAddress, "IPv4-mapped"},
		{"forwarding of nothing", func() error { _, err := podnet.NewForwarding().In(host).Create(ctx); return err }(), podnet.ErrInvalidOption, "neither"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.ErrorIs(t, tc.err, tc.want)
			assert.Contains(t, tc.err.Error(), tc.msg)
			var oe *podnet.OpError
			assert.True(t, errors.As(tc.err, &oe), "%T", tc.err)
		})
	}
	// Every problem is reported at once.
	err := pf(tcp(0, 0, to), tcp(80, 0, netip.AddrPort{}))
	assert.Contains(t, err.Error(), "host port 0")
	assert.Contains(t, err.Error(), "zero value")
	// Nothing reached the kernel.
	assert.Equal(t, snapshot{"", ""}, takeSnapshot(t, host, podnet.IptablesNFT))
	assert.Zero(t, podnet.NamespaceStates())
}

// TestNATRollback fails Create after each batch it applies, and checks that
// what the earlier batches added is gone again.
func TestNATRollback(t *testing.T) {
	requireIptables(t)
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			ctx := testCtx(t)
			host := podnettest.Sandbox(t)
			addBridge(t, host, "br0", "10.50.0.1/16", "fd50::1/64")
			ipt(t, host, be.b, 4, "-t", "nat", "-A", "POSTROUTING", "-s", "10.99.0.0/16", "-j", "MASQUERADE")
			before := takeSnapshot(t, host, be.b)
			for n := 1; n <= 2; n++ {
				injected := errors.New("injected")
				calls := 0
				restore := podnet.SetFaultHook(func(p string) error {
					if p == "iptables:applied" {
						if calls++; calls == n {
							return injected
						}
					}
					return nil
				})
				_, err := podnet.NewPortForward().In(host).Backend(be.b).
					Map(podnet.PortMapping{Proto: podnet.TCP, HostPort: 80, To: netip.MustParseAddrPort("10.50.0.2:80")},
						podnet.PortMapping{Proto: podnet.TCP, HostPort: 80, To: netip.MustParseAddrPort("[fd50::2]:80")}).Create(ctx)
				require.ErrorIs(t, err, injected, "port forward, batch %d", n)
				calls = 0
				_, err = podnet.NewBridgeFirewall("br0", pfx("10.50.0.0/16"), pfx("fd50::/64")).In(host).Backend(be.b).Create(ctx)
				require.ErrorIs(t, err, injected, "firewall, batch %d", n)
				restore()
				assert.Equal(t, before, takeSnapshot(t, host, be.b), "after a failure at batch %d", n)
				v, err := host.Sysctl("net.ipv4.conf.br0.route_localnet")
				require.NoError(t, err)
				assert.Equal(t, "0", v)
				assert.Zero(t, podnet.NamespaceStates())
			}
		})
	}
}
