package podnet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// NetnsDir is where named network namespaces are bind-mounted, as by
// `ip netns add`.
const NetnsDir = "/run/netns"

// RecordDir holds podnet's ownership records for named namespaces: one
// file per namespace, named after it, holding its ownership mark.
const RecordDir = "/run/podnet/netns"

// Namespace is a network namespace held open by podnet: a file descriptor
// and a netlink handle bound to it, so that no later call switches the
// calling thread. A Namespace is safe for concurrent use.
//
// A Namespace made by NamespaceSpec.Create is owned: Close deletes it (for a
// named one, unmounts and removes /run/netns/NAME). One returned by
// OpenNamespace or CurrentNamespace is not owned: Close only releases
// podnet's reference and the namespace goes on living.
type Namespace struct {
	name  string // "" when anonymous or opened by path
	path  string // bind mount or path it was opened from; "" for anonymous
	fd    int
	h     *netlink.Handle
	owned bool
	mark  string

	mu     sync.RWMutex // held for reading by operations, for writing by Close
	closed atomic.Bool
}

// NamespaceSpec describes a network namespace to create. Its setters cannot
// fail; Create validates the description and reports every problem.
type NamespaceSpec struct {
	name      string
	anonymous bool
	label     string
	sysctls   [][2]string
}

// NewNamespace describes a named network namespace, bind-mounted at
// /run/netns/NAME so that `ip netns list` shows it and `ip netns exec`
// can enter it.
//
// Equivalent to: `ip netns add NAME; ip -n NAME link set lo up`
func NewNamespace(name string) *NamespaceSpec { return &NamespaceSpec{name: name} }

// NewAnonymousNamespace describes a network namespace held only by a file
// descriptor. It disappears when its Namespace is closed (or the process
// dies) and no process or socket lives in it: it cannot leak.
func NewAnonymousNamespace() *NamespaceSpec { return &NamespaceSpec{anonymous: true} }

// Label sets the label recorded in the namespace's ownership mark, such as
// the name of the lab it belongs to.
func (s *NamespaceSpec) Label(label string) *NamespaceSpec { s.label = label; return s }

// Sysctl sets a net.* sysctl inside the new namespace as part of Create,
// for example Sysctl("net.ipv4.ip_forward", "1"). Later calls for the same
// key win.
func (s *NamespaceSpec) Sysctl(key, value string) *NamespaceSpec {
	s.sysctls = append(s.sysctls, [2]string{key, value})
	return s
}

func (s *NamespaceSpec) validate() error {
	var errs []error
	if !s.anonymous {
		if err := ValidateNamespaceName(s.name); err != nil {
			errs = append(errs, err)
		}
	}
	if strings.ContainsAny(s.label, ":\n") {
		errs = append(errs, invalid(ErrInvalidOption, "label %q contains ':' or a newline", s.label))
	}
	for _, kv := range s.sysctls {
		if _, err := sysctlPath(kv[0]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Create makes the namespace, brings its loopback up and applies the
// requested sysctls. The caller must Close the returned Namespace. The
// calling goroutine's thread is never moved: the work runs on a fresh
// thread that is discarded if it cannot switch back.
func (s *NamespaceSpec) Create(ctx context.Context) (*Namespace, error) {
	kind := "namespace"
	if err := s.validate(); err != nil {
		return nil, opErr("create", kind, s.name, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, opErr("create", kind, s.name, err)
	}
	ns := &Namespace{fd: -1, owned: true, mark: selfMark(s.label)}
	var target string
	if !s.anonymous {
		if err := ensureNetnsDir(); err != nil {
			return nil, opErr("create", kind, s.name, err)
		}
		target = filepath.Join(NetnsDir, s.name)
		if _, err := os.Lstat(target); err == nil {
			return nil, opErr("create", kind, s.name, fmt.Errorf("%w: %s", ErrExists, target))
		}
		// The ownership record comes first, so that a crash at any later
		// point leaves something a sweep can find.
		if err := writeRecord(s.name, ns.mark); err != nil {
			return nil, opErr("create", kind, s.name, err)
		}
		f, err := os.OpenFile(target, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
		if err != nil {
			_ = os.Remove(filepath.Join(RecordDir, s.name))
			if errors.Is(err, os.ErrExist) {
				return nil, opErr("create", kind, s.name, fmt.Errorf("%w: %s", ErrExists, target))
			}
			return nil, opErr("create", kind, s.name, err)
		}
		f.Close()
		ns.name, ns.path = s.name, target
		if err := faultPoint("namespace:mountpoint"); err != nil {
			ns.destroy()
			return nil, opErr("create", kind, s.name, err)
		}
	}
	err := onFreshThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ns.fd = fd
		if target != "" {
			if err := unix.Mount("/proc/thread-self/ns/net", target, "none", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("bind mount %s: %w", target, err)
			}
		}
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return fmt.Errorf("netlink handle: %w", err)
		}
		ns.h = h
		if err := h.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 1, Name: "lo"}}); err != nil {
			return fmt.Errorf("set lo up: %w", err)
		}
		for _, kv := range s.sysctls {
			if err := writeSysctl(kv[0], kv[1]); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = faultPoint("namespace:created")
	}
	if err != nil {
		ns.destroy()
		return nil, opErr("create", kind, s.name, err)
	}
	return ns, nil
}

// OpenNamespace opens an existing network namespace without owning it.
// nameOrPath is either a name under /run/netns or an absolute path such as
// /proc/PID/ns/net or /var/run/netns/NAME. Close releases podnet's file
// descriptor and leaves the namespace alone.
func OpenNamespace(nameOrPath string) (*Namespace, error) {
	path := nameOrPath
	name := ""
	if !strings.HasPrefix(nameOrPath, "/") {
		if err := ValidateNamespaceName(nameOrPath); err != nil {
			return nil, opErr("open", "namespace", nameOrPath, err)
		}
		name = nameOrPath
		path = filepath.Join(NetnsDir, nameOrPath)
	}
	return openNamespace(name, path)
}

// CurrentNamespace opens the network namespace of the calling process (of
// its threads that podnet has not moved, which is all of them) without
// owning it.
//
// Unlike OpenNamespace it needs no thread switch: the descriptor and the
// netlink socket are both opened on the calling thread, which is in the
// namespace already.
func CurrentNamespace() (*Namespace, error) {
	const path = "/proc/thread-self/ns/net"
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fd, err := openNamespaceFd("", path)
	if err != nil {
		return nil, err
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		unix.Close(fd)
		return nil, opErr("open", "namespace", path, err)
	}
	return &Namespace{path: path, fd: fd, h: h}, nil
}

func openNamespace(name, path string) (*Namespace, error) {
	fd, err := openNamespaceFd(name, path)
	if err != nil {
		return nil, err
	}
	ns := &Namespace{name: name, path: path, fd: fd}
	err = ns.Do(func() error {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		ns.h = h
		return err
	})
	if err != nil {
		unix.Close(fd)
		return nil, opErr("open", "namespace", nameOrPathOf(name, path), err)
	}
	return ns, nil
}

// openNamespaceFd opens path and checks that it is a namespace.
func openNamespaceFd(name, path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			err = fmt.Errorf("%w: %s", ErrNotFound, path)
		}
		return -1, opErr("open", "namespace", nameOrPathOf(name, path), err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil || (st.Type != unix.NSFS_MAGIC && st.Type != unix.PROC_SUPER_MAGIC) {
		unix.Close(fd)
		return -1, opErr("open", "namespace", nameOrPathOf(name, path), invalid(ErrInvalidOption, "%s is not a network namespace", path))
	}
	return fd, nil
}

func nameOrPathOf(name, path string) string {
	if name != "" {
		return name
	}
	return path
}

// Name returns the namespace's name under /run/netns, or "" for an
// anonymous namespace or one opened by path.
func (n *Namespace) Name() string { return n.name }

// Path returns the path the namespace is mounted at or was opened from, or
// "" for an anonymous namespace.
func (n *Namespace) Path() string { return n.path }

// Owned reports whether Close deletes the namespace.
func (n *Namespace) Owned() bool { return n.owned }

// Fd returns the namespace's file descriptor, valid until Close. A child
// process can be handed it (for example as /proc/self/fd/N).
func (n *Namespace) Fd() int { return n.fd }

// Handle returns the netlink handle bound to the namespace, for operations
// podnet does not wrap. The namespace owns it: do not Close it.
func (n *Namespace) Handle() *netlink.Handle { return n.h }

func (n *Namespace) String() string {
	if n.name != "" {
		return n.name
	}
	if n.path != "" {
		return n.path
	}
	return fmt.Sprintf("anonymous(fd %d)", n.fd)
}

// acquire guards an operation against a concurrent Close. Callers defer the
// returned release.
func (n *Namespace) acquire() (release func(), err error) {
	n.mu.RLock()
	if n.closed.Load() {
		n.mu.RUnlock()
		return nil, ErrClosed
	}
	return n.mu.RUnlock, nil
}

// Do runs fn on an OS thread switched into the namespace and returns its
// error. fn runs on a fresh goroutine locked to its thread; after fn the
// thread switches back, and if that fails the thread is discarded rather
// than reused. The caller's own thread never changes namespace. A panic in
// fn is re-raised in the caller.
//
// fn must not start goroutines that expect to stay in the namespace: only
// the thread running fn is in it. Use Do for sysctls, sockets and exec;
// use the netlink Handle for netlink work.
func (n *Namespace) Do(fn func() error) error {
	release, err := n.acquire()
	if err != nil {
		return opErr("do", "namespace", n.String(), err)
	}
	defer release()
	return onThreadIn(n.fd, fn)
}

// onThreadIn runs fn on a fresh locked thread in the namespace nsfd.
func onThreadIn(nsfd int, fn func() error) error {
	return onFreshThread(func() error {
		if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("setns: %w", err)
		}
		return fn()
	})
}

type panicValue struct{ v any }

// onFreshThread runs fn on a new goroutine locked to its OS thread. fn may
// switch the thread's network namespace; afterwards the thread is returned
// to the namespace it started in, and unlocked only if that succeeded.
func onFreshThread(fn func() error) error {
	type result struct {
		err error
		p   *panicValue
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("open own namespace: %w", err)}
			return
		}
		var res result
		func() {
			defer func() {
				if r := recover(); r != nil {
					res.p = &panicValue{r}
				}
			}()
			res.err = fn()
		}()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			unix.Close(orig)
			// Leave the thread locked: the runtime ends it with this goroutine.
			res.err = errors.Join(res.err, fmt.Errorf("switch thread back: %w (thread discarded)", err))
			done <- res
			return
		}
		unix.Close(orig)
		runtime.UnlockOSThread()
		done <- res
	}()
	res := <-done
	if res.p != nil {
		panic(res.p.v)
	}
	return res.err
}

// Close releases the namespace. For an owned namespace it also deletes it:
// a named one is unmounted and its /run/netns entry removed; the kernel
// frees it once no process or socket is left inside. Close is idempotent;
// it waits for operations in flight. Objects inside an owned namespace
// (links, routes) disappear with it.
//
// Equivalent to: `ip netns delete NAME` (for an owned named namespace).
func (n *Namespace) Close() error {
	if n.closed.Swap(true) {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.destroy()
}

func (n *Namespace) destroy() error {
	var errs []error
	if n.h != nil {
		n.h.Close()
		n.h = nil
	}
	if n.fd >= 0 {
		unix.Close(n.fd)
		n.fd = -1
	}
	if n.owned && n.name != "" {
		crashPoint("namespace:close")
		if err := unix.Unmount(n.path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", n.path, err))
		}
		if err := os.Remove(n.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		if err := os.Remove(filepath.Join(RecordDir, n.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return opErr("close", "namespace", n.String(), errors.Join(errs...))
	}
	return nil
}

var netnsDirMu sync.Mutex
var netnsDirReady bool

// ensureNetnsDir makes /run/netns a shared mount point, as `ip netns add`
// does, so that namespaces mounted there are visible from other mount
// namespaces.
func ensureNetnsDir() error {
	netnsDirMu.Lock()
	defer netnsDirMu.Unlock()
	if netnsDirReady {
		return nil
	}
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return err
	}
	err := unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) {
		// Not a mount point yet: bind it onto itself, then make it shared.
		if err = unix.Mount(NetnsDir, NetnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err == nil {
			err = unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		}
	}
	if err != nil {
		return fmt.Errorf("prepare %s: %w", NetnsDir, err)
	}
	netnsDirReady = true
	return nil
}

// writeRecord creates the ownership record of a named namespace. A record
// left by a process that is gone is replaced; one of a live process means
// that process is creating (or holds) the namespace: ErrExists.
func writeRecord(name, mark string) error {
	if err := os.MkdirAll(RecordDir, 0o700); err != nil {
		return err
	}
	path := filepath.Join(RecordDir, name)
	for try := 0; try < 2; try++ {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			_, err = f.WriteString(mark + "\n")
			return errors.Join(err, f.Close())
		}
		if !errors.Is(err, os.ErrExist) {
			return err
		}
		b, rerr := os.ReadFile(path)
		if rerr != nil {
			continue
		}
		if m, ok := ParseMark(strings.TrimSpace(string(b))); ok && m.Owner.Alive() {
			return fmt.Errorf("%w: namespace %q is being created by %s", ErrExists, name, m.Owner)
		}
		_ = os.Remove(path) // stale: its owner is gone
	}
	return fmt.Errorf("%w: record %s", ErrExists, path)
}
