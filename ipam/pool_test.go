package ipam

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	mustPrefix = netip.MustParsePrefix
	mustAddr   = netip.MustParseAddr
)

func newPool(t *testing.T, prefix string, opts ...Option) *Pool {
	t.Helper()
	p, err := New(mustPrefix(prefix), opts...)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

func allocateAll(t *testing.T, p *Pool) []netip.Addr {
	t.Helper()
	var got []netip.Addr
	for {
		a, err := p.Allocate()
		if errors.Is(err, ErrExhausted) {
			return got
		}
		require.NoError(t, err)
		got = append(got, a)
		require.Less(t, len(got), 1<<20, "runaway allocation")
	}
}

func TestNewInvalid(t *testing.T) {
	tests := []struct {
		name   string
		prefix netip.Prefix
		opts   []Option
		also   error // a second sentinel the error must wrap
	}{
		{name: "zero prefix"},
		{name: "host bits set", prefix: mustPrefix("10.0.0.1/24")},
		{name: "v6 host bits set", prefix: mustPrefix("fd00::1/64")},
		{name: "/31", prefix: mustPrefix("10.0.0.0/31")},
		{name: "/32", prefix: mustPrefix("10.0.0.0/32")},
		{name: "/127", prefix: mustPrefix("fd00::/127")},
		{name: "/128", prefix: mustPrefix("fd00::/128")},
		{name: "4in6 prefix", prefix: mustPrefix("::ffff:10.0.0.0/120")},
		{name: "zero option", prefix: mustPrefix("10.0.0.0/24"), opts: []Option{{}}},
		{
			name: "range start outside", prefix: mustPrefix("10.0.0.0/24"),
			opts: []Option{Range(mustAddr("10.0.1.1"), mustAddr("10.0.1.5"))}, also: ErrOutOfRange,
		},
		{
			name: "range end outside", prefix: mustPrefix("10.0.0.0/24"),
			opts: []Option{Range(mustAddr("10.0.0.10"), mustAddr("10.0.1.5"))}, also: ErrOutOfRange,
		},
		{
			name: "range start after end", prefix: mustPrefix("10.0.0.0/24"),
			opts: []Option{Range(mustAddr("10.0.0.20"), mustAddr("10.0.0.10"))},
		},
		{
			name: "range mixed families", prefix: mustPrefix("10.0.0.0/24"),
			opts: []Option{Range(mustAddr("10.0.0.2"), mustAddr("fd00::2"))},
		},
		{
			name: "range other family", prefix: mustPrefix("10.0.0.0/24"),
			opts: []Option{Range(mustAddr("fd00::2"), mustAddr("fd00::5"))}, also: ErrOutOfRange,
		},
		{
			name: "range zero addr", prefix: mustPrefix("10.0.0.0/24"),
			opts: []Option{Range(netip.Addr{}, mustAddr("10.0.0.5"))},
		},
		{
			name: "range zoned", prefix: mustPrefix("fe80::/64"),
			opts: []Option{Range(mustAddr("fe80::2%eth0"), mustAddr("fe80::5"))},
		},
		{
			name: "range only reserved", prefix: mustPrefix("10.0.0.0/24"),
			opts: []Option{Range(mustAddr("10.0.0.1"), mustAddr("10.0.0.1"))},
		},
		{
			name: "gateway outside", prefix: mustPrefix("10.0.0.0/24"),
			opts: []Option{Gateway(mustAddr("10.0.1.1"))}, also: ErrOutOfRange,
		},
		{name: "gateway network", prefix: mustPrefix("10.0.0.0/24"), opts: []Option{Gateway(mustAddr("10.0.0.0"))}},
		{name: "gateway broadcast", prefix: mustPrefix("10.0.0.0/24"), opts: []Option{Gateway(mustAddr("10.0.0.255"))}},
		{name: "gateway v6 network", prefix: mustPrefix("fd00::/64"), opts: []Option{Gateway(mustAddr("fd00::"))}},
		{name: "gateway zero", prefix: mustPrefix("10.0.0.0/24"), opts: []Option{Gateway(netip.Addr{})}},
		{
			name: "exclude outside", prefix: mustPrefix("10.0.0.0/24"),
			opts: []Option{Exclude(mustAddr("10.0.0.5"), mustAddr("192.168.0.1"))}, also: ErrOutOfRange,
		},
		{
			name: "exclude prefix host bits", prefix: mustPrefix("10.0.0.0/24"),
			opts: []Option{ExcludePrefix(mustPrefix("10.0.0.1/28"))},
		},
		{
			name: "exclude prefix disjoint", prefix: mustPrefix("10.0.0.0/24"),
			opts: []Option{ExcludePrefix(mustPrefix("10.0.1.0/28"))}, also: ErrOutOfRange,
		},
		{
			name: "exclude prefix other family", prefix: mustPrefix("10.0.0.0/24"),
			opts: []Option{ExcludePrefix(mustPrefix("fd00::/64"))}, also: ErrOutOfRange,
		},
		{
			name: "exclude everything", prefix: mustPrefix("10.0.0.0/24"),
			opts: []Option{ExcludePrefix(mustPrefix("10.0.0.0/8"))},
		},
		{
			name: "exclude all usable", prefix: mustPrefix("10.0.0.0/30"),
			opts: []Option{Exclude(mustAddr("10.0.0.2"))},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(tt.prefix, tt.opts...)
			require.Error(t, err)
			assert.Nil(t, p)
			assert.ErrorIs(t, err, ErrInvalid)
			if tt.also != nil {
				assert.ErrorIs(t, err, tt.also)
			}
			var e *Error
			require.ErrorAs(t, err, &e)
			assert.Equal(t, "new", e.Op)
			assertMessage(t, err)

			p, err = Open(t.TempDir(), tt.prefix, tt.opts...)
			assert.Nil(t, p)
			assert.ErrorIs(t, err, ErrInvalid)
		})
	}
}

// assertMessage checks the house style of error strings.
func assertMessage(t *testing.T, err error) {
	t.Helper()
	msg := err.Error()
	assert.True(t, strings.HasPrefix(msg, "ipam: "), msg)
	assert.False(t, strings.HasSuffix(msg, "."), msg)
	for _, part := range strings.Split(msg, ": ")[1:] {
		if part != "" && part[0] >= 'A' && part[0] <= 'Z' {
			t.Errorf("capitalised part %q in %q", part, msg)
		}
	}
}

func TestNeverAllocatesReserved(t *testing.T) {
	tests := []struct {
		prefix   string
		opts     []Option
		reserved []string
		want     int
	}{
		{"10.0.0.0/24", nil, []string{"10.0.0.0", "10.0.0.1", "10.0.0.255"}, 253},
		{"10.0.0.0/24", []Option{NoGateway()}, []string{"10.0.0.0", "10.0.0.255"}, 254},
		{"10.0.0.0/24", []Option{Gateway(mustAddr("10.0.0.254"))}, []string{"10.0.0.0", "10.0.0.254", "10.0.0.255"}, 253},
		{
			"10.0.0.0/24",
			[]Option{Exclude(mustAddr("10.0.0.7"), mustAddr("10.0.0.9")), ExcludePrefix(mustPrefix("10.0.0.128/26"))},
			[]string{"10.0.0.0", "10.0.0.1", "10.0.0.7", "10.0.0.9", "10.0.0.128", "10.0.0.150", "10.0.0.191", "10.0.0.255"},
			253 - 2 - 64,
		},
		{
			"10.0.0.0/24",
			[]Option{Range(mustAddr("10.0.0.0"), mustAddr("10.0.0.9"))},
			[]string{"10.0.0.0", "10.0.0.1", "10.0.0.10", "10.0.0.255"},
			8,
		},
		{"fd00::/120", nil, []string{"fd00::", "fd00::1"}, 254},
		{
			"fd00::/120", []Option{Gateway(mustAddr("fd00::ff")), ExcludePrefix(mustPrefix("fd00::/121"))},
			[]string{"fd00::", "fd00::1", "fd00::7f", "fd00::ff"}, 127,
		},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s%d", tt.prefix, len(tt.opts)), func(t *testing.T) {
			p := newPool(t, tt.prefix, tt.opts...)
			require.Equal(t, uint64(tt.want), p.Size())
			require.Equal(t, uint64(tt.want), p.Free())
			got := allocateAll(t, p)
			assert.Len(t, got, tt.want)
			assert.Len(t, slices.Compact(slices.Clone(got)), tt.want, "duplicates")
			for _, r := range tt.reserved {
				assert.NotContains(t, got, mustAddr(r))
				assert.False(t, p.Contains(mustAddr(r)), r)
				err := p.AllocateAddr(mustAddr(r))
				assert.True(t, errors.Is(err, ErrReserved) || errors.Is(err, ErrOutOfRange), err)
			}
			for _, a := range got {
				assert.True(t, p.Contains(a))
				assert.True(t, p.Allocated(a))
			}
			assert.Equal(t, tt.want, p.Used())
			assert.Zero(t, p.Free())
			_, err := p.Allocate()
			assert.ErrorIs(t, err, ErrExhausted)
		})
	}
}

func TestSmallestPrefixes(t *testing.T) {
	tests := []struct {
		prefix string
		opts   []Option
		want   []string
	}{
		{"10.0.0.0/30", nil, []string{"10.0.0.2"}},
		{"10.0.0.0/30", []Option{NoGateway()}, []string{"10.0.0.1", "10.0.0.2"}},
		{"10.0.0.0/30", []Option{Gateway(mustAddr("10.0.0.2"))}, []string{"10.0.0.1"}},
		{"fd00::/126", nil, []string{"fd00::2", "fd00::3"}},
		{"fd00::/126", []Option{NoGateway()}, []string{"fd00::1", "fd00::2", "fd00::3"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s%d", tt.prefix, len(tt.opts)), func(t *testing.T) {
			p := newPool(t, tt.prefix, tt.opts...)
			var want []netip.Addr
			for _, s := range tt.want {
				want = append(want, mustAddr(s))
			}
			assert.Equal(t, want, allocateAll(t, p))
			_, err := p.Allocate()
			assert.ErrorIs(t, err, ErrExhausted)
			_, err = p.AllocateFor("x")
			assert.ErrorIs(t, err, ErrExhausted)
			// Releasing one makes exactly that one available again.
			require.NoError(t, p.Release(want[0]))
			a, err := p.Allocate()
			require.NoError(t, err)
			assert.Equal(t, want[0], a)
		})
	}
}

func TestRoundRobin(t *testing.T) {
	for _, tt := range []struct {
		name, prefix string
		base         netip.Addr // address of offset 0
	}{
		{"v4", "10.0.0.0/24", mustAddr("10.0.0.0")},
		{"v6", "fd00::/64", mustAddr("fd00::")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			at := func(i int) netip.Addr {
				a := tt.base
				for range i {
					a = a.Next()
				}
				return a
			}
			p := newPool(t, tt.prefix, Range(at(10), at(14)))
			alloc := func() netip.Addr {
				t.Helper()
				a, err := p.Allocate()
				require.NoError(t, err)
				return a
			}
			assert.Equal(t, at(10), alloc())
			assert.Equal(t, at(11), alloc())
			assert.Equal(t, at(12), alloc())
			require.NoError(t, p.Release(at(11)))
			// .11 is free but behind the cursor: the rest of the range first.
			assert.Equal(t, at(13), alloc())
			assert.Equal(t, at(14), alloc())
			// Wrap-around finds the released address.
			assert.Equal(t, at(11), alloc())
			_, err := p.Allocate()
			require.ErrorIs(t, err, ErrExhausted)

			// Release two; the one after the cursor comes first, then wrap.
			require.NoError(t, p.Release(at(10)))
			require.NoError(t, p.Release(at(13)))
			assert.Equal(t, at(13), alloc())
			assert.Equal(t, at(10), alloc())

			// A requested address does not move the cursor.
			require.NoError(t, p.Release(at(12)))
			require.NoError(t, p.Release(at(14)))
			require.NoError(t, p.AllocateAddr(at(14)))
			assert.Equal(t, at(12), alloc())
			_, err = p.Allocate()
			require.ErrorIs(t, err, ErrExhausted)

			// Cursor at the end of the range wraps to the start.
			require.NoError(t, p.Release(at(14)))
			require.NoError(t, p.Release(at(10)))
			assert.Equal(t, at(14), alloc())
			assert.Equal(t, at(10), alloc())
		})
	}
}

// TestRoundRobinWholeRange releases random sets of addresses from a full
// pool and checks that they come back in cursor order: first those after
// the last allocation, ascending, then, after wrapping, those before it.
func TestRoundRobinWholeRange(t *testing.T) {
	for _, prefix := range []string{"10.1.0.0/22", "fd00:1::/118"} {
		t.Run(prefix, func(t *testing.T) {
			p := newPool(t, prefix)
			all := allocateAll(t, p)
			require.Len(t, all, int(p.Size()))
			rng := rand.New(rand.NewPCG(1, 2))
			cursor := all[len(all)-1]
			for round := range 20 {
				var released []netip.Addr
				for _, i := range rng.Perm(len(all))[:1+rng.IntN(200)] {
					require.NoError(t, p.Release(all[i]))
					released = append(released, all[i])
				}
				slices.SortFunc(released, netip.Addr.Compare)
				i, _ := slices.BinarySearchFunc(released, cursor, netip.Addr.Compare)
				if i < len(released) && released[i] == cursor {
					i++
				}
				want := append(slices.Clone(released[i:]), released[:i]...)
				var got []netip.Addr
				for range released {
					a, err := p.Allocate()
					require.NoError(t, err)
					got = append(got, a)
				}
				require.Equal(t, want, got, "round %d", round)
				cursor = got[len(got)-1]
				_, err := p.Allocate()
				require.ErrorIs(t, err, ErrExhausted)
			}
		})
	}
}

func TestAllocateAddr(t *testing.T) {
	p := newPool(t, "10.0.0.0/24", Range(mustAddr("10.0.0.10"), mustAddr("10.0.0.200")), Exclude(mustAddr("10.0.0.50")))
	require.NoError(t, p.AllocateAddr(mustAddr("10.0.0.20")))
	tests := []struct {
		addr netip.Addr
		want error
	}{
		{mustAddr("10.0.0.20"), ErrDuplicate},
		{mustAddr("10.0.0.50"), ErrReserved},
		{mustAddr("10.0.0.1"), ErrOutOfRange}, // gateway, outside the range
		{mustAddr("10.0.0.5"), ErrOutOfRange},
		{mustAddr("10.0.0.201"), ErrOutOfRange},
		{mustAddr("10.0.1.20"), ErrOutOfRange},
		{mustAddr("fd00::20"), ErrOutOfRange},
		{netip.Addr{}, ErrInvalid},
		{mustAddr("::ffff:10.0.0.20"), ErrOutOfRange},
	}
	for _, tt := range tests {
		t.Run(tt.addr.String(), func(t *testing.T) {
			err := p.AllocateAddr(tt.addr)
			require.ErrorIs(t, err, tt.want)
			var e *Error
			require.ErrorAs(t, err, &e)
			assert.Equal(t, "allocate", e.Op)
			assert.Equal(t, tt.addr, e.Addr)
			assertMessage(t, err)
			assert.ErrorIs(t, p.AllocateAddrFor("o", tt.addr), tt.want)
		})
	}
	assert.Equal(t, 1, p.Used())
	assert.Equal(t,
		`ipam: allocate 10.0.0.50 (owner "c1/eth0"): address reserved`,
		p.AllocateAddrFor("c1/eth0", mustAddr("10.0.0.50")).Error())
}

// TestAllocateFrom allocates the first free address at or after an
// address, never wrapping, and moves the round-robin position.
func TestAllocateFrom(t *testing.T) {
	p := newPool(t, "10.0.0.0/24", Range(mustAddr("10.0.0.10"), mustAddr("10.0.0.20")), Exclude(mustAddr("10.0.0.16")))
	a, err := p.AllocateFrom(mustAddr("10.0.0.15"))
	require.NoError(t, err)
	assert.Equal(t, mustAddr("10.0.0.15"), a)
	a, err = p.AllocateFromFor("o1", mustAddr("10.0.0.15"))
	require.NoError(t, err)
	assert.Equal(t, mustAddr("10.0.0.17"), a, "taken and excluded addresses skipped")
	owner, _ := p.Owner(a)
	assert.Equal(t, "o1", owner)
	a, err = p.Allocate()
	require.NoError(t, err)
	assert.Equal(t, mustAddr("10.0.0.18"), a, "the round-robin position moved")
	a, err = p.AllocateFrom(mustAddr("10.0.0.1"))
	require.NoError(t, err)
	assert.Equal(t, mustAddr("10.0.0.10"), a, "before the range: from its start")
	for _, want := range []string{"10.0.0.19", "10.0.0.20"} {
		a, err = p.AllocateFrom(mustAddr("10.0.0.19"))
		require.NoError(t, err)
		assert.Equal(t, mustAddr(want), a)
	}
	_, err = p.AllocateFrom(mustAddr("10.0.0.19"))
	require.ErrorIs(t, err, ErrExhausted, "no wrapping, though 10.0.0.11 is free")
	_, err = p.AllocateFrom(mustAddr("10.0.0.200"))
	require.ErrorIs(t, err, ErrExhausted, "after the range")
	for _, bad := range []struct {
		a    netip.Addr
		want error
	}{{mustAddr("10.0.1.1"), ErrOutOfRange}, {mustAddr("fd00::1"), ErrOutOfRange}, {netip.Addr{}, ErrInvalid}} {
		_, err = p.AllocateFrom(bad.a)
		require.ErrorIs(t, err, bad.want, "%v", bad.a)
	}
	_, err = p.AllocateFromFor("", mustAddr("10.0.0.11"))
	require.ErrorIs(t, err, ErrInvalid, "empty owner")
	a, err = p.AllocateFrom(mustAddr("10.0.0.11"))
	require.NoError(t, err)
	assert.Equal(t, mustAddr("10.0.0.11"), a)
}

func TestRelease(t *testing.T) {
	p := newPool(t, "10.0.0.0/24", Exclude(mustAddr("10.0.0.9")))
	a, err := p.Allocate()
	require.NoError(t, err)
	tests := []struct {
		addr netip.Addr
		also error
	}{
		{mustAddr("10.0.0.100"), nil},
		{mustAddr("10.0.0.1"), ErrReserved},
		{mustAddr("10.0.0.9"), ErrReserved},
		{mustAddr("10.0.0.0"), ErrReserved},
		{mustAddr("10.0.1.1"), ErrOutOfRange},
		{netip.Addr{}, ErrInvalid},
	}
	for _, tt := range tests {
		err := p.Release(tt.addr)
		require.ErrorIs(t, err, ErrNotAllocated, tt.addr)
		if tt.also != nil {
			assert.ErrorIs(t, err, tt.also, tt.addr)
		}
		assertMessage(t, err)
	}
	require.NoError(t, p.Release(a))
	err = p.Release(a)
	assert.ErrorIs(t, err, ErrNotAllocated)
	assert.EqualError(t, err, "ipam: release 10.0.0.2: address not allocated")
	assert.Zero(t, p.Used())
}

func TestOwners(t *testing.T) {
	p := newPool(t, "fd00::/64")
	a1, err := p.AllocateFor("c1/eth0")
	require.NoError(t, err)
	anon, err := p.Allocate()
	require.NoError(t, err)
	a2, err := p.AllocateFor("c2/eth0")
	require.NoError(t, err)
	require.NoError(t, p.AllocateAddrFor("c1/eth0", mustAddr("fd00::1:0")))
	a3, err := p.AllocateFor("c1/eth0")
	require.NoError(t, err)

	assert.Equal(t, []netip.Addr{a1, a3, mustAddr("fd00::1:0")}, p.Lookup("c1/eth0"))
	assert.Equal(t, []netip.Addr{a2}, p.Lookup("c2/eth0"))
	assert.Nil(t, p.Lookup("nobody"))

	owner, ok := p.Owner(a2)
	assert.True(t, ok)
	assert.Equal(t, "c2/eth0", owner)
	owner, ok = p.Owner(anon)
	assert.True(t, ok, "anonymous allocation is allocated")
	assert.Empty(t, owner)
	_, ok = p.Owner(mustAddr("fd00::99"))
	assert.False(t, ok)

	assert.Equal(t, []Allocation{
		{a1, "c1/eth0"}, {anon, ""}, {a2, "c2/eth0"}, {a3, "c1/eth0"}, {mustAddr("fd00::1:0"), "c1/eth0"},
	}, slices.Collect(p.All()))

	got, err := p.ReleaseOwner("c1/eth0")
	require.NoError(t, err)
	assert.Equal(t, []netip.Addr{a1, a3, mustAddr("fd00::1:0")}, got)
	assert.Nil(t, p.Lookup("c1/eth0"))
	assert.False(t, p.Allocated(a1))
	assert.Equal(t, 2, p.Used())

	// Idempotent, like CNI DEL.
	got, err = p.ReleaseOwner("c1/eth0")
	assert.NoError(t, err)
	assert.Nil(t, got)

	// Releasing by address drops the owner too.
	require.NoError(t, p.Release(a2))
	assert.Nil(t, p.Lookup("c2/eth0"))

	for _, bad := range []string{"", strings.Repeat("x", maxOwnerLen+1)} {
		_, err := p.AllocateFor(bad)
		assert.ErrorIs(t, err, ErrInvalid)
		assert.ErrorIs(t, p.AllocateAddrFor(bad, mustAddr("fd00::5")), ErrInvalid)
		_, err = p.ReleaseOwner(bad)
		assert.ErrorIs(t, err, ErrInvalid)
	}
	_, err = p.AllocateFor(strings.Repeat("x", maxOwnerLen))
	assert.NoError(t, err)
}

func TestGC(t *testing.T) {
	p := newPool(t, "10.0.0.0/24")
	var want []Allocation
	for i := range 6 {
		owner := fmt.Sprintf("c%d/eth0", i%3)
		a, err := p.AllocateFor(owner)
		require.NoError(t, err)
		if owner != "c1/eth0" {
			want = append(want, Allocation{a, owner})
		}
	}
	anon, err := p.Allocate()
	require.NoError(t, err)

	var asked []string
	got, err := p.GC(func(owner string) bool {
		asked = append(asked, owner)
		p.Used() // alive may call the pool
		return owner == "c1/eth0"
	})
	require.NoError(t, err)
	assert.Equal(t, want, got)
	assert.ElementsMatch(t, []string{"c0/eth0", "c1/eth0", "c2/eth0"}, asked)
	assert.Len(t, p.Lookup("c1/eth0"), 2)
	assert.Nil(t, p.Lookup("c0/eth0"))
	assert.True(t, p.Allocated(anon), "anonymous allocations are never collected")
	assert.Equal(t, 3, p.Used())

	got, err = p.GC(func(string) bool { return true })
	assert.NoError(t, err)
	assert.Empty(t, got)

	_, err = p.GC(nil)
	assert.ErrorIs(t, err, ErrInvalid)
}

func TestClose(t *testing.T) {
	for _, persistent := range []bool{false, true} {
		t.Run(fmt.Sprint("persistent=", persistent), func(t *testing.T) {
			var p *Pool
			var err error
			if persistent {
				p, err = Open(t.TempDir(), mustPrefix("10.0.0.0/24"))
				if errors.Is(err, errors.ErrUnsupported) {
					t.Skip(err)
				}
			} else {
				p, err = New(mustPrefix("10.0.0.0/24"))
			}
			require.NoError(t, err)
			a, err := p.AllocateFor("c")
			require.NoError(t, err)
			require.NoError(t, p.Close())
			require.NoError(t, p.Close(), "Close is idempotent")

			_, err = p.Allocate()
			assert.ErrorIs(t, err, ErrClosed)
			_, err = p.AllocateFor("c")
			assert.ErrorIs(t, err, ErrClosed)
			assert.ErrorIs(t, p.AllocateAddr(mustAddr("10.0.0.9")), ErrClosed)
			assert.ErrorIs(t, p.AllocateAddrFor("c", mustAddr("10.0.0.9")), ErrClosed)
			assert.ErrorIs(t, p.Release(a), ErrClosed)
			_, err = p.ReleaseOwner("c")
			assert.ErrorIs(t, err, ErrClosed)
			_, err = p.GC(func(string) bool { return false })
			assert.ErrorIs(t, err, ErrClosed)
			assert.ErrorIs(t, p.Refresh(), ErrClosed)
			assertMessage(t, p.Refresh())

			assert.Nil(t, p.Lookup("c"))
			assert.False(t, p.Allocated(a))
			_, ok := p.Owner(a)
			assert.False(t, ok)
			assert.Zero(t, p.Used())
			assert.Zero(t, p.Free())
			assert.Empty(t, slices.Collect(p.All()))
			// Configuration stays readable.
			assert.Equal(t, mustPrefix("10.0.0.0/24"), p.Prefix())
		})
	}
}

func TestConcurrentGoroutines(t *testing.T) {
	p := newPool(t, "10.0.0.0/20")
	const workers, each = 8, 400
	results := make([][]netip.Addr, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				var a netip.Addr
				var err error
				if i%2 == 0 {
					a, err = p.Allocate()
				} else {
					a, err = p.AllocateFor(fmt.Sprintf("w%d", w))
				}
				if err != nil {
					t.Error(err)
					return
				}
				results[w] = append(results[w], a)
				if i%4 == 3 { // churn some
					if err := p.Release(results[w][0]); err != nil {
						t.Error(err)
						return
					}
					results[w] = results[w][1:]
				}
				p.Used()
				p.Lookup(fmt.Sprintf("w%d", w))
			}
		})
	}
	wg.Wait()
	var all []netip.Addr
	for _, r := range results {
		all = append(all, r...)
	}
	slices.SortFunc(all, netip.Addr.Compare)
	assert.Len(t, slices.Compact(slices.Clone(all)), len(all), "an address was handed out twice")
	assert.Equal(t, len(all), p.Used())
	var got []netip.Addr
	for a := range p.All() {
		got = append(got, a.Addr)
	}
	assert.Equal(t, all, got)
}

func TestHugePools(t *testing.T) {
	tests := []struct {
		prefix string
		opts   []Option
		size   uint64
	}{
		{"10.0.0.0/8", nil, 1<<24 - 3},
		{"0.0.0.0/0", nil, 1<<32 - 3},
		{"fd00::/64", nil, math.MaxUint64 - 1},
		{"fd00::/64", []Option{ExcludePrefix(mustPrefix("fd00::/65"))}, 1 << 63},
		{"fd00::/48", nil, math.MaxUint64},
		{"::/0", nil, math.MaxUint64},
		{"fd00::/63", []Option{Range(mustAddr("fd00::"), mustAddr("fd00::1:0:0:0:ffff"))}, math.MaxUint64}, // 2^64+2^16-2 saturates
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			p := newPool(t, tt.prefix, tt.opts...)
			if tt.size != math.MaxUint64 || p.lay.capacity.hi != 0 {
				assert.Equal(t, tt.size, p.Size())
			}
			// No per-address memory: an empty pool only materialises the
			// paths to the edges of its reserved spans.
			empty := countNodes(p.st.t.root)
			assert.LessOrEqual(t, empty, 2*p.st.t.levels*(len(p.lay.reserved)+1))
			var got []netip.Addr
			for range 1000 {
				a, err := p.Allocate()
				require.NoError(t, err)
				require.True(t, p.Contains(a))
				got = append(got, a)
			}
			assert.True(t, slices.IsSortedFunc(got, netip.Addr.Compare))
			// 1000 sequential addresses: ~16 leaves plus one path.
			assert.Less(t, countNodes(p.st.t.root), empty+16+p.st.t.levels)
			if tt.size < math.MaxUint64 {
				assert.Equal(t, tt.size-1000, p.Free())
			}

			// The last address of the prefix (v6) and its neighbours.
			last := lastAddr(p.Prefix())
			if !last.Is4() && p.Contains(last) {
				require.NoError(t, p.AllocateAddr(last))
				assert.True(t, p.Allocated(last))
				require.NoError(t, p.Release(last))
			}
			for _, a := range got {
				require.NoError(t, p.Release(a))
			}
			assert.Equal(t, empty, countNodes(p.st.t.root), "freed nodes are dropped")
		})
	}
}

func TestHugeExcludedPrefix(t *testing.T) {
	p := newPool(t, "fd00::/48", ExcludePrefix(mustPrefix("fd00::/49"), mustPrefix("fd00:0:0:8000::/50")))
	a, err := p.Allocate()
	require.NoError(t, err)
	assert.Equal(t, mustAddr("fd00:0:0:c000::"), a)
	assert.False(t, p.Contains(mustAddr("fd00:0:0:7fff:ffff:ffff:ffff:ffff")))
	assert.True(t, p.Contains(mustAddr("fd00:0:0:ffff:ffff:ffff:ffff:ffff")))
	assert.Less(t, countNodes(p.st.t.root), 64)
}

func countNodes(n *node) int {
	if n == nil {
		return 0
	}
	c := 1
	if n.kids != nil {
		for _, k := range n.kids {
			c += countNodes(k)
		}
	}
	return c
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := range b {
		bit := i * 8
		for j := range 8 {
			if bit+j >= p.Bits() {
				b[i] |= 0x80 >> j
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func TestOptionsLastWins(t *testing.T) {
	p := newPool(t, "10.0.0.0/24", Gateway(mustAddr("10.0.0.9")), NoGateway())
	_, ok := p.Gateway()
	assert.False(t, ok)

	p = newPool(t, "10.0.0.0/24", NoGateway(), Gateway(mustAddr("10.0.0.9")))
	gw, ok := p.Gateway()
	assert.True(t, ok)
	assert.Equal(t, mustAddr("10.0.0.9"), gw)
	a, err := p.Allocate()
	require.NoError(t, err)
	assert.Equal(t, mustAddr("10.0.0.1"), a, "the default gateway is not reserved when another is set")

	p = newPool(t, "10.0.0.0/24", Range(mustAddr("10.0.0.10"), mustAddr("10.0.0.20")), Range(mustAddr("10.0.0.30"), mustAddr("10.0.0.40")))
	start, end := p.Range()
	assert.Equal(t, mustAddr("10.0.0.30"), start)
	assert.Equal(t, mustAddr("10.0.0.40"), end)

	// Exclusions accumulate.
	p = newPool(t, "10.0.0.0/29", Exclude(mustAddr("10.0.0.2")), Exclude(mustAddr("10.0.0.3")))
	assert.Equal(t, []netip.Addr{mustAddr("10.0.0.4"), mustAddr("10.0.0.5"), mustAddr("10.0.0.6")}, allocateAll(t, p))

	p = newPool(t, "fd00::/64")
	gw, ok = p.Gateway()
	assert.True(t, ok)
	assert.Equal(t, mustAddr("fd00::1"), gw)
}

func TestErrorType(t *testing.T) {
	err := error(&Error{Op: "allocate", Addr: mustAddr("10.0.0.1"), Owner: "c", Err: ErrDuplicate})
	assert.EqualError(t, err, `ipam: allocate 10.0.0.1 (owner "c"): address already allocated`)
	assert.ErrorIs(t, err, ErrDuplicate)
	long := &Error{Op: "gc", Owner: strings.Repeat("y", 100), Err: ErrInvalid}
	assert.Contains(t, long.Error(), `yyy"...): invalid argument`)
	assert.Equal(t, "ipam: gc", (&Error{Op: "gc"}).Error())
}
