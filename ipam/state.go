package ipam

import (
	"fmt"
	"slices"
)

// state is the allocation state of a pool. For a store it is derived from
// the journal and replaced wholesale when the journal is compacted.
type state struct {
	t         *tree
	used      uint64
	cursor    u128 // offset of the last dynamic allocation
	hasCursor bool
	owners    map[u128]string   // owned allocations only
	byOwner   map[string][]u128 // in allocation order
}

func newState(l *layout) *state {
	return &state{
		t:       l.newTree(),
		owners:  make(map[u128]string),
		byOwner: make(map[string][]u128),
	}
}

// full reports whether every allocatable address is allocated.
func (s *state) full(l *layout) bool {
	return l.capacity.hi == 0 && l.capacity.lo == s.used
}

// nextFree returns the first free offset after the cursor, wrapping around
// to the start of the range, like host-local's round-robin.
func (s *state) nextFree(l *layout) (u128, bool) {
	if s.full(l) {
		return u128{}, false
	}
	from := l.start
	if s.hasCursor && s.cursor.less(l.end) {
		from = s.cursor.addOne()
	}
	if x, ok := s.t.next(from); ok {
		return x, true
	}
	return s.t.next(l.start)
}

// checkAlloc reports why off cannot be allocated, if it cannot.
func (s *state) checkAlloc(l *layout, off u128) error {
	if off.less(l.start) || l.end.less(off) || l.last.less(off) {
		return ErrOutOfRange
	}
	if l.reservedAt(off) {
		return ErrReserved
	}
	if s.t.allocated(off) {
		return ErrDuplicate
	}
	return nil
}

func (s *state) alloc(off u128, owner string, moveCursor bool) {
	s.t.set(off)
	s.used++
	if moveCursor {
		s.cursor, s.hasCursor = off, true
	}
	if owner != "" {
		s.owners[off] = owner
		s.byOwner[owner] = append(s.byOwner[owner], off)
	}
}

// release frees off and reports whether it was allocated.
func (s *state) release(off u128) bool {
	if !s.t.clear(off) {
		return false
	}
	s.used--
	owner, ok := s.owners[off]
	if !ok {
		return true
	}
	delete(s.owners, off)
	offs := s.byOwner[owner]
	if i := slices.Index(offs, off); i >= 0 {
		offs = slices.Delete(offs, i, i+1)
	}
	if len(offs) == 0 {
		delete(s.byOwner, owner)
	} else {
		s.byOwner[owner] = offs
	}
	return true
}

// apply replays one journal entry, checking that it is consistent with the
// state; an inconsistent entry means the journal is corrupt.
func (s *state) apply(l *layout, e entry) error {
	switch e.kind {
	case entryAlloc, entryAllocAddr:
		if err := s.checkAlloc(l, e.off); err != nil {
			return fmt.Errorf("%w: allocation of %s: %w", ErrCorrupt, l.addr(e.off), err)
		}
		if err := checkOwner(e.owner, true); err != nil {
			return fmt.Errorf("%w: allocation of %s: %w", ErrCorrupt, l.addr(e.off), err)
		}
		s.alloc(e.off, e.owner, e.kind == entryAlloc)
	case entryRelease:
		if l.last.less(e.off) || !s.release(e.off) {
			return fmt.Errorf("%w: release of %s: %w", ErrCorrupt, l.addr(e.off), ErrNotAllocated)
		}
	case entryCursor:
		if e.off.less(l.start) || l.end.less(e.off) {
			return fmt.Errorf("%w: cursor %s: %w", ErrCorrupt, l.addr(e.off), ErrOutOfRange)
		}
		s.cursor, s.hasCursor = e.off, true
	default:
		return fmt.Errorf("%w: unknown entry kind %d", ErrCorrupt, e.kind)
	}
	return nil
}

// snapshot returns entries that rebuild this state from scratch.
func (s *state) snapshot() []entry {
	var es []entry
	s.t.each(func(off u128) bool {
		es = append(es, entry{kind: entryAllocAddr, off: off, owner: s.owners[off]})
		return true
	})
	if s.hasCursor {
		es = append(es, entry{kind: entryCursor, off: s.cursor})
	}
	return es
}

// maxOwnerLen bounds the length of an owner key in bytes.
const maxOwnerLen = 1024

func checkOwner(owner string, emptyOK bool) error {
	switch {
	case owner == "" && !emptyOK:
		return fmt.Errorf("%w: empty owner", ErrInvalid)
	case len(owner) > maxOwnerLen:
		return fmt.Errorf("%w: owner longer than %d bytes", ErrInvalid, maxOwnerLen)
	}
	return nil
}
