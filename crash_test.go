package podnet_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/ipam"
	"github.com/podnet/podnet/podnettest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The crash tests re-run this test binary as a child process that builds
// the seed topology (with masquerade and a pool store) inside the parent's
// sandbox, and kill it (SIGKILL) at a chosen point of setup or teardown.

const (
	crashChildEnv   = "PODNET_CRASH_CHILD" // the sandbox namespace's name
	crashAtEnv      = "PODNET_CRASH_AT"    // kill at the Nth fault point; 0: never
	crashStoreEnv   = "PODNET_CRASH_STORE"
	crashPrefixEnv  = "PODNET_CRASH_PREFIX"
	crashHoldEnv    = "PODNET_CRASH_HOLD" // build, then wait for stdin to close
	crashPointLabel = "POINT "
)

func crashTopology(host *podnet.Namespace, prefix, store string) *podnet.TopologySpec {
	return podnet.Topology().In(host).Named(prefix).Store(store).Label("crash").
		Network("lan", "192.168.52.0/24").Masquerade().
		Host("orange", "lan").
		Host("purple", "lan").
		Internet("internet", "203.0.113.0/24")
}

// crashChild is the child's whole life. It prints every fault point it
// passes; at the chosen one it kills itself.
func crashChild() int {
	at, _ := strconv.Atoi(os.Getenv(crashAtEnv))
	out := bufio.NewWriter(os.Stdout)
	count := 0
	podnet.SetFaultHook(func(p string) error {
		count++
		fmt.Fprintf(out, "%s%d %s\n", crashPointLabel, count, p)
		out.Flush()
		if count == at {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			time.Sleep(time.Hour)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	host, err := podnet.OpenNamespace(os.Getenv(crashChildEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	lab, err := crashTopology(host, os.Getenv(crashPrefixEnv), os.Getenv(crashStoreEnv)).Create(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	if err := lab.Host("orange").PingNode(ctx, lab.Host("internet")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 4
	}
	if os.Getenv(crashHoldEnv) != "" {
		fmt.Fprintln(out, "READY")
		out.Flush()
		_, _ = io.Copy(io.Discard, os.Stdin)
	}
	if err := lab.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 5
	}
	fmt.Fprintf(out, "DONE %d\n", count)
	out.Flush()
	return 0
}

type crashEnv struct {
	host   *podnet.Namespace
	store  string
	prefix string
}

func (e *crashEnv) child(at int, hold bool) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+e.host.Name(), crashAtEnv+"="+strconv.Itoa(at),
		crashStoreEnv+"="+e.store, crashPrefixEnv+"="+e.prefix)
	if hold {
		cmd.Env = append(cmd.Env, crashHoldEnv+"=1")
	}
	return cmd
}

// snapshot is the sandbox's network state, as ../shared/netstate prints it
// when that script is there, and always as podnet reads it: links,
// addresses, routes, iptables (both backends) and forwarding.
func (e *crashEnv) snapshot(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	if _, err := os.Stat(netstatePath); err == nil {
		out, err := e.host.Command("bash", netstatePath).Output()
		require.NoError(t, err)
		// Named namespaces are global, not the sandbox's: checked apart.
		_, rest, _ := strings.Cut(string(out), "## links")
		b.WriteString("## links" + rest)
	}
	for _, args := range [][]string{
		{"ip", "-o", "link", "show"}, {"ip", "-o", "addr", "show"}, {"ip", "route", "show", "table", "all"},
		{"ip", "-6", "route", "show", "table", "all"}, {"iptables-nft-save"}, {"ip6tables-nft-save"},
		{"iptables-legacy-save"}, {"cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"},
	} {
		out, err := e.host.Command(args[0], args[1:]...).Output()
		require.NoError(t, err, "%v", args)
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "#") {
				continue // iptables-save's dated header lines
			}
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

var netstatePath = filepath.Join("..", "shared", "netstate")

func (e *crashEnv) leftoverNamespaces(t *testing.T) []string {
	var left []string
	ents, _ := os.ReadDir(podnet.NetnsDir)
	for _, en := range ents {
		if strings.HasPrefix(en.Name(), e.prefix) {
			left = append(left, en.Name())
		}
	}
	recs, _ := os.ReadDir(podnet.RecordDir)
	for _, en := range recs {
		if strings.HasPrefix(en.Name(), e.prefix) {
			left = append(left, "record:"+en.Name())
		}
	}
	return left
}

func (e *crashEnv) storeUsed(t *testing.T) int {
	used := 0
	dirs, _ := filepath.Glob(filepath.Join(e.store, "*", "*", "journal"))
	for _, j := range dirs {
		p, err := ipam.OpenExisting(filepath.Dir(j))
		require.NoError(t, err)
		used += p.Used()
		require.NoError(t, p.Close())
	}
	return used
}

func newCrashEnv(t *testing.T) *crashEnv {
	host := podnettest.NamedNamespace(t, "pncrash-")
	return &crashEnv{host: host, store: filepath.Join(t.TempDir(), "pools"), prefix: podnettest.UniqueName("pnc", 11) + "-"}
}

// TestCrashAtAnyPointThenSweep kills the child at (at least) 20 different
// points spread over setup and teardown; after each, Sweep must bring the
// sandbox back to its snapshot and empty the pool store.
func TestCrashAtAnyPointThenSweep(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the seed topology dozens of times")
	}
	ctx := testCtx(t)
	e := newCrashEnv(t)
	before := e.snapshot(t)

	// A full run, never killed, counts the points.
	out, err := e.child(0, false).Output()
	require.NoError(t, err, "child: %s", exitDetail(err))
	var total int
	_, err = fmt.Sscanf(string(out[strings.LastIndex(string(out), "DONE"):]), "DONE %d", &total)
	require.NoError(t, err, "%s", out)
	require.GreaterOrEqual(t, total, 20)
	assert.Equal(t, before, e.snapshot(t), "a clean run left state behind")
	assert.Equal(t, 0, e.storeUsed(t))

	// Kill points spread evenly over the run, first and last included.
	const kills = 24
	seen := map[string]bool{}
	for i := 0; i < kills; i++ {
		at := 1 + i*(total-1)/(kills-1)
		cmd := e.child(at, false)
		out, err := cmd.Output()
		var ee *exec.ExitError
		require.True(t, errors.As(err, &ee), "child ran to the end instead of dying at %d: %s", at, out)
		require.Equal(t, syscall.SIGKILL, ee.Sys().(syscall.WaitStatus).Signal())
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		point := strings.TrimPrefix(lines[len(lines)-1], crashPointLabel)
		seen[point] = true

		removed, err := podnet.Sweep(ctx, podnet.SweepIn(e.host), podnet.SweepStore(e.store), podnet.SweepNamed(e.prefix))
		require.NoError(t, err, "sweep after a kill at %s", point)
		for _, o := range removed {
			assert.False(t, o.Alive, "swept a live object: %v", o)
		}
		assert.Equal(t, before, e.snapshot(t), "state left after a kill at %s and a sweep", point)
		assert.Empty(t, e.leftoverNamespaces(t), "namespaces left after a kill at %s", point)
		assert.Equal(t, 0, e.storeUsed(t), "addresses of the dead owner left in the store after a kill at %s", point)
		left, err := podnet.List(ctx, podnet.SweepIn(e.host), podnet.SweepStore(e.store), podnet.SweepNamed(e.prefix))
		require.NoError(t, err)
		for _, o := range left {
			// Live owners' objects (this test's sandbox) stay; nothing of
			// a dead one may. Other test processes' namespaces are theirs
			// to check: cmd/podnet's tests plant dead owners' links on
			// purpose.
			if !e.ours(o) {
				continue
			}
			assert.True(t, o.Alive, "left after a kill at %s: %v", point, o)
		}
	}
	names := map[string]bool{}
	for p := range seen {
		_, name, _ := strings.Cut(p, " ")
		names[name] = true
	}
	t.Logf("killed at %d points of %d, at %d kinds of step", len(seen), total, len(names))
	assert.GreaterOrEqual(t, len(seen), 20, "fewer than 20 different kill points")
}

// ours reports whether o is in this test's world: its sandbox, the named
// namespaces of its children (its prefix) or its store.
func (e *crashEnv) ours(o podnet.Object) bool {
	in := func(ns string) bool { return ns == "" || ns == e.host.Name() || strings.HasPrefix(ns, e.prefix) }
	switch {
	case o.Store != "":
		return o.Store == e.store || strings.HasPrefix(o.Store, e.store+string(filepath.Separator))
	case o.Kind == "namespace" || o.Kind == "record": // a named namespace, or its record without the mount
		return strings.HasPrefix(o.Name, e.prefix)
	}
	return in(o.Namespace)
}

// TestSweepSparesLiveOwners runs a sweep while another process's lab is up:
// nothing of it may be removed, and it must keep working.
func TestSweepSparesLiveOwners(t *testing.T) {
	ctx := testCtx(t)
	e := newCrashEnv(t)
	cmd := e.child(0, true)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	sc := bufio.NewScanner(stdout)
	ready := false
	for sc.Scan() {
		if sc.Text() == "READY" {
			ready = true
			break
		}
	}
	require.True(t, ready, "child never got ready")

	listed, err := podnet.List(ctx, podnet.SweepIn(e.host), podnet.SweepStore(e.store), podnet.SweepNamed(e.prefix))
	require.NoError(t, err)
	kinds := map[string]int{}
	for _, o := range listed {
		if o.Mark.Owner.PID == cmd.Process.Pid {
			assert.True(t, o.Alive, "%v", o)
			kinds[o.Kind]++
		}
	}
	for _, k := range []string{"namespace", "link", "iptables-rule", "address", "sysctl-record", "nft-record"} {
		assert.Positive(t, kinds[k], "no %s of the live child listed (%v)", k, kinds)
	}
	removed, err := podnet.Sweep(ctx, podnet.SweepIn(e.host), podnet.SweepStore(e.store), podnet.SweepNamed(e.prefix))
	require.NoError(t, err)
	for _, o := range removed {
		assert.NotEqual(t, cmd.Process.Pid, o.Mark.Owner.PID, "swept the live child's %v", o)
	}
	after, err := podnet.List(ctx, podnet.SweepIn(e.host), podnet.SweepStore(e.store), podnet.SweepNamed(e.prefix))
	require.NoError(t, err)
	kindsAfter := map[string]int{}
	for _, o := range after {
		if o.Mark.Owner.PID == cmd.Process.Pid {
			kindsAfter[o.Kind]++
		}
	}
	assert.Equal(t, kinds, kindsAfter, "the live child's objects changed")

	// The child's lab still works and closes cleanly.
	require.NoError(t, stdin.Close())
	rest, _ := io.ReadAll(stdout)
	require.NoError(t, cmd.Wait(), "child: %s", rest)
	assert.Contains(t, string(rest), "DONE")
	assert.Empty(t, e.leftoverNamespaces(t))
}

func exitDetail(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}
