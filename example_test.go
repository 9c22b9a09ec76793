package podnet_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"

	"github.com/podnet/podnet"
)

// The seed by hand: two namespaces on a bridge with a default route each.
// (Examples that need root are compiled, not run.)
func Example() {
	ctx := context.Background()
	orange, err := podnet.NewNamespace("orange").Create(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer orange.Close()
	br, err := podnet.NewBridge("br0").Address(netip.MustParsePrefix("192.168.52.1/24")).Create(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer br.Close()
	pair, err := podnet.NewVethPair("veth-orange").Master(br).
		Peer("eth0", orange).PeerAddress(netip.MustParsePrefix("192.168.52.2/24")).
		Create(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer pair.Close()
	if err := orange.AddDefaultRoute(ctx, netip.MustParseAddr("192.168.52.1")); err != nil {
		log.Fatal(err)
	}
	rtt, err := orange.Ping(ctx, netip.MustParseAddr("192.168.52.1"))
	fmt.Println(rtt > 0, err)
}

func ExampleNamespace_Do() {
	ns, err := podnet.NewAnonymousNamespace().Create(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()
	// Runs on a thread inside ns; the caller's thread never moves.
	err = ns.Do(func() error {
		// open sockets, write /proc/sys/net files, exec programs...
		return nil
	})
	fmt.Println(err)
}

func ExampleNamespace_Command() {
	ns, err := podnet.NewAnonymousNamespace().Create(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()
	out, err := ns.Command("ip", "-brief", "link").Output()
	fmt.Printf("%s %v\n", out, err)
}

func ExampleNetwork_Attach() {
	ctx := context.Background()
	nw, err := podnet.NewNetwork("br-lan", netip.MustParsePrefix("10.10.0.0/24"), netip.MustParsePrefix("fd10::/64")).
		Create(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer nw.Close() // offboards whatever is still attached
	ns, err := podnet.NewAnonymousNamespace().Create(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()
	att, err := nw.Attach(ctx, ns, podnet.IfName("eth0"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(att.Interface(), att.Addresses()) // eth0 [10.10.0.2/24 fd10::2/64]
	// Offboard: the link goes, the addresses return to the pools.
	if err := att.Close(); err != nil {
		log.Fatal(err)
	}
}

func ExampleTopology() {
	ctx := context.Background()
	lab, err := podnet.Topology().
		Network("lan", "192.168.52.0/24").Masquerade().
		Host("orange", "lan").
		Host("purple", "lan").
		Internet("internet", "203.0.113.0/24").
		Create(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer lab.Close()
	fmt.Println(lab.Host("orange").PingNode(ctx, lab.Host("purple")))
	fmt.Println(lab.Host("orange").PingNode(ctx, lab.Host("internet")))
}
