package ipam

import (
	"fmt"
	"iter"
	"net/netip"
	"slices"
	"sync"
)

// Pool allocates addresses from one prefix. It is safe for concurrent use by
// multiple goroutines; a Pool returned by Open is also safe to use from
// several processes that open the same directory.
//
// The caller must call Close when done with the pool. After Close, methods
// that return an error return ErrClosed, Lookup, Owner, Allocated, Used,
// Free and All report an empty pool, and Prefix, Gateway, Range, Size and
// Contains keep describing the configuration. Create pools with New or
// Open; the zero Pool is not usable.
type Pool struct {
	mu     sync.Mutex
	closed bool
	lay    *layout
	st     *state
	store  *store // nil for an in-memory pool
}

// Allocation is an allocated address and its owner ("" for an allocation
// made without one).
type Allocation struct {
	Addr  netip.Addr
	Owner string
}

// New returns an in-memory pool for prefix. The network address, the IPv4
// broadcast address and the gateway (the first usable address unless
// Gateway or NoGateway is given) are reserved. The prefix must have no host
// bits set and be at most /30 (IPv4) or /126 (IPv6); any wider prefix, up to
// a /0, is fine, and memory use grows with the number of allocations, not
// the size of the pool.
func New(prefix netip.Prefix, opts ...Option) (*Pool, error) {
	l, err := newLayout(prefix, opts)
	if err != nil {
		return nil, &Error{Op: "new", Err: err}
	}
	return &Pool{lay: l, st: newState(l)}, nil
}

// Prefix returns the pool's prefix.
func (p *Pool) Prefix() netip.Prefix { return p.lay.prefix }

// Gateway returns the reserved gateway address, if the pool has one.
func (p *Pool) Gateway() (netip.Addr, bool) {
	if !p.lay.hasGW {
		return netip.Addr{}, false
	}
	return p.lay.addr(p.lay.gw), true
}

// Range returns the first and last address of the allocatable range (the
// whole prefix unless the Range option narrowed it). The ends may themselves
// be reserved.
func (p *Pool) Range() (start, end netip.Addr) {
	return p.lay.addr(p.lay.start), p.lay.addr(p.lay.end)
}

// Size returns the number of allocatable addresses (allocated or not),
// saturating at math.MaxUint64.
func (p *Pool) Size() uint64 { return p.lay.capacity.uint64Sat() }

// Contains reports whether a could be allocated from this pool: it lies
// inside the range and is not reserved. It says nothing about whether a is
// allocated now.
func (p *Pool) Contains(a netip.Addr) bool {
	_, err := p.lay.classify(a)
	return err == nil
}

// Allocate allocates the next free address. It searches round-robin from
// the last dynamically allocated address and wraps around at the end of the
// range, so a released address is not handed out again before the rest of
// the range has been tried. It returns ErrExhausted if no address is free.
func (p *Pool) Allocate() (netip.Addr, error) {
	return p.allocate("allocate", "")
}

// AllocateFor is Allocate for an owner, a non-empty key of at most 1024
// bytes such as containerID+"/"+ifname. An owner may hold several addresses.
func (p *Pool) AllocateFor(owner string) (netip.Addr, error) {
	if err := checkOwner(owner, false); err != nil {
		return netip.Addr{}, &Error{Op: "allocate", Owner: owner, Err: err}
	}
	return p.allocate("allocate", owner)
}

// AllocateFrom allocates the first free address at or after from, without
// wrapping around to the start of the range, and moves the round-robin
// position to it, as Allocate does. An address before the range start
// counts as the start. It returns ErrExhausted if nothing is free from
// there to the end of the range, and ErrOutOfRange if from is not in the
// pool's prefix.
//
// Several pools can then be walked as one range, as host-local walks the
// ranges of a range set: from after the last address handed out to the
// end of its range, then each next range from its start.
func (p *Pool) AllocateFrom(from netip.Addr) (netip.Addr, error) {
	return p.allocateFrom("", from)
}

// AllocateFromFor is AllocateFrom for an owner (see AllocateFor).
func (p *Pool) AllocateFromFor(owner string, from netip.Addr) (netip.Addr, error) {
	if err := checkOwner(owner, false); err != nil {
		return netip.Addr{}, &Error{Op: "allocate", Owner: owner, Err: err}
	}
	return p.allocateFrom(owner, from)
}

func (p *Pool) allocateFrom(owner string, from netip.Addr) (netip.Addr, error) {
	const op = "allocate"
	if err := checkAddr("address", from); err != nil {
		return netip.Addr{}, &Error{Op: op, Addr: from, Owner: owner, Err: err}
	}
	off, ok := p.lay.inside(from)
	if !ok {
		return netip.Addr{}, &Error{Op: op, Addr: from, Owner: owner, Err: fmt.Errorf("%w: not in %s", ErrOutOfRange, p.lay.prefix)}
	}
	if off.less(p.lay.start) {
		off = p.lay.start
	}
	return p.allocateAt(op, owner, func() (u128, bool) {
		if p.lay.end.less(off) || p.st.full(p.lay) {
			return u128{}, false
		}
		x, ok := p.st.t.next(off)
		return x, ok && !p.lay.end.less(x)
	})
}

func (p *Pool) allocate(op, owner string) (netip.Addr, error) {
	return p.allocateAt(op, owner, func() (u128, bool) { return p.st.nextFree(p.lay) })
}

// allocateAt allocates the offset pick chooses (under the lock, with the
// state current) as a dynamic allocation, which moves the cursor.
func (p *Pool) allocateAt(op, owner string, pick func() (u128, bool)) (netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.beginLocked(true); err != nil {
		return netip.Addr{}, &Error{Op: op, Owner: owner, Err: err}
	}
	defer p.endLocked()
	off, ok := pick()
	if !ok {
		return netip.Addr{}, &Error{Op: op, Owner: owner, Err: ErrExhausted}
	}
	a := p.lay.addr(off)
	if err := p.commitLocked(entry{kind: entryAlloc, off: off, owner: owner}); err != nil {
		return netip.Addr{}, &Error{Op: op, Addr: a, Owner: owner, Err: err}
	}
	p.st.alloc(off, owner, true)
	return a, nil
}

// AllocateAddr allocates the requested address a. It returns ErrOutOfRange
// if a is outside the prefix or range, ErrReserved if a is reserved and
// ErrDuplicate if a is already allocated. It does not move the round-robin
// position of Allocate, unless Advance is given.
func (p *Pool) AllocateAddr(a netip.Addr, opts ...AllocOption) error {
	return p.allocateAddr("", a, opts)
}

// AllocateAddrFor is AllocateAddr for an owner (see AllocateFor).
func (p *Pool) AllocateAddrFor(owner string, a netip.Addr, opts ...AllocOption) error {
	if err := checkOwner(owner, false); err != nil {
		return &Error{Op: "allocate", Addr: a, Owner: owner, Err: err}
	}
	return p.allocateAddr(owner, a, opts)
}

// AllocOption modifies AllocateAddr and AllocateAddrFor.
type AllocOption func(*allocOptions)

type allocOptions struct{ advance bool }

// Advance moves the round-robin position to the requested address, as if
// Allocate had returned it: the next Allocate continues after it. This is
// what host-local does with a requested address.
func Advance() AllocOption { return func(o *allocOptions) { o.advance = true } }

func (p *Pool) allocateAddr(owner string, a netip.Addr, opts []AllocOption) error {
	const op = "allocate"
	var o allocOptions
	for _, opt := range opts {
		opt(&o)
	}
	off, err := p.lay.classify(a)
	if err != nil {
		return &Error{Op: op, Addr: a, Owner: owner, Err: err}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.beginLocked(true); err != nil {
		return &Error{Op: op, Addr: a, Owner: owner, Err: err}
	}
	defer p.endLocked()
	if p.st.t.allocated(off) {
		return &Error{Op: op, Addr: a, Owner: owner, Err: ErrDuplicate}
	}
	// A dynamic allocation's record moves the cursor when replayed.
	kind := entryAllocAddr
	if o.advance {
		kind = entryAlloc
	}
	if err := p.commitLocked(entry{kind: kind, off: off, owner: owner}); err != nil {
		return &Error{Op: op, Addr: a, Owner: owner, Err: err}
	}
	p.st.alloc(off, owner, o.advance)
	return nil
}

// Release frees the allocated address a. It returns ErrNotAllocated unless a
// is currently allocated (also wrapping ErrOutOfRange or ErrReserved when a
// could never have been allocated).
func (p *Pool) Release(a netip.Addr) error {
	const op = "release"
	off, ok := p.lay.inside(a)
	if !ok {
		return &Error{Op: op, Addr: a, Err: p.notAllocated(a)}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.beginLocked(true); err != nil {
		return &Error{Op: op, Addr: a, Err: err}
	}
	defer p.endLocked()
	if p.store == nil { // no commit: check and clear in one walk
		if !p.st.release(off) {
			return &Error{Op: op, Addr: a, Err: p.notAllocated(a)}
		}
		return nil
	}
	if !p.st.t.allocated(off) {
		return &Error{Op: op, Addr: a, Err: p.notAllocated(a)}
	}
	if err := p.commitLocked(entry{kind: entryRelease, off: off}); err != nil {
		return &Error{Op: op, Addr: a, Err: err}
	}
	p.st.release(off)
	return nil
}

// notAllocated explains why a is not allocated.
func (p *Pool) notAllocated(a netip.Addr) error {
	if _, err := p.lay.classify(a); err != nil {
		return fmt.Errorf("%w: %w", ErrNotAllocated, err)
	}
	return ErrNotAllocated
}

// ReleaseOwner frees every address held by owner and returns them in
// ascending order. An owner that holds nothing is not an error (CNI DEL is
// idempotent): it returns nil, nil. If a store write fails part way through
// (only possible for owners of thousands of addresses), it returns the
// addresses it did release along with the error.
func (p *Pool) ReleaseOwner(owner string) ([]netip.Addr, error) {
	const op = "release"
	if err := checkOwner(owner, false); err != nil {
		return nil, &Error{Op: op, Owner: owner, Err: err}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.beginLocked(true); err != nil {
		return nil, &Error{Op: op, Owner: owner, Err: err}
	}
	defer p.endLocked()
	offs := slices.Clone(p.st.byOwner[owner])
	if len(offs) == 0 {
		return nil, nil
	}
	slices.SortFunc(offs, u128.cmp)
	n, err := p.releaseLocked(offs)
	addrs := make([]netip.Addr, n)
	for i, off := range offs[:n] {
		addrs[i] = p.lay.addr(off)
	}
	if err != nil {
		return addrs, &Error{Op: op, Owner: owner, Err: err}
	}
	return addrs, nil
}

// releaseLocked commits and applies the release of offs, which must all be
// allocated, and returns how many it released. Large batches are split into
// several records; each is durable and applied before the next is written,
// so after an error the first n offsets are released and the rest are not.
func (p *Pool) releaseLocked(offs []u128) (n int, err error) {
	if p.store == nil {
		for _, off := range offs {
			p.st.release(off)
		}
		return len(offs), nil
	}
	es := make([]entry, len(offs))
	for i, off := range offs {
		es[i] = entry{kind: entryRelease, off: off}
	}
	for _, batch := range splitRecords(p.lay, es) {
		if err := p.store.append(p, batch); err != nil {
			return n, err
		}
		for _, e := range batch {
			p.st.release(e.off)
		}
		n += len(batch)
	}
	return n, nil
}

// GC releases every owned allocation whose owner is not alive, like CNI's
// GC verb, and returns the released allocations in address order (on a
// store error, those released before it).
// Allocations made without an owner are never collected. alive is called
// once per distinct owner without any lock held, so it may block or call
// the pool; an owner that allocates again while GC runs keeps only the
// addresses it allocated after GC began.
func (p *Pool) GC(alive func(owner string) bool) ([]Allocation, error) {
	const op = "gc"
	if alive == nil {
		return nil, &Error{Op: op, Err: fmt.Errorf("%w: nil alive func", ErrInvalid)}
	}
	p.mu.Lock()
	if err := p.beginLocked(false); err != nil {
		p.mu.Unlock()
		return nil, &Error{Op: op, Err: err}
	}
	candidates := make(map[string][]u128, len(p.st.byOwner))
	for owner, offs := range p.st.byOwner {
		candidates[owner] = slices.Clone(offs)
	}
	p.endLocked()
	p.mu.Unlock()

	for owner := range candidates {
		if alive(owner) {
			delete(candidates, owner)
		}
	}
	if len(candidates) == 0 {
		return nil, nil
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.beginLocked(true); err != nil {
		return nil, &Error{Op: op, Err: err}
	}
	defer p.endLocked()
	var offs []u128
	for owner, list := range candidates {
		for _, off := range list {
			if o, ok := p.st.owners[off]; ok && o == owner {
				offs = append(offs, off)
			}
		}
	}
	slices.SortFunc(offs, u128.cmp)
	released := make([]Allocation, len(offs))
	for i, off := range offs {
		released[i] = Allocation{Addr: p.lay.addr(off), Owner: p.st.owners[off]}
	}
	n, err := p.releaseLocked(offs)
	if err != nil {
		return released[:n], &Error{Op: op, Err: err}
	}
	return released, nil
}

// Lookup returns the addresses held by owner in ascending order.
func (p *Pool) Lookup(owner string) []netip.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.readLocked() {
		return nil
	}
	offs := p.st.byOwner[owner]
	if len(offs) == 0 {
		return nil
	}
	addrs := make([]netip.Addr, len(offs))
	for i, off := range offs {
		addrs[i] = p.lay.addr(off)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	return addrs
}

// Owner returns the owner of the allocated address a; ok is false if a is
// not allocated. An address allocated without an owner returns "", true.
func (p *Pool) Owner(a netip.Addr) (owner string, ok bool) {
	off, err := p.lay.classify(a)
	if err != nil {
		return "", false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.readLocked() || !p.st.t.allocated(off) {
		return "", false
	}
	return p.st.owners[off], true
}

// Allocated reports whether a is allocated.
func (p *Pool) Allocated(a netip.Addr) bool {
	_, ok := p.Owner(a)
	return ok
}

// Used returns the number of allocated addresses.
func (p *Pool) Used() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.readLocked() {
		return 0
	}
	return int(min(p.st.used, uint64(maxInt)))
}

const maxInt = int(^uint(0) >> 1)

// Free returns the number of addresses left to allocate, saturating at
// math.MaxUint64 for huge pools.
func (p *Pool) Free() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.readLocked() {
		return 0
	}
	return p.lay.capacity.sub(u128{0, p.st.used}).uint64Sat()
}

// All returns the allocations in ascending address order. It takes a
// snapshot when called; the pool may be used while iterating.
func (p *Pool) All() iter.Seq[Allocation] {
	p.mu.Lock()
	var all []Allocation
	if p.readLocked() {
		all = make([]Allocation, 0, min(p.st.used, 1<<20))
		p.st.t.each(func(off u128) bool {
			all = append(all, Allocation{Addr: p.lay.addr(off), Owner: p.st.owners[off]})
			return true
		})
	}
	p.mu.Unlock()
	return slices.Values(all)
}

// Refresh brings the pool up to date with changes that other processes made
// to its store and reports any error doing so. Methods without an error
// result (Lookup, Owner, Allocated, Used, Free, All) refresh too but, if that
// fails, answer from the last state they saw; use Refresh to find out why.
// For an in-memory pool Refresh only checks that the pool is open.
func (p *Pool) Refresh() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.beginLocked(false); err != nil {
		return &Error{Op: "refresh", Err: err}
	}
	p.endLocked()
	return nil
}

// Close releases the pool's resources; for a store, it closes its files
// without changing them. Close is idempotent: calls after the first return
// nil.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	p.st = nil
	if p.store == nil {
		return nil
	}
	if err := p.store.close(); err != nil {
		return &Error{Op: "close", Err: err}
	}
	return nil
}

// beginLocked starts an operation: it checks the pool is open and, for a
// store, takes the file lock (exclusive for writers) and catches up with
// the journal. endLocked must follow a nil return.
func (p *Pool) beginLocked(write bool) error {
	if p.closed {
		return ErrClosed
	}
	if p.store == nil {
		return nil
	}
	return p.store.begin(p, write)
}

func (p *Pool) endLocked() {
	if p.store != nil {
		p.store.end()
	}
}

// readLocked is beginLocked+endLocked for methods without an error result:
// it reports whether the pool is open, answering from the last known state
// if catching up with the store failed.
func (p *Pool) readLocked() bool {
	if p.closed {
		return false
	}
	if err := p.beginLocked(false); err == nil {
		p.endLocked()
	}
	return true
}

// commitLocked makes e durable before it is applied in memory.
func (p *Pool) commitLocked(e entry) error {
	if p.store == nil {
		return nil
	}
	return p.store.append(p, []entry{e})
}
