package ipam

import (
	"encoding/binary"
	"math"
	"math/bits"
	"net/netip"
)

// u128 is an unsigned 128-bit integer. Offsets inside a pool are u128 values
// so that IPv6 pools wider than /64 need no special cases.
type u128 struct{ hi, lo uint64 }

var u128Max = u128{math.MaxUint64, math.MaxUint64}

func (a u128) isZero() bool { return a.hi == 0 && a.lo == 0 }

func (a u128) cmp(b u128) int {
	switch {
	case a.hi < b.hi:
		return -1
	case a.hi > b.hi:
		return 1
	case a.lo < b.lo:
		return -1
	case a.lo > b.lo:
		return 1
	}
	return 0
}

func (a u128) less(b u128) bool { return a.cmp(b) < 0 }

// add returns a+b and whether it overflowed.
func (a u128) add(b u128) (u128, bool) {
	lo, c := bits.Add64(a.lo, b.lo, 0)
	hi, c := bits.Add64(a.hi, b.hi, c)
	return u128{hi, lo}, c != 0
}

// sub returns a-b; the caller guarantees a >= b.
func (a u128) sub(b u128) u128 {
	lo, c := bits.Sub64(a.lo, b.lo, 0)
	hi, _ := bits.Sub64(a.hi, b.hi, c)
	return u128{hi, lo}
}

func (a u128) addOne() u128 {
	lo, c := bits.Add64(a.lo, 1, 0)
	return u128{a.hi + c, lo}
}

func (a u128) subOne() u128 {
	lo, c := bits.Sub64(a.lo, 1, 0)
	return u128{a.hi - c, lo}
}

func (a u128) and(b u128) u128 { return u128{a.hi & b.hi, a.lo & b.lo} }
func (a u128) or(b u128) u128  { return u128{a.hi | b.hi, a.lo | b.lo} }
func (a u128) not() u128       { return u128{^a.hi, ^a.lo} }

// shl returns a << n for n < 128.
func (a u128) shl(n uint) u128 {
	switch {
	case n == 0:
		return a
	case n >= 64:
		return u128{a.lo << (n - 64), 0}
	}
	return u128{a.hi<<n | a.lo>>(64-n), a.lo << n}
}

// lowMask returns a value with the low n bits set (all bits for n >= 128).
func lowMask(n uint) u128 {
	switch {
	case n >= 128:
		return u128Max
	case n >= 64:
		return u128{1<<(n-64) - 1, math.MaxUint64}
	}
	return u128{0, 1<<n - 1}
}

// digit returns the 6-bit digit of a at the given tree level.
func (a u128) digit(level int) uint {
	s := uint(level) * 6
	switch {
	case s >= 64:
		return uint(a.hi>>(s-64)) & 63
	case s <= 58:
		return uint(a.lo>>s) & 63
	}
	return uint(a.lo>>s|a.hi<<(64-s)) & 63
}

// uint64Sat returns a as a uint64, saturating at math.MaxUint64.
func (a u128) uint64Sat() uint64 {
	if a.hi != 0 {
		return math.MaxUint64
	}
	return a.lo
}

// u128From returns the bits of an address as a u128 (IPv4 in the low 32 bits).
func u128From(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{0, uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

// addrFrom is the inverse of u128From for the given family.
func addrFrom(v u128, is4 bool) netip.Addr {
	if is4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(v.lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], v.hi)
	binary.BigEndian.PutUint64(b[8:], v.lo)
	return netip.AddrFrom16(b)
}
