// Package podnet builds and tears down isolated Linux networks in-process:
// network namespaces, bridges, veth pairs, addresses, routes, NAT and
// address pools, each a small type with Create/Close semantics.
//
// # Shape of the API
//
// Every kernel object is described by a spec with chained setters that
// cannot fail, made by one terminal Create(ctx) call that validates the
// whole description (reporting every problem at once), builds the object,
// and removes what it built if a later step fails:
//
//	orange, err := podnet.NewNamespace("orange").Create(ctx)
//	br, err := podnet.NewBridge("br0").Address(netip.MustParsePrefix("192.168.52.1/24")).Create(ctx)
//	pair, err := podnet.NewVethPair("veth-orange").Master(br).
//		Peer("eth0", orange).PeerAddress(netip.MustParsePrefix("192.168.52.2/24")).Create(ctx)
//	err = orange.AddDefaultRoute(ctx, netip.MustParseAddr("192.168.52.1"))
//
// Close is idempotent, treats "already gone" as success, and is safe to
// call after the context that created the object is cancelled. Using an
// object after Close returns ErrClosed.
//
// Larger pieces compose the primitives: a Network is a bridge with address
// pools (package ipam), gateways, forwarding, a firewall and masquerade;
// Network.Attach onboards a namespace the way a CNI plugin does, and
// closing the Attachment offboards it. Topology describes a whole lab
// (networks, hosts, routers, an "internet") built by one Create and torn
// down by one Close. Package podnettest runs labs inside a sandbox
// namespace for tests.
//
// # Namespaces and threads
//
// Each Namespace holds a file descriptor and a netlink handle bound to it,
// so netlink work never switches the calling thread. Work that needs a
// thread inside the namespace (sysctls, sockets, exec of iptables) goes
// through Namespace.Do, which runs it on a fresh OS thread and discards
// that thread if it cannot switch back: the caller's thread is never left
// in another namespace.
//
// # Errors
//
// Errors are *OpError values naming the operation and object; errors.Is
// matches both podnet's sentinels (ErrExists, ErrNotFound, ErrClosed,
// ErrInvalidName, ErrInvalidAddress, ErrInvalidRoute, ErrInvalidOption,
// ErrNotPermitted, ErrNotInstalled, ErrUnreachable) and the kernel errno.
//
// # Leaving nothing behind
//
// Every link, named namespace, iptables rule and pool allocation podnet
// makes carries an ownership mark naming the process (pid and start
// time). Sysctls and nf_tables tables podnet changes are recorded under
// /run/podnet before they change. Sweep (and the podnet command) removes
// what dead processes left and never touches what live ones own.
package podnet
