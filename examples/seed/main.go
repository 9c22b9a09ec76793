// Command seed builds podnet's founding scenario and shows that it works:
// two namespaces, orange and purple, on a bridge 192.168.52.0/24 (gateway
// 192.168.52.1) with default routes towards it; IP forwarding and
// masquerading for traffic leaving the subnet; and an "internet"
// namespace at 203.0.113.0/24 standing in for the outside world. They
// ping each other and the internet, the internet sees the masqueraded
// source, and offboarding purple returns its address to the pool.
//
// Everything is built inside a sandbox namespace that stands in for the
// host, so the real host's network is never touched and no packet leaves
// the machine. With -keep the namespaces are named (podnet-seed-*) and left
// in place for `ip netns` inspection; `go run ./cmd/podnet sweep` (or
// `ip netns delete` of each) removes them afterwards.
//
// Run as root:
//
//	go run ./examples/seed
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/podnet/podnet"
)

func main() {
	keep := flag.Bool("keep", false, "keep the topology (named podnet-seed-* namespaces) for inspection with `ip netns`")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := run(ctx, os.Stdout, *keep)
	if err != nil {
		fmt.Fprintln(os.Stderr, "seed:", err)
		os.Exit(1)
	}
	if !res.OK() {
		fmt.Fprintln(os.Stderr, "seed: some results were not as expected")
		os.Exit(1)
	}
	fmt.Println("seed: all results as expected")
}

// Result is what the scenario observed.
type Result struct {
	OrangeToPurple, PurpleToOrange bool
	InternetBeforeNAT              bool // expected false: no forwarding or masquerade yet
	OrangeToInternet               bool
	PurpleToInternet               bool
	InternetSawSource              netip.Addr // expected: the host's 203.0.113.x
	HostOutsideAddr                netip.Addr
	PurpleAddr                     netip.Addr
	PurpleAddrFreed                bool // back in the pool after offboarding
}

// OK reports whether every result is the expected one.
func (r Result) OK() bool {
	return r.OrangeToPurple && r.PurpleToOrange && !r.InternetBeforeNAT && r.OrangeToInternet &&
		r.PurpleToInternet && r.InternetSawSource == r.HostOutsideAddr && r.PurpleAddrFreed
}

func run(ctx context.Context, w io.Writer, keep bool) (res Result, err error) {
	step := func(format string, args ...any) { fmt.Fprintf(w, "==> "+format+"\n", args...) }
	check := func(what string, ok bool) bool {
		mark := "ok  "
		if !ok {
			mark = "FAIL"
		}
		fmt.Fprintf(w, "    [%s] %s\n", mark, what)
		return ok
	}

	step("sandbox: a namespace standing in for the host")
	hostSpec := podnet.NewAnonymousNamespace().Label("seed")
	if keep {
		hostSpec = podnet.NewNamespace("podnet-seed-host").Label("seed")
	}
	host, err := hostSpec.Create(ctx)
	if err != nil {
		return res, err
	}
	topo := podnet.Topology().In(host).Label("seed").
		Network("br-seed", "192.168.52.0/24").
		Host("orange", "br-seed").
		Host("purple", "br-seed").
		Internet("internet", "203.0.113.0/24")
	if keep {
		topo.Named("podnet-seed-")
	}
	step("bridge br-seed 192.168.52.0/24 (gateway 192.168.52.1), orange and purple attached, internet at 203.0.113.0/24")
	lab, err := topo.Create(ctx)
	if err != nil {
		return res, errors.Join(err, host.Close())
	}
	defer func() {
		if keep {
			fmt.Fprintln(w, "kept: ip netns list | grep podnet-seed; remove with: go run ./cmd/podnet sweep")
			return
		}
		step("teardown")
		err = errors.Join(err, lab.Close(), host.Close())
	}()
	orange, purple, inet := lab.Host("orange"), lab.Host("purple"), lab.Host("internet")
	lan := lab.Network("br-seed")
	for _, n := range []*podnet.Node{orange, purple, inet} {
		fmt.Fprintf(w, "    %-8s %v\n", n.Name(), n.Addrs())
	}

	step("orange and purple ping each other")
	res.OrangeToPurple = check("orange -> purple", orange.PingNode(ctx, purple) == nil)
	res.PurpleToOrange = check("purple -> orange", purple.PingNode(ctx, orange) == nil)

	step("orange pings the internet before forwarding and masquerade (must fail)")
	quick := podnet.PingOptions{Count: 2, Timeout: time.Second}
	res.InternetBeforeNAT = orange.PingNode(ctx, inet, quick) == nil
	check("no reply without NAT", !res.InternetBeforeNAT)

	step("forwarding on, masquerade 192.168.52.0/24 leaving through anything but the bridge")
	if err := lan.EnableMasquerade(ctx); err != nil {
		return res, err
	}
	res.OrangeToInternet = check("orange -> internet", orange.PingNode(ctx, inet) == nil)
	res.PurpleToInternet = check("purple -> internet", purple.PingNode(ctx, inet) == nil)

	step("a TCP server in the internet sees the masqueraded source")
	res.HostOutsideAddr = lab.UplinkAddr()
	res.InternetSawSource, err = seenSource(ctx, inet, orange)
	if err != nil {
		return res, err
	}
	check(fmt.Sprintf("internet saw %v (the host's outside address %v), not orange's %v",
		res.InternetSawSource, res.HostOutsideAddr, orange.Addr()), res.InternetSawSource == res.HostOutsideAddr)

	step("offboard purple: its link goes and its address returns to the pool")
	att := purple.Attachment("br-seed")
	res.PurpleAddr = purple.Addr()
	if err := att.Close(); err != nil {
		return res, err
	}
	res.PurpleAddrFreed = check(fmt.Sprintf("%v is free again", res.PurpleAddr), !lan.Pools()[0].Allocated(res.PurpleAddr))
	return res, nil
}

// seenSource runs a TCP server in srv, connects from client and returns the
// source address the server saw.
func seenSource(ctx context.Context, srv, client *podnet.Node) (netip.Addr, error) {
	l, err := srv.Listen(ctx, "tcp", net.JoinHostPort(srv.Addr().String(), "8080"))
	if err != nil {
		return netip.Addr{}, err
	}
	defer l.Close()
	seen := make(chan netip.Addr, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(seen)
			return
		}
		defer c.Close()
		seen <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		_, _ = io.WriteString(c, "hello from the internet\n")
	}()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := client.Dial(dctx, "tcp", net.JoinHostPort(srv.Addr().String(), "8080"))
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	select {
	case a := <-seen:
		return a, nil
	case <-dctx.Done():
		return netip.Addr{}, dctx.Err()
	}
}
