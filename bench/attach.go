package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// attachEnv is what every implementation of the attach suite builds: a
// bridge named bridge holding gw on subnet, namespaces attached to it with
// an address from subnet and a default route via gw, and (with masq)
// forwarding and masquerading of the subnet's traffic that leaves through
// another interface.
type attachEnv struct {
	bridge string
	subnet netip.Prefix
	gw     netip.Addr
	masq   bool
	cni    *cniPlugins // built CNI plugins; nil when the cni implementation is not run
	tmp    string      // scratch directory for CNI state
}

func defaultAttachEnv() *attachEnv {
	return &attachEnv{
		bridge: "benchbr",
		subnet: netip.MustParsePrefix("10.88.0.0/16"),
		gw:     netip.MustParsePrefix("10.88.0.1/16").Addr(),
		masq:   true,
	}
}

// addr returns the address of pod i for implementations without IPAM
// (raw and shell): the gateway is .1, pods start at .2, as in the pools.
func (e *attachEnv) addr(i int) netip.Addr {
	b := e.subnet.Addr().As4()
	v := binary.BigEndian.Uint32(b[:]) + 2 + uint32(i)
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// gwPrefix returns the gateway with the subnet's prefix length.
func (e *attachEnv) gwPrefix() netip.Prefix { return netip.PrefixFrom(e.gw, e.subnet.Bits()) }

// attacher is one implementation of the attach suite inside one sandbox.
// The runner calls up once, attach for i = 0..n-1, detach for the same i,
// then down; a failure at any point is followed by close.
type attacher interface {
	// up creates the network: bridge, gateway address, forwarding and
	// masquerading (an implementation that does this lazily does nothing).
	up(ctx context.Context) error
	// attach creates namespace i and onboards it onto the network.
	attach(ctx context.Context, i int) error
	// detach offboards namespace i and deletes it.
	detach(ctx context.Context, i int) error
	// down removes whatever of the network is left.
	down(ctx context.Context) error
	// pods lists the attached namespaces, for the reachability check.
	pods() []pod
	// close releases what the implementation holds outside the sandbox
	// (file descriptors, scratch files) after a failure; idempotent.
	close() error
}

// attachKind is an implementation of the attach suite as reported.
type attachKind struct {
	impl       string // the name in the results
	teardownOp string // "teardown", or "teardown-batch" for Network.Close
	note       string // what it does, for the table's legend
	make       func(sb *sandbox, env *attachEnv) (attacher, error)
}

func attachKinds(env *attachEnv) []attachKind {
	ks := []attachKind{
		{"podnet", "teardown", "Network.Attach; Attachment.Close one by one, then Network.Close",
			func(sb *sandbox, env *attachEnv) (attacher, error) { return newPodnetAttacher(sb, env, false), nil }},
		{"podnet", "teardown-batch", "Network.Attach; Network.Close deletes all attachments in one batch",
			func(sb *sandbox, env *attachEnv) (attacher, error) { return newPodnetAttacher(sb, env, true), nil }},
		{"raw", "teardown", "vishvananda/netlink calls only; no IPv6 link-local address (addr_gen_mode none) on the bridge and both veth ends, as podnet",
			func(sb *sandbox, env *attachEnv) (attacher, error) { return newRawAttacher(sb, env, false) }},
		{"raw-ipv6", "teardown", "the same with IPv6 as the kernel sets it up: link-local address, DAD, MLD (as the CNI bridge plugin leaves it)",
			func(sb *sandbox, env *attachEnv) (attacher, error) { return newRawAttacher(sb, env, true) }},
	}
	if env.cni != nil {
		ks = append(ks, attachKind{"cni", "teardown", "libcni ADD/DEL of the reference bridge + host-local plugins " + env.cni.version + ", ipMasq",
			func(sb *sandbox, env *attachEnv) (attacher, error) { return newCNIAttacher(sb, env) }})
	}
	ks = append(ks, attachKind{"shell", "teardown", "bash running ip and iptables commands, one script run per step",
		func(sb *sandbox, env *attachEnv) (attacher, error) { return newShellAttacher(sb, env), nil }})
	return ks
}

// attachRep is the outcome of one repetition: total setup and teardown
// time of each kind, in attachKinds order.
type attachRep struct {
	setup, teardown []time.Duration
}

// runAttachRep runs one repetition of the attach suite with n namespaces.
// Every kind gets a sandbox of its own; their steps are interleaved
// round-robin (network creation, then attach i for each kind, the order
// rotating from step to step), so that the machine's drift and the other
// load on it hit all of them alike. After the setup, each topology must
// pass checkReach; after the teardown, each sandbox must be clean. Neither
// check is timed.
func runAttachRep(ctx context.Context, env *attachEnv, kinds []attachKind, n int, progress func(string)) (rep attachRep, err error) {
	type inst struct {
		sb *sandbox
		a  attacher
	}
	insts := make([]inst, len(kinds))
	defer func() {
		for _, in := range insts {
			if in.a != nil {
				err = errors.Join(err, in.a.close())
			}
			if in.sb != nil {
				err = errors.Join(err, in.sb.Close())
			}
		}
	}()
	for k, kind := range kinds {
		sb, err := newSandbox(ctx)
		if err != nil {
			return rep, fmt.Errorf("sandbox: %w", err)
		}
		insts[k].sb = sb
		if insts[k].a, err = kind.make(sb, env); err != nil {
			return rep, fmt.Errorf("%s: %w", kind.impl, err)
		}
	}
	rep.setup = make([]time.Duration, len(kinds))
	rep.teardown = make([]time.Duration, len(kinds))
	step := func(s int, what string, acc []time.Duration, fn func(a attacher) error) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		for k := range insts {
			j := (k + s) % len(insts)
			t0 := time.Now()
			err := fn(insts[j].a)
			acc[j] += time.Since(t0)
			if err != nil {
				return fmt.Errorf("%s (%s): %s: %w", kinds[j].impl, kinds[j].teardownOp, what, err)
			}
		}
		return nil
	}
	if err := step(0, "up", rep.setup, func(a attacher) error { return a.up(ctx) }); err != nil {
		return rep, err
	}
	for i := 0; i < n; i++ {
		if err := step(i+1, fmt.Sprintf("attach %d", i), rep.setup, func(a attacher) error { return a.attach(ctx, i) }); err != nil {
			return rep, err
		}
		if n >= 100 && (i+1)%(n/4) == 0 {
			progress(fmt.Sprintf("attached %d/%d", i+1, n))
		}
	}
	for k, in := range insts {
		t := reachTarget{gateway: env.gw}
		if env.masq {
			t.internet, t.inetAddr = in.sb.inet, inetAddr.Addr()
		}
		if err := checkReach(ctx, in.a.pods(), t); err != nil {
			return rep, fmt.Errorf("%s (%s): reachability: %w", kinds[k].impl, kinds[k].teardownOp, err)
		}
	}
	for i := 0; i < n; i++ {
		if err := step(i, fmt.Sprintf("detach %d", i), rep.teardown, func(a attacher) error { return a.detach(ctx, i) }); err != nil {
			return rep, err
		}
	}
	if err := step(n, "down", rep.teardown, func(a attacher) error { return a.down(ctx) }); err != nil {
		return rep, err
	}
	for k, in := range insts {
		if err := in.sb.checkClean(ctx); err != nil {
			return rep, fmt.Errorf("%s (%s): after teardown: %w", kinds[k].impl, kinds[k].teardownOp, err)
		}
	}
	return rep, nil
}

// attachReps is how many repetitions each N gets: small N repeat so that
// every point rests on enough namespaces to take a median over.
func attachReps(n int, quick bool) int {
	switch {
	case quick && n == 1:
		return 3
	case quick:
		return 1
	case n <= 1:
		return 10
	case n <= 10:
		return 5
	case n <= 100:
		return 2
	default:
		return 1
	}
}

// runAttachSuite runs every repetition for every N and records the cost
// per namespace: setup is (network creation + n attaches) / n, teardown
// is (n detaches + network removal) / n.
func runAttachSuite(ctx context.Context, env *attachEnv, ns []int, quick bool, c *collector, progress func(string)) error {
	kinds := attachKinds(env)
	for _, k := range kinds {
		c.note("attach", k.impl, k.teardownOp, k.note)
	}
	for _, n := range ns {
		reps := attachReps(n, quick)
		for r := 0; r < reps; r++ {
			progress(fmt.Sprintf("attach: n=%d rep %d/%d", n, r+1, reps))
			rep, err := runAttachRep(ctx, env, kinds, n, progress)
			if err != nil {
				return fmt.Errorf("attach n=%d: %w", n, err)
			}
			for k, kind := range kinds {
				c.add(key{"attach", kind.impl, n, "setup"}, perOp(rep.setup[k], n))
				c.add(key{"attach", kind.impl, n, kind.teardownOp}, perOp(rep.teardown[k], n))
			}
		}
	}
	return nil
}

// preflightAttach builds every implementation's topology with two
// namespaces and checks it, before anything is timed.
func preflightAttach(ctx context.Context, env *attachEnv) error {
	_, err := runAttachRep(ctx, env, attachKinds(env), 2, func(string) {})
	return err
}

func perOp(d time.Duration, n int) float64 { return float64(d.Nanoseconds()) / float64(n) }
