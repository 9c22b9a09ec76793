package cnicompare

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/cmd/podnet-cni/cnitest"
)

var (
	containers = flag.Int("containers", 100, "containers per round of BenchmarkAddDel")
	dualStack  = flag.Bool("dual", false, "BenchmarkAddDel on a dual-stack network")
)

// BenchmarkAddDel measures the latency of ADD and of DEL through libcni,
// plugin process included, for podnet-cni and for the reference plugins,
// on the same configuration (bridge, gateway, masquerading). A round adds
// -containers containers one after the other to a network that grows, then
// deletes them one after the other; the namespaces are made beforehand.
// It reports the mean, median and 95th percentile of each operation in
// milliseconds. Run it with -benchtime 1x: a round is long.
func BenchmarkAddDel(b *testing.B) {
	means := map[string][2]float64{}
	for _, impl := range impls {
		b.Run("impl="+impl.name, func(b *testing.B) {
			ctx := context.Background()
			env := cnitest.NewEnv(b, binDir)
			list := confList(b, env, impl.typ, *dualStack)
			ctrs := make([]*cnitest.Container, *containers)
			for i := range ctrs {
				ctrs[i] = env.Container(b, fmt.Sprintf("ctr%d", i))
			}
			var add, del []time.Duration
			for b.Loop() {
				for _, c := range ctrs {
					start := time.Now()
					if _, err := env.Add(ctx, list, c); err != nil {
						b.Fatal(err)
					}
					add = append(add, time.Since(start))
				}
				for _, c := range ctrs {
					start := time.Now()
					if err := env.Del(ctx, list, c); err != nil {
						b.Fatal(err)
					}
					del = append(del, time.Since(start))
				}
			}
			for _, m := range []struct {
				name string
				d    []time.Duration
			}{{"add", add}, {"del", del}} {
				mean, p50, p95 := stats(m.d)
				b.ReportMetric(mean, m.name+"-mean-ms")
				b.ReportMetric(p50, m.name+"-p50-ms")
				b.ReportMetric(p95, m.name+"-p95-ms")
			}
			am, _, _ := stats(add)
			dm, _, _ := stats(del)
			means[impl.name] = [2]float64{am, dm}
		})
	}
	// The kernel's share of DEL: deleting a veth pair like an attachment's
	// (peer in a container, host end on the bridge), in-process, no plugin.
	// The kernel waits for RCU callbacks (rcu_barrier in netdev_run_todo)
	// before the request returns; both plugins pay it once per DEL.
	b.Run("impl=kernel-floor", func(b *testing.B) {
		ctx := context.Background()
		env := cnitest.NewEnv(b, binDir)
		br, err := podnet.NewBridge("cni0").In(env.Host).Create(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer br.Close()
		var del []time.Duration
		for b.Loop() {
			for i := range *containers {
				c := env.Container(b, fmt.Sprintf("ctr%d", i))
				v, err := podnet.NewVethPair(fmt.Sprintf("veth%d", i)).In(env.Host).Master(br).Peer("eth0", c.NS).Create(ctx)
				if err != nil {
					b.Fatal(err)
				}
				l, err := env.Host.Handle().LinkByIndex(v.Index())
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				if err := env.Host.Handle().LinkDel(l); err != nil {
					b.Fatal(err)
				}
				del = append(del, time.Since(start))
			}
		}
		mean, p50, p95 := stats(del)
		b.ReportMetric(mean, "del-mean-ms")
		b.ReportMetric(p50, "del-p50-ms")
		b.ReportMetric(p95, "del-p95-ms")
		means["kernel-floor"] = [2]float64{0, mean}
	})
	pn, ref, floor := means["podnet"], means["reference"], means["kernel-floor"]
	if pn[0] > 0 && pn[1] > 0 && ref[0] > 0 {
		b.Logf("%d containers: ADD %.1f ms vs %.1f ms (%.1fx faster), DEL %.1f ms vs %.1f ms (%.1fx faster); the kernel's veth deletion alone: %.1f ms",
			*containers, pn[0], ref[0], ref[0]/pn[0], pn[1], ref[1], ref[1]/pn[1], floor[1])
	}
}

// stats returns the mean, median and 95th percentile of ds in ms.
func stats(ds []time.Duration) (mean, p50, p95 float64) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return ms(sum) / float64(len(s)), ms(s[len(s)/2]), ms(s[(len(s)*95)/100])
}
