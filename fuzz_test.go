package podnet_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/podnet/podnet"
)

// Fuzz tests for every validator of user input. Their seed corpora live in
// testdata/fuzz; `go test` runs the seeds, `go test -fuzz=FuzzX` explores.

func FuzzValidateLinkName(f *testing.F) {
	for _, s := range []string{"eth0", "", "a;b", "veth-orange", "abcdefghijklmnop", "..", "x\ny", "naïve", "a b", "a/b", "a:b", `q"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := podnet.ValidateLinkName(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "invalid name: ") {
				t.Fatalf("error %q does not say it is an invalid name", err)
			}
			return
		}
		if len(s) == 0 || len(s) > 15 || s == "." || s == ".." {
			t.Fatalf("accepted %q", s)
		}
		for _, c := range []byte(s) {
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
			if !ok {
				t.Fatalf("accepted %q with byte %q", s, c)
			}
		}
	})
}

func FuzzValidateNamespaceName(f *testing.F) {
	for _, s := range []string{"orange", "", ".hidden", "a/../b", strings.Repeat("n", 65), "semi;colon", "tab\t"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if podnet.ValidateNamespaceName(s) != nil {
			return
		}
		if len(s) == 0 || len(s) > 64 || s[0] == '.' || strings.ContainsAny(s, "/ \t\n;:'\"$`\\") {
			t.Fatalf("accepted %q", s)
		}
	})
}

func FuzzParseMark(f *testing.F) {
	f.Add("podnet:123:456:lab/net")
	f.Add("podnet:1:2:")
	f.Add("podnet::2:x")
	f.Add("other")
	f.Add("podnet:-1:2:x")
	f.Fuzz(func(t *testing.T, s string) {
		m, ok := podnet.ParseMark(s)
		if !ok {
			return
		}
		if m.Owner.PID <= 0 {
			t.Fatalf("accepted pid %d from %q", m.Owner.PID, s)
		}
		back, ok := podnet.ParseMark(m.String())
		if !ok || back != m {
			t.Fatalf("round trip of %q: %+v -> %q -> %+v", s, m, m.String(), back)
		}
	})
}

// FuzzRouteValidate feeds arbitrary routes to AddRoute on a closed
// namespace: validation must run first (no panic, a clear error) and
// never reach the kernel.
func FuzzRouteValidate(f *testing.F) {
	f.Add("10.0.0.0/8", "10.0.0.1", "eth0", 0, 0)
	f.Add("", "fd00::1", "", 5, 100)
	f.Add("10.1.2.3/8", "fd00::1", "bad name", -1, -1)
	f.Add("::ffff:10.0.0.0/104", "224.0.0.1", "", 0, 0)
	f.Fuzz(func(t *testing.T, dst, gw, dev string, metric, table int) {
		r := podnet.Route{Dev: dev, Metric: metric, Table: table}
		r.Dst, _ = netip.ParsePrefix(dst)
		r.Gateway, _ = netip.ParseAddr(gw)
		_ = r.String()
		err := closedNS.AddRoute(t.Context(), r)
		if err == nil {
			t.Fatalf("route %v accepted on a closed namespace", r)
		}
	})
}

// FuzzTopology checks that any description is either rejected with an
// error that names a problem, or passes validation; it never panics. The
// namespace it would be built in is closed, so nothing is ever created.
func FuzzTopology(f *testing.F) {
	f.Add("lan", "192.168.52.0/24", "orange", "lan", "purple", "lan", "inet", "203.0.113.0/24", true)
	f.Add("", "", "", "", "", "", "", "", false)
	f.Add("lan", "10.0.0.1/24", "a b", "x", "r", "lan", "i", "fd00::/64", true)
	f.Fuzz(func(t *testing.T, net, sub, h1, n1, h2, n2, inet, isub string, masq bool) {
		topo := podnet.Topology().In(closedNS).Network(net, sub)
		if masq {
			topo.Masquerade()
		}
		topo.Host(h1, n1).Router(h2, n2, net)
		if inet != "" {
			topo.Internet(inet, isub)
		}
		_, err := topo.Create(t.Context())
		if err == nil {
			t.Fatal("a lab was created in a closed namespace")
		}
		if !strings.HasPrefix(err.Error(), "podnet: create lab") {
			t.Fatalf("error %q", err)
		}
	})
}

// closedNS is a namespace value that was never opened: every operation on
// it fails with ErrClosed after validation.
var closedNS = func() *podnet.Namespace {
	ns, err := podnet.CurrentNamespace()
	if err != nil {
		return nil
	}
	_ = ns.Close()
	return ns
}()

// FuzzPortMapping checks the port-forward validator: any mapping is
// rejected with ErrInvalidOption/ErrInvalidAddress, or accepted only when
// its ports are in range; nothing is ever created (the namespace is closed).
func FuzzPortMapping(f *testing.F) {
	f.Add("tcp", 8080, 0, "10.0.0.2:80")
	f.Add("udp", 1000, 1100, "10.0.0.2:60000")
	f.Add("sctp", 0, -1, "[fd00::2]:0")
	f.Add("tcp", 65535, 65535, "10.0.0.2:65535")
	f.Add("tcp", 70000, 1, "0.0.0.0:1")
	f.Fuzz(func(t *testing.T, proto string, port, end int, to string) {
		m := podnet.PortMapping{Proto: podnet.Protocol(proto), HostPort: port, HostPortEnd: end}
		m.To, _ = netip.ParseAddrPort(to)
		_, err := podnet.NewPortForward().In(closedNS).Map(m).Create(t.Context())
		if err == nil {
			t.Fatalf("%v created in a closed namespace", m)
		}
		if errors.Is(err, podnet.ErrClosed) { // passed validation
			last := m.HostPortEnd
			if last == 0 {
				last = m.HostPort
			}
			if m.HostPort < 1 || last > 65535 || last < m.HostPort || m.To.Port() == 0 ||
				int(m.To.Port())+last-m.HostPort > 65535 || (proto != "tcp" && proto != "udp") {
				t.Fatalf("accepted %+v", m)
			}
		}
	})
}
