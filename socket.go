package podnet

import (
	"context"
	"net"
)

// Listen announces on the local network address inside the namespace, as
// net.Listen does. The listener's socket lives in the namespace; it can be
// used from any goroutine. The caller must Close it.
func (n *Namespace) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = (&net.ListenConfig{}).Listen(ctx, network, address)
		return err
	})
	return l, opErr("listen", "namespace", n.String(), err)
}

// ListenPacket is Listen for packet-oriented networks (udp, ip:icmp, ...).
func (n *Namespace) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	var c net.PacketConn
	err := n.Do(func() error {
		var err error
		c, err = (&net.ListenConfig{}).ListenPacket(ctx, network, address)
		return err
	})
	return c, opErr("listen", "namespace", n.String(), err)
}

// Dial connects to address from inside the namespace, as
// net.Dialer.DialContext does. The connection's socket lives in the
// namespace. The caller must Close it.
func (n *Namespace) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, address)
		return err
	})
	return c, opErr("dial", "namespace", n.String(), err)
}
