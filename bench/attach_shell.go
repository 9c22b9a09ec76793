package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// shellScript is the shell implementation: what an admin's script does
// with ip and iptables, the same work as podnet (no IPv6 link-local
// address on IPv4-only links, forwarding restored on the way down). It is fixed text; every
// parameter arrives as a positional argument and is only ever quoted, never
// interpolated into code. bash runs with its process inside the sandbox,
// and `ip netns add` mounts into the bench's private /run/netns.
const shellScript = `set -euo pipefail
op=$1; shift
case $op in
up) # BRIDGE GATEWAY/LEN SUBNET SAVE-IP-FORWARD-TO
	ip link add "$1" type bridge
	ip link set "$1" addrgenmode none
	ip addr add "$2" dev "$1"
	ip link set "$1" up
	read -r fwd < /proc/sys/net/ipv4/ip_forward
	echo "$fwd" > "$4"
	echo 1 > /proc/sys/net/ipv4/ip_forward
	iptables -w -t nat -A POSTROUTING -s "$3" ! -o "$1" -j MASQUERADE
	;;
up-nomasq) # BRIDGE GATEWAY/LEN
	ip link add "$1" type bridge
	ip link set "$1" addrgenmode none
	ip addr add "$2" dev "$1"
	ip link set "$1" up
	;;
attach) # NETNS HOSTIF BRIDGE ADDRESS/LEN GATEWAY
	ip netns add "$1"
	ip -n "$1" link set lo up
	ip link add "$2" type veth peer name eth0 netns "$1"
	ip link set "$2" addrgenmode none
	ip -n "$1" link set eth0 addrgenmode none
	ip link set "$2" master "$3" up
	ip -n "$1" addr add "$4" dev eth0
	ip -n "$1" link set eth0 up
	ip -n "$1" route add default via "$5"
	;;
detach) # NETNS HOSTIF
	ip link del "$2"
	ip netns del "$1"
	;;
down) # BRIDGE SUBNET SAVED-IP-FORWARD
	iptables -w -t nat -D POSTROUTING -s "$2" ! -o "$1" -j MASQUERADE
	read -r fwd < "$3"
	echo "$fwd" > /proc/sys/net/ipv4/ip_forward
	ip link del "$1"
	;;
down-nomasq) # BRIDGE
	ip link del "$1"
	;;
*)
	echo "unknown operation $op" >&2
	exit 2
	;;
esac
`

// shellAttacher runs shellScript once per step, like a script called per
// container.
type shellAttacher struct {
	sb    *sandbox
	env   *attachEnv
	fwd   string // file holding ip_forward's value from before up
	names []string
}

func newShellAttacher(sb *sandbox, env *attachEnv) *shellAttacher {
	return &shellAttacher{sb: sb, env: env}
}

// run executes the script inside the sandbox with op and args as its
// positional parameters.
func (s *shellAttacher) run(ctx context.Context, op string, args ...string) error {
	argv := append([]string{"-c", shellScript, "podnet-bench-shell", op}, args...)
	out, err := s.sb.host.CommandContext(ctx, "bash", argv...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("shell %s: %w: %s", op, err, bytes.TrimSpace(out))
	}
	return nil
}

func (s *shellAttacher) up(ctx context.Context) error {
	if !s.env.masq {
		return s.run(ctx, "up-nomasq", s.env.bridge, s.env.gwPrefix().String())
	}
	f, err := os.CreateTemp(s.env.tmp, "ip_forward-")
	if err != nil {
		return err
	}
	f.Close()
	s.fwd = f.Name()
	return s.run(ctx, "up", s.env.bridge, s.env.gwPrefix().String(), s.env.subnet.String(), s.fwd)
}

func (s *shellAttacher) attach(ctx context.Context, i int) error {
	name := "benchpod" + strconv.Itoa(i)
	s.names = append(s.names, name)
	addr := fmt.Sprintf("%v/%d", s.env.addr(i), s.env.subnet.Bits())
	return s.run(ctx, "attach", name, "sv"+strconv.Itoa(i), s.env.bridge, addr, s.env.gw.String())
}

func (s *shellAttacher) detach(ctx context.Context, i int) error {
	err := s.run(ctx, "detach", s.names[i], "sv"+strconv.Itoa(i))
	if err == nil {
		s.names[i] = ""
	}
	return err
}

func (s *shellAttacher) down(ctx context.Context) error {
	if !s.env.masq {
		return s.run(ctx, "down-nomasq", s.env.bridge)
	}
	return s.run(ctx, "down", s.env.bridge, s.env.subnet.String(), s.fwd)
}

func (s *shellAttacher) pods() []pod {
	out := make([]pod, len(s.names))
	for i, n := range s.names {
		out[i] = pod{addr: s.env.addr(i), path: filepath.Join("/run/netns", n)}
	}
	return out
}

// close removes namespaces a failed run left in the private /run/netns,
// as `ip netns del` would.
func (s *shellAttacher) close() error {
	var errs []error
	for i, n := range s.names {
		if n == "" {
			continue
		}
		p := filepath.Join("/run/netns", n)
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		s.names[i] = ""
	}
	if s.fwd != "" {
		errs = append(errs, os.Remove(s.fwd))
		s.fwd = ""
	}
	return errors.Join(errs...)
}
