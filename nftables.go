package podnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// nftMsgDestroyChain is NFT_MSG_DESTROYCHAIN (Linux 6.3): delete a chain,
// and succeed if it does not exist. Older kernels reject it, and podnet then
// leaves the empty table in place.
const nftMsgDestroyChain = 0x1b

// nftDeleteTableIfEmpty deletes the nf_tables table of family fam (4 or 6)
// named table in ns, if it holds nothing but empty base chains among
// chains. iptables-nft leaves a table behind once it has created it; this
// is how podnet takes away a table it created.
//
// It is one nf_tables transaction: every base chain is destroyed with
// NLM_F_NONREC, which the kernel refuses (EBUSY) for a chain holding a
// rule, then the table, again with NLM_F_NONREC, which the kernel refuses
// if it holds any other chain, set or object. A refusal aborts the whole
// transaction, so another user's rules are never removed.
//
// Equivalent to (but only if empty): `nft delete table ip nat`
func nftDeleteTableIfEmpty(ns *Namespace, fam int, table string, chains []string) error {
	proto := uint8(unix.NFPROTO_IPV4)
	if fam == 6 {
		proto = unix.NFPROTO_IPV6
	}
	return onThreadIn(ns.fd, func() error {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		tv := unix.NsecToTimeval(int64(2 * time.Second))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return err
		}
		var msg []byte
		seq := uint32(1)
		first := seq
		msg = nlMsg(msg, unix.NFNL_MSG_BATCH_BEGIN, unix.NLM_F_REQUEST, seq, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES, nil)
		acks := 0
		flags := uint16(unix.NLM_F_REQUEST | unix.NLM_F_ACK | unix.NLM_F_NONREC)
		for _, c := range chains {
			seq++
			acks++
			msg = nlMsg(msg, unix.NFNL_SUBSYS_NFTABLES<<8|nftMsgDestroyChain, flags, seq, proto, 0,
				[][2]any{{unix.NFTA_CHAIN_TABLE, table}, {unix.NFTA_CHAIN_NAME, c}})
		}
		seq++
		acks++
		msg = nlMsg(msg, unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_DELTABLE, flags, seq, proto, 0,
			[][2]any{{unix.NFTA_TABLE_NAME, table}})
		seq++
		msg = nlMsg(msg, unix.NFNL_MSG_BATCH_END, unix.NLM_F_REQUEST, seq, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES, nil)
		if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return err
		}
		buf := make([]byte, 1<<16)
		for acks > 0 {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				return fmt.Errorf("nf_tables: %w", err)
			}
			msgs, err := parseNlMsgs(buf[:n])
			if err != nil {
				return err
			}
			for _, m := range msgs {
				if m.seq < first || m.seq > seq {
					continue
				}
				if m.typ == unix.NLMSG_ERROR {
					if m.errno != 0 {
						return fmt.Errorf("nf_tables: delete table %s: %w", table, unix.Errno(m.errno))
					}
					acks--
				}
			}
		}
		return nil
	})
}

// nlMsg appends a netlink message with an nfgenmsg header and string
// attributes to b.
func nlMsg(b []byte, typ, flags uint16, seq uint32, family uint8, resID uint16, attrs [][2]any) []byte {
	start := len(b)
	b = append(b, make([]byte, unix.SizeofNlMsghdr)...)
	b = append(b, family, unix.NFNETLINK_V0, byte(resID>>8), byte(resID))
	for _, a := range attrs {
		s := a[1].(string) + "\x00"
		l := unix.SizeofNlAttr + len(s)
		b = binary.NativeEndian.AppendUint16(b, uint16(l))
		b = binary.NativeEndian.AppendUint16(b, uint16(a[0].(int)))
		b = append(b, s...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
	}
	h := b[start:]
	binary.NativeEndian.PutUint32(h[0:], uint32(len(b)-start))
	binary.NativeEndian.PutUint16(h[4:], typ)
	binary.NativeEndian.PutUint16(h[6:], flags)
	binary.NativeEndian.PutUint32(h[8:], seq)
	return b
}

type nlReply struct {
	typ   uint16
	seq   uint32
	errno int32 // for NLMSG_ERROR: the positive errno, 0 for an ack
}

func parseNlMsgs(b []byte) ([]nlReply, error) {
	var out []nlReply
	for len(b) >= unix.SizeofNlMsghdr {
		l := int(binary.NativeEndian.Uint32(b[0:]))
		if l < unix.SizeofNlMsghdr || l > len(b) {
			return nil, errors.New("nf_tables: malformed netlink reply")
		}
		r := nlReply{typ: binary.NativeEndian.Uint16(b[4:]), seq: binary.NativeEndian.Uint32(b[8:])}
		if r.typ == unix.NLMSG_ERROR && l >= unix.SizeofNlMsghdr+4 {
			r.errno = -int32(binary.NativeEndian.Uint32(b[unix.SizeofNlMsghdr:]))
		}
		out = append(out, r)
		l = (l + 3) &^ 3
		if l > len(b) {
			break
		}
		b = b[l:]
	}
	return out, nil
}
