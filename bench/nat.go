package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"time"

	"github.com/podnet/podnet"
)

// The nat suite forwards n host ports of the sandbox to one server pod
// on a bridge, and measures publishing and removing them. Each
// implementation gets a sandbox with the same untimed base, built with
// podnet: a network with forwarding and one attached pod. A forward works
// when a TCP connection from the internet namespace to the sandbox's
// uplink address and the host port reaches the pod.
var (
	natSubnet  = netip.MustParsePrefix("10.89.0.0/16")
	natPodPort = uint16(8080)
)

const natFirstPort = 20000

// forwarder is one implementation of the nat suite.
type forwarder interface {
	publish(ctx context.Context, to netip.AddrPort, n int) error
	remove(ctx context.Context) error
}

type natKind struct {
	impl string
	note string
	make func(sb *sandbox) forwarder
}

var natKinds = []natKind{
	{"podnet", "NewPortForward().Map(n mappings).Create with default options (a DNAT rule per forward in its own chain, jumped to from PREROUTING and OUTPUT, plus hairpin and localhost rules per bridge): one iptables-restore per family; Close likewise",
		func(sb *sandbox) forwarder { return &podnetForwarder{sb: sb} }},
	{"iptables-exec", "one `iptables -t nat -A PREROUTING ... -j DNAT` exec per forward; -D per forward to remove",
		func(sb *sandbox) forwarder { return &execForwarder{sb: sb} }},
}

type podnetForwarder struct {
	sb *sandbox
	pf *podnet.PortForward
}

func (f *podnetForwarder) publish(ctx context.Context, to netip.AddrPort, n int) error {
	ms := make([]podnet.PortMapping, n)
	for i := range ms {
		ms[i] = podnet.PortMapping{Proto: podnet.TCP, HostPort: natFirstPort + i, To: to}
	}
	pf, err := podnet.NewPortForward().In(f.sb.host).Map(ms...).Create(ctx)
	f.pf = pf
	return err
}

func (f *podnetForwarder) remove(ctx context.Context) error {
	if f.pf == nil {
		return nil
	}
	err := f.pf.Close()
	f.pf = nil
	return err
}

type execForwarder struct {
	sb *sandbox
	to netip.AddrPort
	n  int // rules installed
}

func (f *execForwarder) rule(op string, i int) []string {
	return []string{"-w", "-t", "nat", op, "PREROUTING", "-p", "tcp", "--dport", strconv.Itoa(natFirstPort + i),
		"-j", "DNAT", "--to-destination", f.to.String()}
}

func (f *execForwarder) iptables(ctx context.Context, args []string) error {
	out, err := f.sb.host.CommandContext(ctx, "iptables", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %v: %w: %s", args, err, bytes.TrimSpace(out))
	}
	return nil
}

func (f *execForwarder) publish(ctx context.Context, to netip.AddrPort, n int) error {
	f.to = to
	for i := 0; i < n; i++ {
		if err := f.iptables(ctx, f.rule("-A", i)); err != nil {
			return err
		}
		f.n = i + 1
	}
	return nil
}

func (f *execForwarder) remove(ctx context.Context) error {
	for ; f.n > 0; f.n-- {
		if err := f.iptables(ctx, f.rule("-D", f.n-1)); err != nil {
			return err
		}
	}
	return nil
}

// natWorld is the untimed base of one implementation.
type natWorld struct {
	sb  *sandbox
	nw  *podnet.Network
	pod *podnet.Namespace
	to  netip.AddrPort
}

func newNATWorld(ctx context.Context) (_ *natWorld, err error) {
	w := &natWorld{}
	defer func() {
		if err != nil {
			err = errors.Join(err, w.Close())
		}
	}()
	if w.sb, err = newSandbox(ctx); err != nil {
		return w, err
	}
	if w.nw, err = podnet.NewNetwork("natbr", natSubnet).In(w.sb.host).Forwarding().Create(ctx); err != nil {
		return w, err
	}
	if w.pod, err = podnet.NewAnonymousNamespace().Create(ctx); err != nil {
		return w, err
	}
	a, err := w.nw.Attach(ctx, w.pod)
	if err != nil {
		return w, err
	}
	addr, _ := a.Addr(4)
	w.to = netip.AddrPortFrom(addr, natPodPort)
	return w, nil
}

func (w *natWorld) Close() error {
	var errs []error
	if w.nw != nil {
		errs = append(errs, w.nw.Close())
	}
	if w.pod != nil {
		errs = append(errs, w.pod.Close())
	}
	if w.sb != nil {
		errs = append(errs, w.sb.Close())
	}
	return errors.Join(errs...)
}

// checkForwards connects from the internet to the first and the last
// forwarded port, which must reach the pod.
func (w *natWorld) checkForwards(ctx context.Context, n int) error {
	for _, i := range []int{0, n - 1} {
		dial := netip.AddrPortFrom(uplinkAddr.Addr(), uint16(natFirstPort+i))
		if err := tcpProbeVia(ctx, w.pod, w.to, w.sb.inet, dial); err != nil {
			return fmt.Errorf("forward %d: %w", i, err)
		}
	}
	return nil
}

// checkRemoved reports DNAT rules left in the sandbox (either backend).
func (w *natWorld) checkRemoved(ctx context.Context) error {
	for _, prog := range []string{"iptables-save", "iptables-legacy-save"} {
		if _, err := exec.LookPath(prog); err != nil {
			continue
		}
		out, err := w.sb.host.CommandContext(ctx, prog, "-t", "nat").Output()
		if err != nil {
			return fmt.Errorf("%s: %w", prog, err)
		}
		if c := bytes.Count(out, []byte("-j DNAT")); c > 0 {
			return fmt.Errorf("%d DNAT rules left (%s)", c, prog)
		}
	}
	return nil
}

// runNATRep publishes and removes n forwards with every implementation,
// in an order that rotates with rep, checking each set of forwards
// (untimed) between the two.
func runNATRep(ctx context.Context, n, rep int) (publish, remove []time.Duration, err error) {
	worlds := make([]*natWorld, len(natKinds))
	fws := make([]forwarder, len(natKinds))
	defer func() {
		for k, w := range worlds {
			if fws[k] != nil {
				err = errors.Join(err, fws[k].remove(context.Background()))
			}
			if w != nil {
				err = errors.Join(err, w.Close())
			}
		}
	}()
	for k, kind := range natKinds {
		w, err := newNATWorld(ctx)
		if err != nil {
			return nil, nil, err
		}
		worlds[k] = w
		fws[k] = kind.make(worlds[k].sb)
	}
	publish = make([]time.Duration, len(natKinds))
	remove = make([]time.Duration, len(natKinds))
	for i := range natKinds {
		k := (i + rep) % len(natKinds)
		t0 := time.Now()
		if err := fws[k].publish(ctx, worlds[k].to, n); err != nil {
			return nil, nil, fmt.Errorf("%s: publish: %w", natKinds[k].impl, err)
		}
		publish[k] = time.Since(t0)
	}
	for k := range natKinds {
		if err := worlds[k].checkForwards(ctx, n); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", natKinds[k].impl, err)
		}
	}
	for i := range natKinds {
		k := (i + rep + 1) % len(natKinds)
		t0 := time.Now()
		if err := fws[k].remove(ctx); err != nil {
			return nil, nil, fmt.Errorf("%s: remove: %w", natKinds[k].impl, err)
		}
		remove[k] = time.Since(t0)
	}
	for k := range natKinds {
		if err := worlds[k].checkRemoved(ctx); err != nil {
			return nil, nil, fmt.Errorf("%s: after remove: %w", natKinds[k].impl, err)
		}
	}
	return publish, remove, nil
}

func natReps(n int, quick bool) int {
	switch {
	case quick && n == 1:
		return 3
	case quick:
		return 1
	case n <= 1:
		return 10
	case n <= 100:
		return 3
	default:
		return 1
	}
}

// runNATSuite checks both implementations with two forwards, then times
// every n, and records the cost per forward.
func runNATSuite(ctx context.Context, ns []int, quick bool, c *collector, progress func(string)) error {
	for _, k := range natKinds {
		c.note("nat", k.impl, "setup", k.note)
	}
	progress("nat: checking that every implementation's forwards reach the pod")
	if _, _, err := runNATRep(ctx, 2, 0); err != nil {
		return fmt.Errorf("preflight: %w", err)
	}
	for _, n := range ns {
		reps := natReps(n, quick)
		for r := 0; r < reps; r++ {
			progress(fmt.Sprintf("nat: n=%d rep %d/%d", n, r+1, reps))
			pub, rem, err := runNATRep(ctx, n, r)
			if err != nil {
				return fmt.Errorf("n=%d: %w", n, err)
			}
			for k, kind := range natKinds {
				c.add(key{"nat", kind.impl, n, "setup"}, perOp(pub[k], n))
				c.add(key{"nat", kind.impl, n, "teardown"}, perOp(rem[k], n))
			}
		}
	}
	return nil
}
