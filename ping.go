package podnet

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// ErrUnreachable reports that a ping got no reply.
var ErrUnreachable = errors.New("no reply")

// PingOptions bound a ping. The zero value sends up to 3 echo requests,
// one every 300 ms, and waits at most 3 s in all.
type PingOptions struct {
	Count   int           // echo requests at most; the first reply ends the ping
	Timeout time.Duration // total time bound
}

var pingID atomic.Uint32

// Ping sends ICMP echo requests to dst from inside the namespace until one
// is answered, and returns the round-trip time of that one. It sends at
// most opts.Count requests and gives up after opts.Timeout (or when ctx
// ends) with an error wrapping ErrUnreachable. It needs a raw socket (root).
//
// Equivalent to: `ip netns exec NS ping -c COUNT -w TIMEOUT DST` (stopping
// at the first reply).
func (n *Namespace) Ping(ctx context.Context, dst netip.Addr, opts ...PingOptions) (time.Duration, error) {
	rtt, err := n.ping(ctx, dst, opts)
	return rtt, opErr("ping "+dst.String()+" from", "namespace", n.String(), err)
}

func (n *Namespace) ping(ctx context.Context, dst netip.Addr, opts []PingOptions) (time.Duration, error) {
	o := PingOptions{Count: 3, Timeout: 3 * time.Second}
	if len(opts) > 0 {
		if opts[0].Count > 0 {
			o.Count = opts[0].Count
		}
		if opts[0].Timeout > 0 {
			o.Timeout = opts[0].Timeout
		}
	}
	if !dst.IsValid() || dst.Zone() != "" {
		return 0, invalid(ErrInvalidAddress, "ping destination %v is not a valid address", dst)
	}
	dst = dst.Unmap()
	network, echoType, replyType := "ip4:icmp", byte(8), byte(0)
	if dst.Is6() {
		network, echoType, replyType = "ip6:ipv6-icmp", 128, 129
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	c, err := n.ListenPacket(ctx, network, "")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()

	id := uint16(pingID.Add(1)) ^ uint16(time.Now().UnixNano())
	sent := make([]time.Time, o.Count)
	to := &net.IPAddr{IP: dst.AsSlice()}
	interval := o.Timeout / time.Duration(o.Count+1)
	if interval > 300*time.Millisecond {
		interval = 300 * time.Millisecond
	}
	buf := make([]byte, 1500)
	for seq := 0; seq < o.Count; seq++ {
		msg := make([]byte, 16)
		msg[0] = echoType
		binary.BigEndian.PutUint16(msg[4:], id)
		binary.BigEndian.PutUint16(msg[6:], uint16(seq))
		copy(msg[8:], "podnet!!")
		if dst.Is4() {
			binary.BigEndian.PutUint16(msg[2:], icmpChecksum(msg))
		} // the kernel fills in the ICMPv6 checksum
		sent[seq] = time.Now()
		if _, err := c.WriteTo(msg, to); err != nil {
			if ctx.Err() != nil {
				break
			}
			// An unreachable destination can fail the send itself
			// (no route): keep trying until the bound.
		}
		wait := time.Now().Add(interval)
		if seq == o.Count-1 {
			wait = time.Now().Add(o.Timeout)
		}
		for {
			if ctx.Err() != nil {
				return 0, fmt.Errorf("%w from %v after %d requests", ErrUnreachable, dst, seq+1)
			}
			_ = c.SetReadDeadline(wait)
			nr, from, err := c.ReadFrom(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
					break // next request
				}
				return 0, fmt.Errorf("%w from %v after %d requests", ErrUnreachable, dst, seq+1)
			}
			if nr < 8 || buf[0] != replyType || binary.BigEndian.Uint16(buf[4:]) != id {
				continue
			}
			fa, ok := from.(*net.IPAddr)
			if !ok || !fa.IP.Equal(to.IP) {
				continue
			}
			rseq := int(binary.BigEndian.Uint16(buf[6:]))
			if rseq < o.Count {
				return time.Since(sent[rseq]), nil
			}
		}
	}
	return 0, fmt.Errorf("%w from %v after %d requests", ErrUnreachable, dst, o.Count)
}

func icmpChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
