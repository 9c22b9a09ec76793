// Package podnettest holds helpers for tests that build networks with
// podnet: throwaway namespaces registered with t.Cleanup, a sandbox
// namespace that stands in for the host so a test never touches the real
// host's links, routes or iptables, and unique names for parallel tests.
package podnettest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/podnet/podnet"
)

// Capabilities podnet needs: CAP_NET_ADMIN for links and routes,
// CAP_SYS_ADMIN for creating namespaces and bind mounts.
const (
	capNetAdmin = 12
	capSysAdmin = 21
)

// Option configures the helpers.
type Option func(*options)

type options struct{ skip bool }

// SkipWithoutPrivilege makes a missing capability skip the test (with the
// reason) instead of failing it.
func SkipWithoutPrivilege() Option { return func(o *options) { o.skip = true } }

func apply(opts []Option) options {
	var o options
	for _, f := range opts {
		f(&o)
	}
	return o
}

// RequirePrivilege fails the test (or skips it, with
// SkipWithoutPrivilege) unless the process has CAP_NET_ADMIN and
// CAP_SYS_ADMIN.
func RequirePrivilege(t testing.TB, opts ...Option) {
	t.Helper()
	o := apply(opts)
	if reason := missingPrivilege(); reason != "" {
		if o.skip {
			t.Skip("podnettest: " + reason)
		}
		t.Fatal("podnettest: " + reason + " (run the tests as root, or pass SkipWithoutPrivilege to skip)")
	}
}

func missingPrivilege() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "cannot read /proc/self/status: " + err.Error()
	}
	for _, line := range strings.Split(string(b), "\n") {
		v, ok := strings.CutPrefix(line, "CapEff:")
		if !ok {
			continue
		}
		caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return "cannot parse CapEff: " + err.Error()
		}
		var missing []string
		if caps&(1<<capNetAdmin) == 0 {
			missing = append(missing, "CAP_NET_ADMIN")
		}
		if caps&(1<<capSysAdmin) == 0 {
			missing = append(missing, "CAP_SYS_ADMIN")
		}
		if len(missing) > 0 {
			return "the process lacks " + strings.Join(missing, " and ")
		}
		return ""
	}
	return "no CapEff line in /proc/self/status"
}

// Sandbox returns a fresh anonymous namespace that stands in for the host:
// build the test's bridges, NAT and "internet" in it (In(sandbox)), never
// in the real host namespace. It is closed when the test ends, which
// removes everything that was built inside it.
func Sandbox(t testing.TB, opts ...Option) *podnet.Namespace {
	t.Helper()
	return Namespace(t, opts...)
}

// Namespace returns a fresh anonymous namespace, closed when the test ends.
func Namespace(t testing.TB, opts ...Option) *podnet.Namespace {
	t.Helper()
	RequirePrivilege(t, opts...)
	ns, err := podnet.NewAnonymousNamespace().Label(t.Name()).Create(context.Background())
	if err != nil {
		t.Fatalf("podnettest: create namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Errorf("podnettest: close namespace: %v", err)
		}
	})
	return ns
}

// NamedNamespace returns a fresh named namespace (visible to `ip netns`)
// whose name starts with prefix and is unique, closed when the test ends.
func NamedNamespace(t testing.TB, prefix string, opts ...Option) *podnet.Namespace {
	t.Helper()
	RequirePrivilege(t, opts...)
	ns, err := podnet.NewNamespace(UniqueName(prefix, 64)).Label(t.Name()).Create(context.Background())
	if err != nil {
		t.Fatalf("podnettest: create namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Errorf("podnettest: close namespace %s: %v", ns.Name(), err)
		}
	})
	return ns
}

// UniqueName returns prefix followed by random hex digits, at most max
// bytes long (15 for an interface name), so that parallel tests and
// processes never pick the same name.
func UniqueName(prefix string, max int) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	s := prefix + hex.EncodeToString(b[:])
	if len(s) > max {
		s = s[:max]
	}
	return s
}

// Lab builds topo inside a fresh sandbox namespace standing in for the
// host (topo's In is set to it) and tears it down when the test ends, with
// the sandbox. Its namespaces are anonymous unless topo asked for names;
// named ones should carry a UniqueName prefix so parallel tests never
// collide.
func Lab(t testing.TB, topo *podnet.TopologySpec, opts ...Option) *podnet.Lab {
	t.Helper()
	host := Sandbox(t, opts...)
	lab, err := topo.In(host).Create(context.Background())
	if err != nil {
		t.Fatalf("podnettest: create lab: %v", err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("podnettest: close lab: %v", err)
		}
	})
	return lab
}
