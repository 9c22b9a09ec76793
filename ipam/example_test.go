package ipam_test

import (
	"errors"
	"fmt"
	"log"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/podnet/podnet/ipam"
)

func ExampleNew() {
	pool, err := ipam.New(netip.MustParsePrefix("10.88.0.0/24"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	gw, _ := pool.Gateway()
	a, err := pool.Allocate()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("gateway", gw)
	fmt.Println("first", a)
	fmt.Println("free", pool.Free())
	// Output:
	// gateway 10.88.0.1
	// first 10.88.0.2
	// free 252
}

func ExamplePool_Allocate() {
	// A /30 has two usable addresses; the gateway takes one.
	pool, err := ipam.New(netip.MustParsePrefix("192.0.2.0/30"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	a, _ := pool.Allocate()
	fmt.Println(a)
	_, err = pool.Allocate()
	fmt.Println(errors.Is(err, ipam.ErrExhausted), err)
	// Output:
	// 192.0.2.2
	// true ipam: allocate: no free address in pool
}

func ExamplePool_Allocate_roundRobin() {
	pool, err := ipam.New(netip.MustParsePrefix("fd00:10::/64"),
		ipam.Range(netip.MustParseAddr("fd00:10::a"), netip.MustParseAddr("fd00:10::c")))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	a, _ := pool.Allocate()
	b, _ := pool.Allocate()
	_ = pool.Release(a)
	// a is free again, but the rest of the range comes first.
	c, _ := pool.Allocate()
	d, _ := pool.Allocate()
	fmt.Println(a, b, c, d)
	// Output:
	// fd00:10::a fd00:10::b fd00:10::c fd00:10::a
}

func ExamplePool_AllocateFor() {
	pool, err := ipam.New(netip.MustParsePrefix("10.88.0.0/16"), ipam.NoGateway())
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	owner := "0b3f7c1e/eth0" // containerID/ifname, as CNI keys attachments
	a, _ := pool.AllocateFor(owner)
	who, _ := pool.Owner(a)
	fmt.Println(a, who, pool.Lookup(owner))

	released, _ := pool.ReleaseOwner(owner)
	fmt.Println(released, pool.Used())
	// Output:
	// 10.88.0.1 0b3f7c1e/eth0 [10.88.0.1]
	// [10.88.0.1] 0
}

func ExamplePool_AllocateAddr() {
	pool, err := ipam.New(netip.MustParsePrefix("10.88.0.0/24"),
		ipam.Exclude(netip.MustParseAddr("10.88.0.53")))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	fmt.Println(pool.AllocateAddr(netip.MustParseAddr("10.88.0.10")))
	fmt.Println(pool.AllocateAddr(netip.MustParseAddr("10.88.0.10")))
	fmt.Println(pool.AllocateAddr(netip.MustParseAddr("10.88.0.53")))
	fmt.Println(pool.AllocateAddr(netip.MustParseAddr("10.89.0.1")))
	// Output:
	// <nil>
	// ipam: allocate 10.88.0.10: address already allocated
	// ipam: allocate 10.88.0.53: address reserved
	// ipam: allocate 10.89.0.1: address out of range: not in 10.88.0.0/24
}

// A requested address with Advance moves the round-robin position, as
// host-local does; AllocateFrom walks forward from an address without
// wrapping, so that several pools can be walked as one range.
func ExamplePool_AllocateFrom() {
	pool, err := ipam.New(netip.MustParsePrefix("10.88.0.0/24"),
		ipam.Range(netip.MustParseAddr("10.88.0.10"), netip.MustParseAddr("10.88.0.20")))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	fmt.Println(pool.AllocateAddr(netip.MustParseAddr("10.88.0.15"), ipam.Advance()))
	fmt.Println(pool.Allocate())
	fmt.Println(pool.AllocateFrom(netip.MustParseAddr("10.88.0.19")))
	fmt.Println(pool.AllocateFrom(netip.MustParseAddr("10.88.0.19")))
	fmt.Println(pool.AllocateFrom(netip.MustParseAddr("10.88.0.19")))
	// Output:
	// <nil>
	// 10.88.0.16 <nil>
	// 10.88.0.19 <nil>
	// 10.88.0.20 <nil>
	// invalid IP ipam: allocate: no free address in pool
}

func ExamplePool_GC() {
	pool, err := ipam.New(netip.MustParsePrefix("10.88.0.0/24"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	for _, owner := range []string{"a/eth0", "b/eth0", "c/eth0"} {
		if _, err := pool.AllocateFor(owner); err != nil {
			log.Fatal(err)
		}
	}
	// The runtime says only b is still attached.
	released, err := pool.GC(func(owner string) bool { return owner == "b/eth0" })
	if err != nil {
		log.Fatal(err)
	}
	for _, a := range released {
		fmt.Println("released", a.Addr, a.Owner)
	}
	for a := range pool.All() {
		fmt.Println("kept", a.Addr, a.Owner)
	}
	// Output:
	// released 10.88.0.2 a/eth0
	// released 10.88.0.4 c/eth0
	// kept 10.88.0.3 b/eth0
}

func ExampleOpen() {
	base, err := os.MkdirTemp("", "ipam-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(base)
	dir := filepath.Join(base, "networks", "podnet0")
	prefix := netip.MustParsePrefix("10.88.0.0/16")

	pool, err := ipam.Open(dir, prefix)
	if err != nil {
		log.Fatal(err)
	}
	a, err := pool.AllocateFor("c1/eth0") // durable when it returns
	if err != nil {
		log.Fatal(err)
	}
	pool.Close()

	// Another process (or a restart) sees the allocation.
	pool, err = ipam.Open(dir, prefix)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	fmt.Println(a, pool.Lookup("c1/eth0"))

	_, err = ipam.Open(dir, netip.MustParsePrefix("10.99.0.0/16"))
	fmt.Println(errors.Is(err, ipam.ErrInvalid))
	// Output:
	// 10.88.0.2 [10.88.0.2]
	// true
}

func ExampleRange() {
	pool, err := ipam.New(netip.MustParsePrefix("10.88.0.0/24"),
		ipam.Range(netip.MustParseAddr("10.88.0.100"), netip.MustParseAddr("10.88.0.199")),
		ipam.ExcludePrefix(netip.MustParsePrefix("10.88.0.100/30")))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	a, _ := pool.Allocate()
	fmt.Println(a, pool.Size())

	_, err = ipam.New(netip.MustParsePrefix("10.88.0.0/24"),
		ipam.Range(netip.MustParseAddr("10.88.0.200"), netip.MustParseAddr("10.88.0.100")))
	fmt.Println(err)
	// Output:
	// 10.88.0.104 96
	// ipam: new: invalid argument: range start 10.88.0.200 is after range end 10.88.0.100
}
