package ipam

import "math/bits"

// tree is the free-space index of a pool: a 64-ary radix tree over the host
// offsets of the prefix. Each level consumes 6 bits of the offset, so a /16
// has 3 levels and a /64 has 11. A node's word has bit i set when child i has
// no free address (inner node) or when address i is unavailable (leaf).
//
// A nil child is a uniform subtree: entirely free when its bit is clear and
// entirely reserved when its bit is set. Nodes are only materialised along
// the paths of allocations and at the edges of reserved intervals, so an
// empty /64 costs one node and memory grows with the allocations, not with
// the pool. Finding the next free offset from any point descends at most
// two paths: O(levels) word operations, independent of how full the pool is.
type tree struct {
	levels int // >= 1; the leaf level is 0, the root is levels-1
	root   *node
	path   [22]*node // scratch for set/clear; guarded by the pool's mutex
	spare  []*node   // recently dropped nodes, reused so churn does not allocate
}

const maxSpare = 32

// newNode returns a zeroed node for level, reusing a spare one if it can.
func (t *tree) newNode(level int) *node {
	for i := len(t.spare) - 1; i >= 0; i-- {
		if n := t.spare[i]; (n.kids != nil) == (level > 0) {
			t.spare = append(t.spare[:i], t.spare[i+1:]...)
			return n
		}
	}
	return newNode(level)
}

// drop keeps an entirely free node (all words zero, no kids) for reuse.
func (t *tree) drop(n *node) {
	if len(t.spare) < maxSpare {
		t.spare = append(t.spare, n)
	}
}

type node struct {
	full  uint64     // see tree
	res   uint64     // leaf only: bit i set when address i is reserved
	kids  *[64]*node // inner nodes only
	nkids int        // number of non-nil kids
}

const allOnes = ^uint64(0)

func newNode(level int) *node {
	if level == 0 {
		return &node{}
	}
	return &node{kids: new([64]*node)}
}

// newTree returns an index for a space of 2^hostBits offsets, all free.
func newTree(hostBits int) *tree {
	levels := (hostBits + 5) / 6
	if levels < 1 {
		levels = 1
	}
	t := &tree{levels: levels, root: newNode(levels - 1)}
	top := hostBits - 6*(levels-1) // bits used by the root's digit, 0..6
	if top < 6 {
		outside := allOnes << (uint(1) << uint(top))
		t.root.full |= outside
		if levels == 1 {
			t.root.res |= outside
		}
	}
	return t
}

// reserve marks [lo, hi] reserved. It must be called before any allocation.
func (t *tree) reserve(lo, hi u128) {
	reserveIn(t.root, t.levels-1, u128{}, lo, hi)
}

func reserveIn(n *node, level int, base, lo, hi u128) {
	nodeHi := base.or(lowMask(uint(6 * (level + 1))))
	if lo.less(base) {
		lo = base
	}
	if nodeHi.less(hi) {
		hi = nodeHi
	}
	if hi.less(lo) {
		return
	}
	d0, d1 := lo.digit(level), hi.digit(level)
	for d := d0; d <= d1; d++ {
		bit := uint64(1) << d
		if level == 0 {
			n.full |= bit
			n.res |= bit
			continue
		}
		shift := uint(6 * level)
		cBase := base.or(u128{0, uint64(d)}.shl(shift))
		cHi := cBase.or(lowMask(shift))
		if !cBase.less(lo) && !hi.less(cHi) { // child entirely covered
			if n.kids[d] != nil {
				n.kids[d] = nil
				n.nkids--
			}
			n.full |= bit
			continue
		}
		c := n.kids[d]
		if c == nil {
			if n.full&bit != 0 {
				continue // already entirely reserved
			}
			c = newNode(level - 1)
			n.kids[d] = c
			n.nkids++
		}
		reserveIn(c, level-1, cBase, lo, hi)
		if c.full == allOnes {
			n.full |= bit
		}
	}
}

// set marks the free offset x allocated.
func (t *tree) set(x u128) {
	n := t.root
	for level := t.levels - 1; level > 0; level-- {
		t.path[level] = n
		d := x.digit(level)
		c := n.kids[d]
		if c == nil {
			c = t.newNode(level - 1)
			n.kids[d] = c
			n.nkids++
		}
		n = c
	}
	n.full |= 1 << x.digit(0)
	for level := 1; level < t.levels && n.full == allOnes; level++ {
		n = t.path[level]
		n.full |= 1 << x.digit(level)
	}
}

// clear marks offset x free again if it is allocated, dropping nodes that
// became entirely free, and reports whether it was allocated.
func (t *tree) clear(x u128) bool {
	n := t.root
	for level := t.levels - 1; level > 0; level-- {
		t.path[level] = n
		n = n.kids[x.digit(level)]
		if n == nil {
			return false
		}
	}
	bit := uint64(1) << x.digit(0)
	if n.full&^n.res&bit == 0 {
		return false
	}
	n.full &^= bit
	empty := n.full == 0
	for level := 1; level < t.levels; level++ {
		p := t.path[level]
		d := x.digit(level)
		p.full &^= 1 << d
		if empty {
			t.drop(p.kids[d])
			p.kids[d] = nil
			p.nkids--
			empty = p.nkids == 0 && p.full == 0 && level < t.levels-1
		}
	}
	return true
}

// allocated reports whether x is allocated (unavailable and not reserved).
func (t *tree) allocated(x u128) bool {
	n := t.root
	for level := t.levels - 1; level > 0; level-- {
		n = n.kids[x.digit(level)]
		if n == nil {
			return false
		}
	}
	bit := uint64(1) << x.digit(0)
	return n.full&^n.res&bit != 0
}

// next returns the first free offset >= from.
func (t *tree) next(from u128) (u128, bool) {
	return nextIn(t.root, t.levels-1, u128{}, from)
}

func nextIn(n *node, level int, base, from u128) (u128, bool) {
	d0 := from.digit(level)
	avail := ^n.full & (allOnes << d0)
	for avail != 0 {
		d := uint(bits.TrailingZeros64(avail))
		avail &^= 1 << d
		shift := uint(6 * level)
		cBase := base.or(u128{0, uint64(d)}.shl(shift))
		if level == 0 {
			return cBase, true
		}
		c := n.kids[d]
		start := cBase
		if d == d0 {
			start = from
		}
		if c == nil { // entirely free
			return start, true
		}
		if x, ok := nextIn(c, level-1, cBase, start); ok {
			return x, true
		}
	}
	return u128{}, false
}

// each calls fn for every allocated offset in ascending order until fn
// returns false.
func (t *tree) each(fn func(u128) bool) {
	eachIn(t.root, t.levels-1, u128{}, fn)
}

func eachIn(n *node, level int, base u128, fn func(u128) bool) bool {
	shift := uint(6 * level)
	if level == 0 {
		for w := n.full &^ n.res; w != 0; w &= w - 1 {
			if !fn(base.or(u128{0, uint64(bits.TrailingZeros64(w))})) {
				return false
			}
		}
		return true
	}
	if n.nkids == 0 {
		return true
	}
	for d, c := range n.kids {
		if c != nil && !eachIn(c, level-1, base.or(u128{0, uint64(d)}.shl(shift)), fn) {
			return false
		}
	}
	return true
}
