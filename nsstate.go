package podnet

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// nsState is what podnet's process knows about the iptables and sysctl
// work it does in one network namespace. Its mutex serializes that work
// within the process, so that reading the rules, deciding and writing them
// back is never interleaved with another podnet object's; other processes
// are kept out by iptables' own lock (--wait) and by retrying a write that
// raced with them.
//
// States are keyed by the namespace's cookie, which the kernel never reuses
// (unlike a namespace's inode number), so all Namespace values open on the
// same namespace share one state.
type nsState struct {
	key  uint64
	pins int // guarded by statesMu: in-flight calls plus live objects

	mu      sync.Mutex
	backend IptablesBackend        // resolved backend while users > 0
	users   int                    // live objects
	nftNew  map[string]bool        // nf_tables tables podnet created, by nftKey
	holds   map[string]*sysctlHold // sysctls podnet holds, by key
}

var (
	statesMu sync.Mutex
	states   = map[uint64]*nsState{}
)

// namespaceKey identifies ns for nsState: its cookie (SO_NETNS_COOKIE),
// or, on kernels older than 5.14, its inode number with the top bit set.
func namespaceKey(ns *Namespace) (uint64, error) {
	var key uint64
	err := onThreadIn(ns.fd, func() error {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		key, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		return err
	})
	if err == nil {
		return key &^ (1 << 63), nil
	}
	var st unix.Stat_t
	if serr := unix.Fstat(ns.fd, &st); serr != nil {
		return 0, errors.Join(err, serr)
	}
	return st.Ino | 1<<63, nil
}

// pinState returns ns's state with one more pin. The caller holds ns and
// must unpin the state when done with it.
func pinState(ns *Namespace) (*nsState, error) {
	key, err := namespaceKey(ns)
	if err != nil {
		return nil, fmt.Errorf("identify namespace %s: %w", ns, err)
	}
	statesMu.Lock()
	defer statesMu.Unlock()
	st := states[key]
	if st == nil {
		st = &nsState{key: key, nftNew: map[string]bool{}, holds: map[string]*sysctlHold{}}
		states[key] = st
	}
	st.pins++
	return st, nil
}

func unpinState(st *nsState) {
	statesMu.Lock()
	defer statesMu.Unlock()
	st.pins--
	if st.pins == 0 {
		delete(states, st.key)
	}
}

// sysctlHold is a sysctl podnet set in a namespace, shared by the objects
// that need it: the first sets it and remembers the old value, the last to
// let go puts the old value back.
type sysctlHold struct {
	value, orig string
	refs        int
}

// holdSysctlLocked sets key to value in ns (unless another object of this
// process holds it at that value already) and takes a reference. The
// caller holds st.mu and ns.
func (st *nsState) holdSysctlLocked(ns *Namespace, key, value string) error {
	if h := st.holds[key]; h != nil {
		if h.value != value {
			return invalid(ErrInvalidOption, "%s is held at %s by another podnet object in namespace %s", key, h.value, ns)
		}
		h.refs++
		return nil
	}
	var old string
	err := onThreadIn(ns.fd, func() error {
		var err error
		if old, err = readSysctl(key); err != nil {
			return err
		}
		if old == value {
			return nil
		}
		// Recorded first, so a sweep can put the old value back if this
		// process dies while holding it.
		if err := putRecord(st.key, "sysctl", key, old, value); err != nil {
			return err
		}
		return writeSysctl(key, value)
	})
	if err != nil {
		return fmt.Errorf("sysctl %s: %w", key, err)
	}
	st.holds[key] = &sysctlHold{value: value, orig: old, refs: 1}
	return nil
}

// releaseSysctlLocked drops a reference to key; the last one restores the
// value key had before podnet set it, unless someone changed it since (then
// theirs is kept) or write is false (the namespace is gone). A sysctl whose
// interface is gone counts as restored.
func (st *nsState) releaseSysctlLocked(ns *Namespace, key string, write bool) error {
	h := st.holds[key]
	if h == nil {
		return nil
	}
	if h.refs--; h.refs > 0 {
		return nil
	}
	delete(st.holds, key)
	if h.orig == h.value {
		return nil
	}
	defer dropRecord(st.key, "sysctl", key)
	if !write {
		return nil
	}
	err := onThreadIn(ns.fd, func() error {
		cur, err := readSysctl(key)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if cur != h.value {
			return nil
		}
		return writeSysctl(key, h.orig)
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("restore sysctl %s=%s: %w", key, h.orig, err)
	}
	return nil
}

// owner is the part shared by podnet's iptables and sysctl objects: the
// rules they added (by family, under one ownership mark) and the sysctls
// they hold, undone in reverse by Close.
type owner struct {
	kind    string
	name    string // for error messages
	ns      *Namespace
	st      *nsState
	backend IptablesBackend
	mark    string
	id      string               // unique part of mark, names the object's own chains
	fams    []int                // families with rules, in the order added
	units   map[int][]*chainUnit // podnet chains the rules live in, by family
	chains  map[int][]ownChain   // chains of the object's own, by family
	holds   []string             // sysctl keys held, in the order taken
	closed  atomic.Bool
}

// build creates an owner in the namespace in (nil: the caller's) and runs
// fill with the namespace's state locked. If fill fails, whatever it
// recorded in the owner is undone.
func build(ctx context.Context, in *Namespace, kind, name, label string, want IptablesBackend, iptables bool, fill func(ctx context.Context, o *owner) error) (*owner, error) {
	ns, release, err := enter(ctx, in)
	if err != nil {
		return nil, err
	}
	defer release()
	st, err := pinState(ns)
	if err != nil {
		return nil, err
	}
	o := &owner{kind: kind, name: name, ns: ns, st: st, units: map[int][]*chainUnit{}, chains: map[int][]ownChain{}}
	o.mark, o.id = objectMark(kind, label)
	st.mu.Lock()
	defer st.mu.Unlock()
	if iptables {
		if o.backend, err = st.resolveBackendLocked(ns, want); err != nil {
			unpinState(st)
			return nil, err
		}
	}
	st.users++
	if err := fill(ctx, o); err != nil {
		o.closed.Store(true)
		err = errors.Join(err, o.undoLocked(true))
		unpinState(st)
		return nil, err
	}
	return o, nil
}

// addFamily records that o is about to add rules in fam, living in units
// and in chains of its own.
func (o *owner) addFamily(fam int, units []*chainUnit, chains ...ownChain) {
	o.chains[fam] = append(o.chains[fam], chains...)
	for _, f := range o.fams {
		if f == fam {
			o.units[fam] = append(o.units[fam], units...)
			return
		}
	}
	o.fams = append(o.fams, fam)
	o.units[fam] = units
}

// hold sets a sysctl for o. The caller holds st.mu and ns.
func (o *owner) hold(key, value string) error {
	if err := o.st.holdSysctlLocked(o.ns, key, value); err != nil {
		return err
	}
	o.holds = append(o.holds, key)
	return nil
}

// undoLocked removes o's rules and releases its sysctls, every step run
// and every error reported. write is false when the namespace is gone. The
// caller holds st.mu (and ns, when write).
func (o *owner) undoLocked(write bool) error {
	var errs []error
	if write && len(o.fams) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), iptablesTimeout)
		defer cancel()
		for i := len(o.fams) - 1; i >= 0; i-- {
			fam := o.fams[i]
			if err := o.st.removeLocked(ctx, o.ns, o.backend, fam, removal{mark: o.mark, chains: o.chains[fam], units: o.units[fam]}); err != nil {
				errs = append(errs, fmt.Errorf("remove IPv%d rules: %w", fam, err))
			}
		}
	}
	for i := len(o.holds) - 1; i >= 0; i-- {
		if err := o.st.releaseSysctlLocked(o.ns, o.holds[i], write); err != nil {
			errs = append(errs, err)
		}
	}
	o.st.users--
	return errors.Join(errs...)
}

// close is the shared Close: idempotent, and a namespace already deleted
// (an owned one, closed) counts as everything removed.
func (o *owner) close() error {
	if o.closed.Swap(true) {
		return nil
	}
	defer unpinState(o.st)
	release, err := o.ns.acquire()
	if err != nil {
		o.st.mu.Lock()
		_ = o.undoLocked(false)
		o.st.mu.Unlock()
		if o.ns.owned {
			return nil
		}
		return opErr("close", o.kind, o.name, fmt.Errorf("namespace %s: %w", o.ns, err))
	}
	defer release()
	o.st.mu.Lock()
	defer o.st.mu.Unlock()
	return opErr("close", o.kind, o.name, o.undoLocked(true))
}

// withLocked runs fn for a live o with its namespace and state locked.
func (o *owner) withLocked(ctx context.Context, fn func(ctx context.Context) error) error {
	if o.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	release, err := o.ns.acquire()
	if err != nil {
		return fmt.Errorf("namespace %s: %w", o.ns, err)
	}
	defer release()
	o.st.mu.Lock()
	defer o.st.mu.Unlock()
	if o.closed.Load() {
		return ErrClosed
	}
	return fn(ctx)
}
