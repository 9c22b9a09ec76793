package cnicompare

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"sync"
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
	concurrent = flag.Int("concurrent", 8, "DELs at once in BenchmarkDelConcurrent")
	schedule   = flag.String("schedule", "blocks", "BenchmarkAddDel: blocks (each round alone: podnet, reference, reference, podnet) or interleaved (container by container)")
)

// BenchmarkAddDel measures the latency of ADD and of DEL through libcni,
// plugin processes included, for podnet-cni and for the reference bridge
// and host-local plugins, on the same configuration (bridge, gateway,
// masquerading), each in its own sandbox. A round adds -containers
// containers one after the other to a network that grows, then deletes
// them one after the other; the namespaces are made beforehand.
//
// -schedule says how the two implementations share the machine:
//
//   - blocks (the default): each round has the machine to itself, as a
//     node runs one plugin, and the rounds go podnet, reference,
//     reference, podnet, so that a drift of the machine's load weighs on
//     both alike. Each implementation pays for the background work it
//     makes the kernel do: the reference's veth ends get IPv6 link-local
//     addresses, whose duplicate address detection, MLD reports and
//     router solicitations the kernel sends, and the bridge floods to
//     every port, in the seconds after each ADD; podnet-cni's IPv4-only
//     attachments send no IPv6 at all.
//   - interleaved: one round each, taking turns container by container,
//     the first to go alternating. Each pays part of the other's
//     background work.
//
// After each DEL, untimed, it checks that the container's interface and
// the host end are gone, and waits until podnet-cni's detached copy (which
// sits through the kernel's freeing of the pair, see
// cmd/podnet-cni/internal/plugin/unlink.go) has exited, so that neither
// side's background work weighs on the other's next operation. It reports
// when that happened too (podnet-del-settled): the DEL as the kernel sees
// it, rather than as the runtime waits for it.
//
// Last, it times the kernel's share of a DEL: deleting a veth pair like an
// attachment's (peer in a container, host end on a bridge) in-process,
// with no plugin. The kernel waits for RCU callbacks (rcu_barrier in
// netdev_run_todo) before the request returns; the reference plugins make
// the runtime wait for it on every DEL.
//
// It reports, in milliseconds, the mean, median and 95th percentile of
// each, and the ratios of the means. Run it with -benchtime 1x: a round is
// long.
func BenchmarkAddDel(b *testing.B) {
	pn, ref := &side{name: impls[0].name, typ: impls[0].typ}, &side{name: impls[1].name, typ: impls[1].typ}
	var floorDel []time.Duration
	for b.Loop() {
		switch *schedule {
		case "blocks":
			for _, s := range []*side{pn, ref, ref, pn} {
				r := newRound(b, s)
				for i := range r.ctrs {
					r.add(b, i)
				}
				for i := range r.ctrs {
					r.del(b, i)
				}
			}
		case "interleaved":
			rounds := []*round{newRound(b, pn), newRound(b, ref)}
			// turns returns the rounds in the order they go for container
			// i: who goes first alternates.
			turns := func(i int) []*round {
				if i%2 == 1 {
					return []*round{rounds[1], rounds[0]}
				}
				return rounds
			}
			for i := range *containers {
				for _, r := range turns(i) {
					r.add(b, i)
				}
			}
			for i := range *containers {
				for _, r := range turns(i) {
					r.del(b, i)
				}
			}
		default:
			b.Fatalf("-schedule %q: want blocks or interleaved", *schedule)
		}
		floorDel = append(floorDel, kernelDeletes(b, *containers)...)
	}

	report := func(name string, ds []time.Duration) float64 {
		mean, p50, p95 := stats(ds)
		b.ReportMetric(mean, name+"-mean-ms")
		b.ReportMetric(p50, name+"-p50-ms")
		b.ReportMetric(p95, name+"-p95-ms")
		return mean
	}
	pnAdd, refAdd := report("podnet-add", pn.add), report("reference-add", ref.add)
	pnDel, refDel := report("podnet-del", pn.del), report("reference-del", ref.del)
	pnSettled := report("podnet-del-settled", pn.settled)
	kernel := report("kernel-del", floorDel)
	b.ReportMetric(refAdd/pnAdd, "add-speedup")
	b.ReportMetric(refDel/pnDel, "del-speedup")
	b.Logf("%d containers, %s: ADD %.1f ms vs %.1f ms (%.1fx faster), DEL %.1f ms vs %.1f ms (%.1fx faster); the kernel's veth deletion alone: %.1f ms; podnet-cni's detached copy done %.1f ms after DEL started",
		*containers, *schedule, pnAdd, refAdd, refAdd/pnAdd, pnDel, refDel, refDel/pnDel, kernel, pnSettled)
}

// BenchmarkDelConcurrent measures DEL throughput, as when a node is
// drained: -containers containers are attached, then deleted
// -concurrent at a time through libcni, and the wall time until the last
// DEL returned is divided by their number. It runs podnet-cni (detached
// deletion, the default), podnet-cni with waitForKernel (in-process
// deletion) and the reference plugins, each round alone, in the order
// podnet, waitForKernel, reference, reference, waitForKernel, podnet.
// Untimed, after each round it checks that every attachment is gone and
// waits for podnet-cni's detached copies.
func BenchmarkDelConcurrent(b *testing.B) {
	ctx := context.Background()
	type variant struct {
		name, typ string
		wait      bool
		perDel    []float64 // ms of wall time per DEL, one per round
	}
	pn := &variant{name: "podnet", typ: impls[0].typ}
	pnWait := &variant{name: "podnet-waitForKernel", typ: impls[0].typ, wait: true}
	ref := &variant{name: "reference", typ: impls[1].typ}
	for b.Loop() {
		for _, v := range []*variant{pn, pnWait, ref, ref, pnWait, pn} {
			env := cnitest.NewEnv(b, binDir)
			conf := bridgeConf(v.typ, env.DataDir, *dualStack)
			if v.wait {
				conf["waitForKernel"] = true
			}
			list, err := cnitest.ConfList("k8s-pod-network", "1.1.0", conf)
			if err != nil {
				b.Fatal(err)
			}
			ctrs := make([]*cnitest.Container, *containers)
			for i := range ctrs {
				ctrs[i] = env.Container(b, fmt.Sprintf("ctr%d", i))
				if _, err := env.Add(ctx, list, ctrs[i]); err != nil {
					b.Fatalf("%s: %v", v.name, err)
				}
			}
			work := make(chan *cnitest.Container)
			errs := make(chan error, len(ctrs))
			var wg sync.WaitGroup
			start := time.Now()
			for range *concurrent {
				wg.Go(func() {
					for c := range work {
						if err := env.Del(ctx, list, c); err != nil {
							errs <- fmt.Errorf("%s: %w", v.name, err)
						}
					}
				})
			}
			for _, c := range ctrs {
				work <- c
			}
			close(work)
			wg.Wait()
			v.perDel = append(v.perDel, float64(time.Since(start))/float64(time.Millisecond)/float64(len(ctrs)))
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			for _, c := range ctrs {
				if err := cnitest.Gone(ctx, env.Host, c, 0); err != nil {
					b.Fatalf("%s: %v", v.name, err)
				}
			}
			if err := cnitest.WaitDetached(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	mean := func(xs []float64) float64 {
		sum := 0.0
		for _, x := range xs {
			sum += x
		}
		return sum / float64(len(xs))
	}
	for _, v := range []*variant{pn, pnWait, ref} {
		b.ReportMetric(mean(v.perDel), v.name+"-ms/del")
	}
	b.ReportMetric(mean(ref.perDel)/mean(pn.perDel), "speedup")
	b.Logf("%d DELs, %d at a time: podnet-cni %.1f ms per DEL, with waitForKernel %.1f ms, reference %.1f ms (%.1fx)",
		*containers, *concurrent, mean(pn.perDel), mean(pnWait.perDel), mean(ref.perDel), mean(ref.perDel)/mean(pn.perDel))
}

// side is one implementation's measurements.
type side struct {
	name, typ string
	add, del  []time.Duration
	settled   []time.Duration // DEL until its background work ended
}

// round is one round of a side: its sandbox and containers.
type round struct {
	s    *side
	env  *cnitest.Env
	list *libcni.NetworkConfigList
	ctrs []*cnitest.Container
}

func newRound(b *testing.B, s *side) *round {
	r := &round{s: s, env: cnitest.NewEnv(b, binDir)}
	r.list = confList(b, r.env, s.typ, *dualStack)
	for i := range *containers {
		r.ctrs = append(r.ctrs, r.env.Container(b, fmt.Sprintf("ctr%d", i)))
	}
	return r
}

// add times the ADD of container i.
func (r *round) add(b *testing.B, i int) {
	start := time.Now()
	if _, err := r.env.Add(context.Background(), r.list, r.ctrs[i]); err != nil {
		b.Fatalf("%s: %v", r.s.name, err)
	}
	r.s.add = append(r.s.add, time.Since(start))
}

// del times the DEL of container i, then, untimed, checks that its
// interface is gone, with the host ends of i and all before it, and waits
// for podnet-cni's detached copy.
func (r *round) del(b *testing.B, i int) {
	ctx := context.Background()
	start := time.Now()
	if err := r.env.Del(ctx, r.list, r.ctrs[i]); err != nil {
		b.Fatalf("%s: %v", r.s.name, err)
	}
	r.s.del = append(r.s.del, time.Since(start))
	if err := cnitest.Gone(ctx, r.env.Host, r.ctrs[i], len(r.ctrs)-i-1); err != nil {
		b.Fatalf("%s: after DEL: %v", r.s.name, err)
	}
	if err := cnitest.WaitDetached(ctx); err != nil {
		b.Fatal(err)
	}
	r.s.settled = append(r.s.settled, time.Since(start))
}

// kernelDeletes times n deletions of a veth pair like an attachment's, in
// a sandbox of its own.
//
// Namespaces, here and in the rounds, are deleted when the benchmark ends,
// not sooner: the kernel tears a namespace down in the background, which
// would weigh on what is timed next.
func kernelDeletes(b *testing.B, n int) []time.Duration {
	ctx := context.Background()
	env := cnitest.NewEnv(b, binDir)
	br, err := podnet.NewBridge("cni0").In(env.Host).Create(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	var ds []time.Duration
	for i := range n {
		c := env.Container(b, fmt.Sprintf("ctr%d", i))
		d, err := deleteVeth(ctx, env.Host, br, c.NS)
		if err != nil {
			b.Fatal(err)
		}
		ds = append(ds, d)
	}
	return ds
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
