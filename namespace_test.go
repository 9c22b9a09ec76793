package podnet_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/podnettest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestNamedNamespaceLifecycle(t *testing.T) {
	podnettest.RequirePrivilege(t)
	ctx := testCtx(t)
	name := podnettest.UniqueName("pntest-", 40)
	ns, err := podnet.NewNamespace(name).Label("lifecycle").Create(ctx)
	require.NoError(t, err)
	path := filepath.Join(podnet.NetnsDir, name)
	assert.Equal(t, path, ns.Path())
	assert.True(t, ns.Owned())

	// Bind-mounted: the file is a different namespace from ours, and the
	// same one as the handle podnet holds.
	assert.NotEqual(t, nsInode(t, "/proc/self/ns/net"), nsInode(t, path))
	assert.Equal(t, nsInode(t, path), fdInode(t, ns.Fd()))
	// Loopback is up.
	lo := link(t, ns, "lo")
	assert.NotZero(t, lo.Attrs().Flags&net.FlagUp, "lo is down")
	// The ownership record names this process.
	rec, err := os.ReadFile(filepath.Join(podnet.RecordDir, name))
	require.NoError(t, err)
	m, ok := podnet.ParseMark(strings.TrimSpace(string(rec)))
	require.True(t, ok, "record %q", rec)
	assert.Equal(t, podnet.Self(), m.Owner)
	assert.Equal(t, "lifecycle", m.Label)

	// A second namespace of the same name is refused, and the first is untouched.
	_, err = podnet.NewNamespace(name).Create(ctx)
	require.ErrorIs(t, err, podnet.ErrExists)
	assert.Equal(t, nsInode(t, path), fdInode(t, ns.Fd()))

	require.NoError(t, ns.Close())
	require.NoError(t, ns.Close(), "Close is idempotent")
	_, err = os.Stat(path)
	assert.ErrorIs(t, err, os.ErrNotExist)
	_, err = os.Stat(filepath.Join(podnet.RecordDir, name))
	assert.ErrorIs(t, err, os.ErrNotExist)

	// Use after Close.
	err = ns.Do(func() error { return nil })
	assert.ErrorIs(t, err, podnet.ErrClosed)
	_, err = ns.Sysctl("net.ipv4.ip_forward")
	assert.ErrorIs(t, err, podnet.ErrClosed)
	err = ns.AddDefaultRoute(ctx, ip("10.0.0.1"))
	assert.ErrorIs(t, err, podnet.ErrClosed)
}

func TestAnonymousNamespaceAndDo(t *testing.T) {
	ctx := testCtx(t)
	podnettest.RequirePrivilege(t)
	ns, err := podnet.NewAnonymousNamespace().Sysctl("net.ipv4.ip_forward", "1").Create(ctx)
	require.NoError(t, err)
	defer ns.Close()
	assert.Equal(t, "", ns.Name())
	assert.Equal(t, "", ns.Path())

	var inside uint64
	require.NoError(t, ns.Do(func() error {
		inside = nsInode(t, "/proc/thread-self/ns/net")
		return nil
	}))
	assert.Equal(t, fdInode(t, ns.Fd()), inside)
	assert.NotEqual(t, nsInode(t, "/proc/self/ns/net"), inside)

	v, err := ns.Sysctl("net.ipv4.ip_forward")
	require.NoError(t, err)
	assert.Equal(t, "1", v, "sysctl given to the spec is applied inside")

	// Errors from fn come back unchanged.
	sentinel := errors.New("from fn")
	assert.ErrorIs(t, ns.Do(func() error { return sentinel }), sentinel)
	// A panic in fn reaches the caller, and the thread is switched back.
	assert.PanicsWithValue(t, "boom", func() { _ = ns.Do(func() error { panic("boom") }) })
	assertAllThreadsHome(t)
}

// assertAllThreadsHome checks that every thread of the process is in the
// process's original network namespace.
func assertAllThreadsHome(t *testing.T) {
	t.Helper()
	home := nsInode(t, "/proc/self/ns/net")
	tasks, err := os.ReadDir("/proc/self/task")
	require.NoError(t, err)
	for _, task := range tasks {
		var st unix.Stat_t
		if err := unix.Stat("/proc/self/task/"+task.Name()+"/ns/net", &st); err != nil {
			continue // the thread exited meanwhile
		}
		assert.Equal(t, home, st.Ino, "thread %s is in another network namespace", task.Name())
	}
}

func TestConcurrentDo(t *testing.T) {
	ctx := testCtx(t)
	podnettest.RequirePrivilege(t)
	const namespaces, calls = 20, 200
	nss := make([]*podnet.Namespace, namespaces)
	for i := range nss {
		nss[i] = podnettest.Namespace(t)
	}
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for i := 0; i < calls; i++ {
		wg.Add(1)
		go func(ns *podnet.Namespace) {
			defer wg.Done()
			errs <- ns.Do(func() error {
				var st unix.Stat_t
				if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
					return err
				}
				var want unix.Stat_t
				if err := unix.Fstat(ns.Fd(), &want); err != nil {
					return err
				}
				if st.Ino != want.Ino {
					return fmt.Errorf("thread in namespace %d, want %d", st.Ino, want.Ino)
				}
				// Work that needs the thread in the namespace: a socket.
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					return err
				}
				return l.Close()
			})
		}(nss[i%namespaces])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	_ = ctx
	assertAllThreadsHome(t)
}

func TestOpenNamespace(t *testing.T) {
	ctx := testCtx(t)
	owned := podnettest.NamedNamespace(t, "pnopen-")

	byName, err := podnet.OpenNamespace(owned.Name())
	require.NoError(t, err)
	assert.False(t, byName.Owned())
	assert.Equal(t, fdInode(t, owned.Fd()), fdInode(t, byName.Fd()))
	require.NoError(t, byName.Close())
	_, err = os.Stat(owned.Path())
	require.NoError(t, err, "closing an opened namespace must not delete it")

	// By /proc/PID/ns/net, as a runtime does: a process sleeping inside.
	cmd := owned.Command("sleep", "30")
	require.NoError(t, cmd.Start())
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	byPath, err := podnet.OpenNamespace(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid))
	require.NoError(t, err)
	defer byPath.Close()
	assert.Equal(t, fdInode(t, owned.Fd()), fdInode(t, byPath.Fd()))
	// It is usable: add an address to its loopback through the opened handle.
	require.NoError(t, byPath.AddAddress(ctx, "lo", pfx("10.99.0.1/32")))
	addrs, err := owned.Addresses(ctx, "lo")
	require.NoError(t, err)
	assert.Contains(t, addrs, pfx("10.99.0.1/32"))

	_, err = podnet.OpenNamespace("no-such-namespace-here")
	assert.ErrorIs(t, err, podnet.ErrNotFound)
	_, err = podnet.OpenNamespace("/etc/hostname")
	assert.ErrorIs(t, err, podnet.ErrInvalidOption)
	_, err = podnet.OpenNamespace("bad name;rm")
	assert.ErrorIs(t, err, podnet.ErrInvalidName)
}

func TestCommandRunsInside(t *testing.T) {
	ns := podnettest.Namespace(t)
	out, err := ns.Command("cat", "/proc/net/dev").Output()
	require.NoError(t, err)
	// A fresh namespace has only the loopback.
	var ifaces []string
	for _, line := range strings.Split(string(out), "\n")[2:] {
		if name, _, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			ifaces = append(ifaces, name)
		}
	}
	assert.Equal(t, []string{"lo"}, ifaces)

	// Arguments never pass through a shell.
	out, err = ns.Command("echo", "a;b", "$(id)", "'q'").CombinedOutput()
	require.NoError(t, err)
	assert.Equal(t, "a;b $(id) 'q'\n", string(out))
}

func TestSysctlIsPerNamespace(t *testing.T) {
	host := podnettest.Sandbox(t)
	other := podnettest.Namespace(t)
	old, err := other.SetSysctl("net.ipv4.ip_forward", "1")
	require.NoError(t, err)
	assert.Equal(t, "0", old)
	v, err := other.Sysctl("net/ipv4/ip_forward")
	require.NoError(t, err)
	assert.Equal(t, "1", v)
	v, err = host.Sysctl("net.ipv4.ip_forward")
	require.NoError(t, err)
	assert.Equal(t, "0", v, "another namespace's sysctl changed")

	for _, key := range []string{"kernel.hostname", "net.ipv4.../x", "net.ipv4.ip forward", ""} {
		_, err := other.Sysctl(key)
		assert.ErrorIs(t, err, podnet.ErrInvalidOption, key)
	}
	_, err = other.SetSysctl("net.ipv4.ip_forward", "1\n0")
	assert.ErrorIs(t, err, podnet.ErrInvalidOption)
}

func TestNamespaceBadInput(t *testing.T) {
	podnettest.RequirePrivilege(t)
	ctx := testCtx(t)
	// Checked by name, not by counting /run/netns: other test processes
	// make and delete named namespaces meanwhile.
	for _, name := range []string{"", ".hidden", "a/b", "semi;colon", "new\nline", "space name", "quote\"", "naïve", strings.Repeat("x", 65)} {
		_, err := podnet.NewNamespace(name).Create(ctx)
		assert.ErrorIs(t, err, podnet.ErrInvalidName, "%q", name)
		if name == "" {
			continue
		}
		for _, dir := range []string{podnet.NetnsDir, podnet.RecordDir} {
			_, err := os.Lstat(filepath.Join(dir, name))
			assert.ErrorIs(t, err, os.ErrNotExist, "a rejected namespace %q left %s", name, filepath.Join(dir, name))
		}
	}
	_, err := podnet.NewAnonymousNamespace().Sysctl("kernel.panic", "1").Create(ctx)
	assert.ErrorIs(t, err, podnet.ErrInvalidOption)
}
