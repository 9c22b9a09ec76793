package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/podnet/podnet"
)

// pod is one onboarded namespace as the reachability check sees it.
type pod struct {
	addr netip.Addr
	ns   *podnet.Namespace // when the implementation holds a podnet Namespace
	path string            // otherwise a path OpenNamespace can open
}

// open returns the pod's namespace and a func that releases it.
func (p pod) open() (*podnet.Namespace, func(), error) {
	if p.ns != nil {
		return p.ns, func() {}, nil
	}
	ns, err := podnet.OpenNamespace(p.path)
	if err != nil {
		return nil, nil, err
	}
	return ns, func() { _ = ns.Close() }, nil
}

// Bounds of every probe: a failing check gives up within probeTimeout.
// The echo requests are spread over most of it (every 220 ms or so): a
// link that just came up may drop what it is given until the kernel's
// link watcher, which can lag by a second on a busy machine, activates it.
const (
	probeCount   = 8
	probeTimeout = 2 * time.Second
	probePort    = 7777
	probeGreet   = "podnet-bench"
)

// reachTarget is where a topology must carry traffic to.
type reachTarget struct {
	gateway  netip.Addr
	internet *podnet.Namespace // nil: masquerade is not checked
	inetAddr netip.Addr
}

// checkReach proves that a topology carries traffic, so that no
// implementation is timed for doing less than the others. From the first
// pod it pings the gateway and the last pod and opens a TCP connection to
// a listener in the last pod; from the last pod it pings the gateway; and
// with an internet namespace, which has no route back to the pods, it
// pings it from the first pod and opens a TCP connection to it from the
// last, which works only through masquerading. Every probe is bounded in
// count and time.
func checkReach(ctx context.Context, pods []pod, t reachTarget) error {
	if len(pods) == 0 {
		return errors.New("no pods to check")
	}
	first, last := pods[0], pods[len(pods)-1]
	fns, releaseFirst, err := first.open()
	if err != nil {
		return fmt.Errorf("open first pod: %w", err)
	}
	defer releaseFirst()
	lns := fns
	if len(pods) > 1 {
		var releaseLast func()
		if lns, releaseLast, err = last.open(); err != nil {
			return fmt.Errorf("open last pod: %w", err)
		}
		defer releaseLast()
	}
	opts := podnet.PingOptions{Count: probeCount, Timeout: probeTimeout}
	ping := func(from *podnet.Namespace, src pod, who string, dst netip.Addr, what string) error {
		if _, err := from.Ping(ctx, dst, opts); err != nil {
			return fmt.Errorf("%s pod (%v) cannot ping %s %v: %w", who, src.addr, what, dst, err)
		}
		return nil
	}
	if err := ping(fns, first, "first", t.gateway, "the gateway"); err != nil {
		return err
	}
	if len(pods) > 1 {
		if err := ping(lns, last, "last", t.gateway, "the gateway"); err != nil {
			return err
		}
		if err := ping(fns, first, "first", last.addr, "the last pod"); err != nil {
			return err
		}
		if err := tcpProbe(ctx, lns, last.addr, fns); err != nil {
			return fmt.Errorf("first pod cannot connect to the last pod: %w", err)
		}
	}
	if t.internet != nil {
		if err := ping(fns, first, "first", t.inetAddr, "the internet"); err != nil {
			return err
		}
		if err := tcpProbe(ctx, t.internet, t.inetAddr, lns); err != nil {
			return fmt.Errorf("last pod cannot connect to the internet: %w", err)
		}
	}
	return nil
}

// tcpProbe listens on addr:probePort in srv and connects to it from cli;
// it succeeds when the client reads the server's greeting.
func tcpProbe(ctx context.Context, srv *podnet.Namespace, addr netip.Addr, cli *podnet.Namespace) error {
	ap := netip.AddrPortFrom(addr, probePort)
	return tcpProbeVia(ctx, srv, ap, cli, ap)
}

// tcpProbeVia listens on listen in srv and connects from cli to dial,
// which reaches listen through NAT or not at all; it succeeds when the
// client reads the server's greeting.
func tcpProbeVia(ctx context.Context, srv *podnet.Namespace, listen netip.AddrPort, cli *podnet.Namespace, dial netip.AddrPort) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	l, err := srv.Listen(ctx, "tcp", listen.String())
	if err != nil {
		return err
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		_ = c.SetDeadline(time.Now().Add(probeTimeout))
		_, _ = c.Write([]byte(probeGreet + "\n"))
		_ = c.Close()
	}()
	c, err := cli.Dial(ctx, "tcp", dial.String())
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(probeTimeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read greeting via %s: %w", dial, err)
	}
	if strings.TrimSpace(line) != probeGreet {
		return fmt.Errorf("unexpected greeting %q via %s", line, dial)
	}
	return nil
}
