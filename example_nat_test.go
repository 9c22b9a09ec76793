package podnet_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"

	"github.com/podnet/podnet"
)

// A private network behind a "host" namespace: forwarding on, traffic from
// 192.168.52.0/24 leaving through anything but its bridge is masqueraded.
// (Examples need root; they are compiled, not run, by go test.)
func ExampleNewMasquerade() {
	ctx := context.Background()
	host, err := podnet.NewAnonymousNamespace().Create(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer host.Close()

	fwd, err := podnet.NewForwarding().In(host).IPv4(true).Create(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer fwd.Close()

	// iptables -t nat -A PODNET-POSTROUTING -s 192.168.52.0/24 ! -o br0 -j MASQUERADE
	m, err := podnet.NewMasquerade(netip.MustParsePrefix("192.168.52.0/24")).
		In(host).ExceptOut("br0").Create(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	fmt.Println("masquerading", m.Source(), "with", m.Backend())
}

// Publishing ports: many mappings are installed in one iptables-restore
// and removed in one by Close.
func ExampleNewPortForward() {
	ctx := context.Background()
	host, err := podnet.NewAnonymousNamespace().Create(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer host.Close()
	br, err := podnet.NewBridge("br0").In(host).Address(netip.MustParsePrefix("192.168.52.1/24")).Create(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer br.Close()

	pf, err := podnet.NewPortForward().In(host).
		// iptables -t nat -A PODNET-PF-ID -p tcp --dport 8080 -j DNAT --to-destination 192.168.52.2:80
		Map(podnet.PortMapping{Proto: podnet.TCP, HostPort: 8080, To: netip.MustParseAddrPort("192.168.52.2:80")}).
		// ... --dport 5353 -j DNAT --to-destination 192.168.52.2:53
		Map(podnet.PortMapping{Proto: podnet.UDP, HostPort: 5353, To: netip.MustParseAddrPort("192.168.52.2:53")}).
		// ... --dport 9000:9009 -j DNAT --to-destination 192.168.52.3:7000-7009/9000
		Map(podnet.PortMapping{Proto: podnet.TCP, HostPort: 9000, HostPortEnd: 9009, To: netip.MustParseAddrPort("192.168.52.3:7000")}).
		Create(ctx)
	if err != nil {
		log.Fatal(err) // errors.Is(err, podnet.ErrExists) if a port is already forwarded
	}
	defer pf.Close()
	for _, m := range pf.Mappings() {
		fmt.Println(m)
	}
}

// Two networks on one host, isolated from each other until allowed, and
// forwarded even where the FORWARD policy is DROP.
func ExampleNewBridgeFirewall() {
	ctx := context.Background()
	host, err := podnet.NewAnonymousNamespace().Create(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer host.Close()

	web, err := podnet.NewBridgeFirewall("br-web", netip.MustParsePrefix("10.1.0.0/24")).In(host).Create(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer web.Close()
	db, err := podnet.NewBridgeFirewall("br-db", netip.MustParsePrefix("10.2.0.0/24")).In(host).Create(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	// iptables -I PODNET-ISOLATION -i br-web -o br-db -j RETURN (and back)
	if err := web.Allow(ctx, db.Bridge()); err != nil {
		log.Fatal(err)
	}
}

// Forwarding is put back to its previous value by Close.
func ExampleNewForwarding() {
	ctx := context.Background()
	ns, err := podnet.NewAnonymousNamespace().Create(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer ns.Close()
	fwd, err := podnet.NewForwarding().In(ns).IPv4(true).IPv6(true).Create(ctx)
	if err != nil {
		log.Fatal(err)
	}
	v, _ := ns.Sysctl("net.ipv4.ip_forward")
	fmt.Println("ip_forward =", v)
	if err := fwd.Close(); err != nil {
		log.Fatal(err)
	}
}
