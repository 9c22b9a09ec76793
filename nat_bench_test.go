package podnet_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/coreos/go-iptables/iptables"
	"github.com/podnet/podnet"
	"github.com/podnet/podnet/podnettest"
)

// BenchmarkPortForward publishes and removes n port forwards inside a
// sandbox namespace, two ways side by side:
//
//   - batch: podnet's PortForward, one iptables-save and one
//     iptables-restore --noflush for Create, the same for Close;
//   - naive: one iptables exec per rule (go-iptables Append, then Delete),
//     as a library without batching does.
//
// It reports ns/rule for publishing and removing, and ns/rule overall.
// Run with: go test -run '^$' -bench PortForward -benchtime 3x
func BenchmarkPortForward(b *testing.B) {
	for _, be := range backends {
		for _, n := range []int{1, 100, 1000} {
			b.Run(fmt.Sprintf("%s/batch/n=%d", be.name, n), func(b *testing.B) { benchBatch(b, be.b, n) })
			b.Run(fmt.Sprintf("%s/naive/n=%d", be.name, n), func(b *testing.B) { benchNaive(b, be.b, n) })
		}
	}
}

func benchWorld(b *testing.B, n int) (*podnet.Namespace, []podnet.PortMapping) {
	host := podnettest.Sandbox(b)
	br, err := podnet.NewBridge("br0").In(host).Address(pfx("10.50.0.1/16")).Create(testCtx(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { br.Close() })
	ms := make([]podnet.PortMapping, n)
	for i := range ms {
		ms[i] = podnet.PortMapping{Proto: podnet.TCP, HostPort: 10000 + i,
			To: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 50, byte(1 + i/250), byte(2 + i%250)}), 80)}
	}
	return host, ms
}

func report(b *testing.B, n int, publish, remove time.Duration) {
	rules := float64(b.N * n)
	b.ReportMetric(float64(publish.Nanoseconds())/rules, "ns/rule-publish")
	b.ReportMetric(float64(remove.Nanoseconds())/rules, "ns/rule-remove")
	b.ReportMetric(float64((publish+remove).Nanoseconds())/rules, "ns/rule")
	b.ReportMetric(float64(publish.Milliseconds())/float64(b.N), "ms/publish-all")
}

func benchBatch(b *testing.B, be podnet.IptablesBackend, n int) {
	host, ms := benchWorld(b, n)
	ctx := testCtx(b)
	var publish, remove time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		pf, err := podnet.NewPortForward().In(host).Backend(be).Localhost(false).Map(ms...).Create(ctx)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := pf.Close(); err != nil {
			b.Fatal(err)
		}
		publish += t1.Sub(t0)
		remove += time.Since(t1)
	}
	report(b, n, publish, remove)
}

func benchNaive(b *testing.B, be podnet.IptablesBackend, n int) {
	host, ms := benchWorld(b, n)
	path := iptablesProg(be, 4, "")
	rules := make([][]string, n)
	for i, m := range ms {
		rules[i] = []string{"-p", "tcp", "-m", "tcp", "--dport", fmt.Sprint(m.HostPort),
			"-m", "comment", "--comment", "podnet-bench", "-j", "DNAT", "--to-destination", m.To.String()}
	}
	var publish, remove time.Duration
	// go-iptables execs from the calling thread: inside Do it runs the
	// binary inside the sandbox, never on the host.
	err := host.Do(func() error {
		ipt, err := iptables.New(iptables.Path(path))
		if err != nil {
			return err
		}
		if err := ipt.NewChain("nat", "PODNET-DNAT"); err != nil {
			return err
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			for _, r := range rules {
				if err := ipt.Append("nat", "PODNET-DNAT", r...); err != nil {
					return err
				}
			}
			t1 := time.Now()
			for _, r := range rules {
				if err := ipt.Delete("nat", "PODNET-DNAT", r...); err != nil {
					return err
				}
			}
			publish += t1.Sub(t0)
			remove += time.Since(t1)
		}
		b.StopTimer()
		return ipt.DeleteChain("nat", "PODNET-DNAT")
	})
	if err != nil {
		b.Fatal(err)
	}
	report(b, n, publish, remove)
}
