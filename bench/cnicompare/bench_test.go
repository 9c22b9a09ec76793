package cnicompare

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/cmd/podnet-cni/cnitest"
)

var (
	containers = flag.Int("containers", 100, "containers per round of BenchmarkAddDel")
	dualStack  = flag.Bool("dual", false, "BenchmarkAddDel on a dual-stack network")
)

// BenchmarkAddDel measures the latency of ADD and of DEL through libcni,
// plugin processes included, for podnet-cni and for the reference bridge
// and host-local plugins, on the same configuration (bridge, gateway,
// masquerading), each in its own sandbox. A round adds -containers
// containers one after the other to a network that grows, then deletes
// them one after the other. The two implementations take turns container
// by container, the first to go alternating, so that the load of a shared
// machine, which drifts, weighs on both alike; the namespaces are made
// beforehand.
//
// With the DELs it also times the kernel's share of a DEL: deleting a veth
// pair like an attachment's (peer in a container, host end on a bridge)
// in-process, with no plugin. The kernel waits for RCU callbacks
// (rcu_barrier in netdev_run_todo) before the request returns; both
// plugins pay it once per DEL.
//
// It reports, in milliseconds, the mean, median and 95th percentile of
// each, and the ratios of the means. Run it with -benchtime 1x: a round is
// long.
func BenchmarkAddDel(b *testing.B) {
	ctx := context.Background()
	type side struct {
		name     string
		env      *cnitest.Env
		list     *libcni.NetworkConfigList
		ctrs     []*cnitest.Container
		add, del []time.Duration
	}
	var sides []*side
	for _, impl := range impls {
		s := &side{name: impl.name, env: cnitest.NewEnv(b, binDir)}
		s.list = confList(b, s.env, impl.typ, *dualStack)
		for i := range *containers {
			s.ctrs = append(s.ctrs, s.env.Container(b, fmt.Sprintf("ctr%d", i)))
		}
		sides = append(sides, s)
	}
	floor := cnitest.NewEnv(b, binDir)
	br, err := podnet.NewBridge("cni0").In(floor.Host).Create(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	floorNS := make([]*podnet.Namespace, *containers)
	for i := range floorNS {
		floorNS[i] = floor.Container(b, fmt.Sprintf("ctr%d", i)).NS
	}
	var floorDel []time.Duration

	// turns returns the sides in the order they go for container i: who
	// goes first alternates, so that neither always follows the other.
	turns := func(i int) []*side {
		if i%2 == 1 {
			return []*side{sides[1], sides[0]}
		}
		return sides
	}
	for b.Loop() {
		for i := range *containers {
			for _, s := range turns(i) {
				start := time.Now()
				if _, err := s.env.Add(ctx, s.list, s.ctrs[i]); err != nil {
					b.Fatalf("%s: %v", s.name, err)
				}
				s.add = append(s.add, time.Since(start))
			}
		}
		for i := range *containers {
			for _, s := range turns(i) {
				start := time.Now()
				if err := s.env.Del(ctx, s.list, s.ctrs[i]); err != nil {
					b.Fatalf("%s: %v", s.name, err)
				}
				s.del = append(s.del, time.Since(start))
			}
			d, err := deleteVeth(ctx, floor.Host, br, floorNS[i])
			if err != nil {
				b.Fatal(err)
			}
			floorDel = append(floorDel, d)
		}
	}

	report := func(name string, ds []time.Duration) float64 {
		mean, p50, p95 := stats(ds)
		b.ReportMetric(mean, name+"-mean-ms")
		b.ReportMetric(p50, name+"-p50-ms")
		b.ReportMetric(p95, name+"-p95-ms")
		return mean
	}
	pn, ref := sides[0], sides[1]
	pnAdd, refAdd := report("podnet-add", pn.add), report("reference-add", ref.add)
	pnDel, refDel := report("podnet-del", pn.del), report("reference-del", ref.del)
	kernel := report("kernel-del", floorDel)
	b.ReportMetric(refAdd/pnAdd, "add-speedup")
	b.ReportMetric(refDel/pnDel, "del-speedup")
	b.Logf("%d containers: ADD %.1f ms vs %.1f ms (%.1fx faster), DEL %.1f ms vs %.1f ms (%.1fx faster); the kernel's veth deletion alone: %.1f ms",
		*containers, pnAdd, refAdd, refAdd/pnAdd, pnDel, refDel, refDel/pnDel, kernel)
}

// deleteVeth creates a veth pair with its peer in ns and its host end on
// br, and returns how long deleting it takes.
func deleteVeth(ctx context.Context, host *podnet.Namespace, br *podnet.Bridge, ns *podnet.Namespace) (time.Duration, error) {
	v, err := podnet.NewVethPair("floor0").In(host).Master(br).Peer("eth0", ns).Create(ctx)
	if err != nil {
		return 0, err
	}
	l := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: v.Index()}}
	start := time.Now()
	if err := host.Handle().LinkDel(l); err != nil {
		return 0, err
	}
	return time.Since(start), nil
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
