package ipam

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
)

// Option configures a pool created by New or Open. The zero Option is
// invalid. Range, Gateway and NoGateway set one value each and the last one
// wins; Exclude and ExcludePrefix add to lists and accumulate.
type Option struct {
	apply func(*settings) error
}

type gatewayMode uint8

const (
	gatewayDefault gatewayMode = iota // first usable address
	gatewayAddr                       // set by Gateway
	gatewayNone                       // set by NoGateway
)

type settings struct {
	hasRange   bool
	start, end netip.Addr
	gwMode     gatewayMode
	gw         netip.Addr
	exclude    []netip.Addr
	excludePfx []netip.Prefix
}

// Range restricts allocation to the addresses from start to end inclusive,
// like host-local's rangeStart/rangeEnd. Both must lie inside the prefix and
// start must not come after end, otherwise New and Open fail with ErrInvalid
// (wrapping ErrOutOfRange for an address outside the prefix). Network,
// broadcast and gateway addresses inside the range stay reserved.
func Range(start, end netip.Addr) Option {
	return Option{func(s *settings) error {
		if err := checkAddr("range start", start); err != nil {
			return err
		}
		if err := checkAddr("range end", end); err != nil {
			return err
		}
		if start.Is4() != end.Is4() {
			return fmt.Errorf("%w: range %s-%s mixes address families", ErrInvalid, start, end)
		}
		if end.Less(start) {
			return fmt.Errorf("%w: range start %s is after range end %s", ErrInvalid, start, end)
		}
		s.hasRange, s.start, s.end = true, start, end
		return nil
	}}
}

// Exclude reserves the given addresses so that they are never allocated.
// Each must lie inside the prefix.
func Exclude(addrs ...netip.Addr) Option {
	addrs = slices.Clone(addrs)
	return Option{func(s *settings) error {
		for _, a := range addrs {
			if err := checkAddr("excluded address", a); err != nil {
				return err
			}
		}
		s.exclude = append(s.exclude, addrs...)
		return nil
	}}
}

// ExcludePrefix reserves every address of the given prefixes. Each must
// overlap the pool's prefix and have no host bits set.
func ExcludePrefix(prefixes ...netip.Prefix) Option {
	prefixes = slices.Clone(prefixes)
	return Option{func(s *settings) error {
		for _, p := range prefixes {
			if !p.IsValid() {
				return fmt.Errorf("%w: invalid excluded prefix %s", ErrInvalid, p)
			}
			if p != p.Masked() {
				return fmt.Errorf("%w: excluded prefix %s has host bits set", ErrInvalid, p)
			}
		}
		s.excludePfx = append(s.excludePfx, prefixes...)
		return nil
	}}
}

// Gateway sets the gateway address, which is reserved and reported by
// Pool.Gateway. It must lie inside the prefix and be neither the network nor
// the IPv4 broadcast address; it may lie outside Range. Without Gateway or
// NoGateway the gateway is the first usable address of the prefix.
func Gateway(a netip.Addr) Option {
	return Option{func(s *settings) error {
		if err := checkAddr("gateway", a); err != nil {
			return err
		}
		s.gwMode, s.gw = gatewayAddr, a
		return nil
	}}
}

// NoGateway reserves no gateway address.
func NoGateway() Option {
	return Option{func(s *settings) error {
		s.gwMode, s.gw = gatewayNone, netip.Addr{}
		return nil
	}}
}

func checkAddr(what string, a netip.Addr) error {
	switch {
	case !a.IsValid():
		return fmt.Errorf("%w: %s is the zero address", ErrInvalid, what)
	case a.Zone() != "":
		return fmt.Errorf("%w: %s %s has a zone", ErrInvalid, what, a)
	}
	return nil
}

// span is an inclusive interval of host offsets.
type span struct{ lo, hi u128 }

// layout is the validated, immutable shape of a pool.
type layout struct {
	prefix   netip.Prefix
	is4      bool
	hostBits int
	base     u128 // network address
	last     u128 // offset of the last address of the prefix
	start    u128 // first offset of the range
	end      u128 // last offset of the range
	gw       u128
	hasGW    bool
	excluded []span // merged, from Exclude and ExcludePrefix
	reserved []span // merged: everything not allocatable, incl. outside the range
	capacity u128   // number of allocatable addresses
}

// minHostBits is the smallest host part accepted: /30 for IPv4, /126 for IPv6.
const minHostBits = 2

func newLayout(prefix netip.Prefix, opts []Option) (*layout, error) {
	if !prefix.IsValid() {
		return nil, fmt.Errorf("%w: invalid prefix %s", ErrInvalid, prefix)
	}
	if prefix.Addr().Is4In6() {
		return nil, fmt.Errorf("%w: prefix %s is IPv4-mapped", ErrInvalid, prefix)
	}
	if prefix != prefix.Masked() {
		return nil, fmt.Errorf("%w: prefix %s has host bits set (network is %s)", ErrInvalid, prefix, prefix.Masked())
	}
	l := &layout{prefix: prefix, is4: prefix.Addr().Is4()}
	l.hostBits = prefix.Addr().BitLen() - prefix.Bits()
	if l.hostBits < minHostBits {
		return nil, fmt.Errorf("%w: prefix %s too small to allocate from", ErrInvalid, prefix)
	}
	l.base = u128From(prefix.Addr())
	l.last = lowMask(uint(l.hostBits))

	var s settings
	for i, o := range opts {
		if o.apply == nil {
			return nil, fmt.Errorf("%w: option %d is the zero Option", ErrInvalid, i)
		}
		if err := o.apply(&s); err != nil {
			return nil, err
		}
	}

	// Network and IPv4 broadcast addresses are never allocatable.
	reserved := []span{{u128{}, u128{}}}
	if l.is4 {
		reserved = append(reserved, span{l.last, l.last})
	}

	l.start, l.end = u128{}, l.last
	if s.hasRange {
		var err error
		if l.start, err = l.inPrefix("range start", s.start); err != nil {
			return nil, err
		}
		if l.end, err = l.inPrefix("range end", s.end); err != nil {
			return nil, err
		}
	}

	switch s.gwMode {
	case gatewayDefault:
		l.gw, l.hasGW = u128{0, 1}, true
	case gatewayAddr:
		off, err := l.inPrefix("gateway", s.gw)
		if err != nil {
			return nil, err
		}
		if off.isZero() || (l.is4 && off == l.last) {
			return nil, fmt.Errorf("%w: gateway %s is the network or broadcast address of %s", ErrInvalid, s.gw, prefix)
		}
		l.gw, l.hasGW = off, true
	}
	if l.hasGW {
		reserved = append(reserved, span{l.gw, l.gw})
	}

	var excl []span
	for _, a := range s.exclude {
		off, err := l.inPrefix("excluded address", a)
		if err != nil {
			return nil, err
		}
		excl = append(excl, span{off, off})
	}
	for _, p := range s.excludePfx {
		if !p.Overlaps(prefix) {
			return nil, fmt.Errorf("%w: excluded prefix %s: %w %s", ErrInvalid, p, ErrOutOfRange, prefix)
		}
		if p.Bits() <= prefix.Bits() { // covers the whole pool
			excl = append(excl, span{u128{}, l.last})
			continue
		}
		lo := u128From(p.Addr()).and(l.last)
		excl = append(excl, span{lo, lo.or(lowMask(uint(p.Addr().BitLen() - p.Bits())))})
	}
	l.excluded = mergeSpans(excl)

	reserved = append(reserved, l.excluded...)
	if !l.start.isZero() {
		reserved = append(reserved, span{u128{}, l.start.subOne()})
	}
	if l.end != l.last {
		reserved = append(reserved, span{l.end.addOne(), l.last})
	}
	l.reserved = mergeSpans(reserved)

	// Count the gaps between reserved spans. Offset 0 is always reserved,
	// so no gap exceeds 2^128-1.
	var capacity u128
	next := u128{}
	for _, r := range l.reserved {
		if next.less(r.lo) {
			capacity, _ = capacity.add(r.lo.sub(next))
		}
		if r.hi != l.last {
			next = r.hi.addOne()
		}
	}
	if last := l.reserved[len(l.reserved)-1]; last.hi != l.last {
		capacity, _ = capacity.add(l.last.sub(last.hi))
	}
	if capacity.isZero() {
		return nil, fmt.Errorf("%w: pool %s has no allocatable address", ErrInvalid, prefix)
	}
	l.capacity = capacity
	return l, nil
}

// inPrefix returns the offset of a, which must lie inside the prefix.
func (l *layout) inPrefix(what string, a netip.Addr) (u128, error) {
	if !l.prefix.Contains(a) {
		return u128{}, fmt.Errorf("%w: %s %s: %w %s", ErrInvalid, what, a, ErrOutOfRange, l.prefix)
	}
	return l.offset(a), nil
}

func (l *layout) offset(a netip.Addr) u128 { return u128From(a).and(l.last) }

func (l *layout) addr(off u128) netip.Addr { return addrFrom(l.base.or(off), l.is4) }

// reservedAt reports whether off lies in a reserved span.
func (l *layout) reservedAt(off u128) bool {
	lo, hi := 0, len(l.reserved)
	for lo < hi { // first span with hi >= off
		m := int(uint(lo+hi) >> 1)
		if l.reserved[m].hi.less(off) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo < len(l.reserved) && !off.less(l.reserved[lo].lo)
}

// inside returns the offset of a if a is an address of the prefix.
func (l *layout) inside(a netip.Addr) (u128, bool) {
	if a.Is4() != l.is4 || a.Zone() != "" || !l.prefix.Contains(a) {
		return u128{}, false
	}
	return l.offset(a), true
}

// classify checks that a can be allocated from this layout and returns its
// offset; the error wraps ErrInvalid, ErrOutOfRange or ErrReserved.
func (l *layout) classify(a netip.Addr) (u128, error) {
	if err := checkAddr("address", a); err != nil {
		return u128{}, err
	}
	if !l.prefix.Contains(a) {
		return u128{}, fmt.Errorf("%w: not in %s", ErrOutOfRange, l.prefix)
	}
	off := l.offset(a)
	if off.less(l.start) || l.end.less(off) {
		return u128{}, fmt.Errorf("%w: not in range %s-%s", ErrOutOfRange, l.addr(l.start), l.addr(l.end))
	}
	if l.reservedAt(off) {
		return u128{}, ErrReserved
	}
	return off, nil
}

// newTree returns an empty free-space index for this layout.
func (l *layout) newTree() *tree {
	t := newTree(l.hostBits)
	for _, r := range l.reserved {
		t.reserve(r.lo, r.hi)
	}
	return t
}

func mergeSpans(in []span) []span {
	if len(in) == 0 {
		return nil
	}
	in = slices.Clone(in)
	slices.SortFunc(in, func(a, b span) int { return a.lo.cmp(b.lo) })
	out := in[:1]
	for _, s := range in[1:] {
		cur := &out[len(out)-1]
		if cur.hi == u128Max || !cur.hi.addOne().less(s.lo) { // overlaps or touches
			if cur.hi.less(s.hi) {
				cur.hi = s.hi
			}
			continue
		}
		out = append(out, s)
	}
	return out
}

// layoutVersion is the version of the encoding written by encode.
const layoutVersion = 1

// encode returns the canonical description stored in a store's header: two
// layouts with the same encoding behave identically, whatever options
// produced them.
func (l *layout) encode() []byte {
	family := byte(6)
	if l.is4 {
		family = 4
	}
	b := []byte{layoutVersion, family, byte(l.prefix.Bits())}
	b = append(b, l.prefix.Addr().AsSlice()...)
	b = l.appendOff(b, l.start)
	b = l.appendOff(b, l.end)
	if l.hasGW {
		b = append(b, 1)
		b = l.appendOff(b, l.gw)
	} else {
		b = append(b, 0)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(l.excluded)))
	for _, s := range l.excluded {
		b = l.appendOff(b, s.lo)
		b = l.appendOff(b, s.hi)
	}
	return b
}

func (l *layout) appendOff(b []byte, off u128) []byte {
	return append(b, l.addr(off).AsSlice()...)
}

// decodePrefix returns the prefix recorded in an encoded layout, for error
// messages.
func decodePrefix(b []byte) (netip.Prefix, bool) {
	if len(b) < 3 || b[0] != layoutVersion || (b[1] != 4 && b[1] != 6) {
		return netip.Prefix{}, false
	}
	n := 4
	if b[1] == 6 {
		n = 16
	}
	if len(b) < 3+n {
		return netip.Prefix{}, false
	}
	a, _ := netip.AddrFromSlice(b[3 : 3+n])
	p := netip.PrefixFrom(a, int(b[2]))
	return p, p.IsValid()
}
