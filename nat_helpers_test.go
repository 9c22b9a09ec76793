package podnet_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/podnettest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// backends is the table the NAT tests run over.
var backends = []struct {
	name string
	b    podnet.IptablesBackend
}{
	{"nft", podnet.IptablesNFT},
	{"legacy", podnet.IptablesLegacy},
}

// natWorld is a small network inside throwaway namespaces:
//
//	internet (203.0.113.1/24, eth0)
//	   |
//	host: the sandbox (uplink 203.0.113.2/24, default via 203.0.113.1;
//	      br0 192.168.52.1/24, forwarding on)
//	   |
//	a (192.168.52.2)   b (192.168.52.3)   on br0, default via 192.168.52.1
//
// The internet has no route back to 192.168.52.0/24: without NAT, replies
// to the private addresses go nowhere.
type natWorld struct {
	host, internet, a, b *podnet.Namespace
	br                   *podnet.Bridge
}

const (
	hostOutside = "203.0.113.2"
	internetIP  = "203.0.113.1"
)

func newNATWorld(t *testing.T) *natWorld {
	t.Helper()
	ctx := testCtx(t)
	w := &natWorld{host: podnettest.Sandbox(t), internet: podnettest.Namespace(t), a: podnettest.Namespace(t), b: podnettest.Namespace(t)}
	up, err := podnet.NewVethPair("uplink").In(w.host).Address(pfx(hostOutside+"/24")).
		Peer("eth0", w.internet).PeerAddress(pfx(internetIP + "/24")).Create(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, up.Close()) })
	require.NoError(t, w.host.AddDefaultRoute(ctx, ip(internetIP)))
	w.br = addBridge(t, w.host, "br0", "192.168.52.1/24")
	attach(t, w.host, w.br, "veth-a", w.a, "192.168.52.2/24", "192.168.52.1")
	attach(t, w.host, w.br, "veth-b", w.b, "192.168.52.3/24", "192.168.52.1")
	fw, err := podnet.NewForwarding().In(w.host).IPv4(true).Create(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, fw.Close()) })
	return w
}

func addBridge(t *testing.T, host *podnet.Namespace, name string, addrs ...string) *podnet.Bridge {
	t.Helper()
	spec := podnet.NewBridge(name).In(host)
	for _, a := range addrs {
		spec.Address(pfx(a))
	}
	br, err := spec.Create(testCtx(t))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, br.Close()) })
	return br
}

func attach(t *testing.T, host *podnet.Namespace, br *podnet.Bridge, name string, ns *podnet.Namespace, addr, gw string) {
	t.Helper()
	ctx := testCtx(t)
	// Hairpin: with br_netfilter active (bridge-nf-call-iptables=1), a
	// namespace reaching its own forwarded port has its DNATed frame
	// bridged straight back out of the port it came in on.
	v, err := podnet.NewVethPair(name).In(host).Master(br).Hairpin(true).Peer("eth0", ns).PeerAddress(pfx(addr)).Create(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, v.Close()) })
	require.NoError(t, ns.AddDefaultRoute(ctx, ip(gw)))
}

// serveTCP runs a server in ns on addr that writes reply(remote address)
// to every connection and closes it, until the test ends.
func serveTCP(t *testing.T, ns *podnet.Namespace, addr string, reply func(remote string) string) {
	t.Helper()
	l, err := ns.Listen(testCtx(t), "tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			_, _ = io.WriteString(c, reply(host))
			c.Close()
		}
	}()
}

// serveUDP answers every datagram on addr in ns with name.
func serveUDP(t *testing.T, ns *podnet.Namespace, addr, name string) {
	t.Helper()
	c, err := ns.ListenPacket(testCtx(t), "udp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteTo([]byte(name), from)
		}
	}()
}

func named(name string) func(string) string { return func(string) string { return name } }

// tcpGet connects from ns to addr within timeout and returns what the
// server wrote.
func tcpGet(ns *podnet.Namespace, addr string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := ns.Dial(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	b, err := io.ReadAll(c)
	return string(b), err
}

// udpGet sends a datagram from ns to addr and returns the reply, trying at
// most three times within about timeout.
func udpGet(ns *podnet.Namespace, addr string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := ns.Dial(ctx, "udp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	buf := make([]byte, 1500)
	var lastErr error
	for try := 0; try < 3; try++ {
		if _, err := c.Write([]byte("hi")); err != nil {
			lastErr = err
			time.Sleep(timeout / 3)
			continue
		}
		_ = c.SetReadDeadline(time.Now().Add(timeout / 3))
		n, err := c.Read(buf)
		if err == nil {
			return string(buf[:n]), nil
		}
		lastErr = err
	}
	return "", lastErr
}

// iptablesProg returns the name of the iptables program for a backend.
func iptablesProg(b podnet.IptablesBackend, fam int, suffix string) string {
	name := "iptables"
	if fam == 6 {
		name = "ip6tables"
	}
	if b == podnet.IptablesLegacy {
		name += "-legacy"
	} else {
		name += "-nft"
	}
	return name + suffix
}

// ipt runs an iptables command inside ns (test setup only).
func ipt(t *testing.T, ns *podnet.Namespace, b podnet.IptablesBackend, fam int, args ...string) {
	t.Helper()
	out, err := ns.Command(iptablesProg(b, fam, ""), append([]string{"--wait"}, args...)...).CombinedOutput()
	require.NoError(t, err, "%s %v: %s", iptablesProg(b, fam, ""), args, out)
}

var counters = regexp.MustCompile(`\[[0-9]+:[0-9]+\]`)

// saveRules returns iptables-save's output inside ns, comment lines
// (timestamps, warnings) left out and counters zeroed: what must be the
// same, byte for byte, before podnet and after everything is closed.
func saveRules(t *testing.T, ns *podnet.Namespace, b podnet.IptablesBackend, fam int) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := ns.Command(iptablesProg(b, fam, "-save"))
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, stderr.String())
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		keep = append(keep, counters.ReplaceAllString(l, "[0:0]"))
	}
	return strings.Join(keep, "\n")
}

// snapshot is the iptables state of both families in a namespace.
type snapshot [2]string

// takeSnapshot records both families. With the legacy backend, a table
// that holds no rule and only ACCEPT policies is left out: the kernel
// instantiates a legacy table in a namespace on first use and cannot take
// it away again, but such a table filters nothing.
func takeSnapshot(t *testing.T, ns *podnet.Namespace, b podnet.IptablesBackend) snapshot {
	s := snapshot{saveRules(t, ns, b, 4), saveRules(t, ns, b, 6)}
	if b == podnet.IptablesLegacy {
		for i := range s {
			s[i] = dropEmptyTables(s[i])
		}
	}
	return s
}

var emptyTable = regexp.MustCompile(`^\*[a-z]+\n(:[A-Z]+ ACCEPT \[0:0\]\n)*COMMIT$`)

func dropEmptyTables(save string) string {
	var out []string
	for _, block := range strings.SplitAfter(save, "COMMIT") {
		block = strings.Trim(block, "\n")
		if block != "" && !emptyTable.MatchString(block) {
			out = append(out, block)
		}
	}
	return strings.Join(out, "\n")
}

// podnetRules lists the rules of podnet's chains and the jumps to them.
func podnetRules(t *testing.T, ns *podnet.Namespace, b podnet.IptablesBackend, fam int) []string {
	var out []string
	for _, l := range strings.Split(saveRules(t, ns, b, fam), "\n") {
		if strings.Contains(l, "PODNET-") && strings.HasPrefix(l, "-A ") {
			out = append(out, l)
		}
	}
	return out
}

// mustFail asserts that fn fails, as a connection that is dropped or goes
// unanswered does.
func mustFail(t *testing.T, what string, fn func() (string, error)) {
	t.Helper()
	got, err := fn()
	require.Error(t, err, "%s: got %q, want a failure", what, got)
}

func requireIptables(t testing.TB) {
	t.Helper()
	for _, p := range []string{"iptables-nft-restore", "iptables-legacy-restore"} {
		if _, err := exec.LookPath(p); err != nil {
			if _, err := exec.LookPath("/usr/sbin/" + p); err != nil {
				t.Fatalf("%s not installed: run bash .ci/install (apt-get install -y iptables)", p)
			}
		}
	}
}

func splitLines(s string) []string { return strings.Split(s, "\n") }
