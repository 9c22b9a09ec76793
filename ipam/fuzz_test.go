package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
)

// poolModel is the obviously correct reference for FuzzPool: a slice of
// flags and a map, with linear scans.
type poolModel struct {
	addrs       []netip.Addr // addrs[i] is the address at offset i; a few extra past the prefix
	size        int          // addresses in the prefix
	allocatable []bool
	start, end  int
	owners      map[int]string // allocated offsets
	cursor      int            // -1 before the first dynamic allocation
}

// fuzzConfig decodes a pool configuration from the first bytes of data.
func fuzzConfig(data []byte) (prefix netip.Prefix, opts []Option, m *poolModel, valid bool, rest []byte) {
	next := func() int {
		if len(data) == 0 {
			return 0
		}
		b := data[0]
		data = data[1:]
		return int(b)
	}
	shape := next()
	hostBits := 2 + shape%7 // /30../24 or /126../120
	base := netip.MustParseAddr("10.20.30.0")
	bits := 32 - hostBits
	if shape&0x80 != 0 {
		base = netip.MustParseAddr("fd00:1:2:3::")
		bits = 128 - hostBits
	}
	prefix = netip.PrefixFrom(base, bits)
	size := 1 << hostBits
	m = &poolModel{size: size, owners: map[int]string{}, cursor: -1, end: size - 1}
	a := base
	for range size + 4 {
		m.addrs = append(m.addrs, a)
		a = a.Next()
	}
	reserved := make([]bool, size)
	reserved[0] = true
	if base.Is4() {
		reserved[size-1] = true
	}
	valid = true

	switch gw := next(); gw % 3 {
	case 0:
		reserved[1] = true
	case 1:
		opts = append(opts, NoGateway())
	case 2:
		g := next() % size
		opts = append(opts, Gateway(m.addrs[g]))
		if g == 0 || (base.Is4() && g == size-1) {
			valid = false
		}
		reserved[g] = true
	}
	if r := next(); r&1 != 0 {
		s, e := next()%size, next()%size
		if s > e {
			s, e = e, s
		}
		opts = append(opts, Range(m.addrs[s], m.addrs[e]))
		m.start, m.end = s, e
	}
	for range next() % 4 {
		x := next() % size
		if y := next(); y&0x80 != 0 {
			// An aligned sub-prefix of 2^(y%3) addresses.
			n := 1 << (y % 3)
			x &^= n - 1
			opts = append(opts, ExcludePrefix(netip.PrefixFrom(m.addrs[x], prefix.Addr().BitLen()-(y%3))))
			for i := x; i < x+n && i < size; i++ {
				reserved[i] = true
			}
		} else {
			opts = append(opts, Exclude(m.addrs[x]))
			reserved[x] = true
		}
	}
	m.allocatable = make([]bool, size)
	any := false
	for i := range size {
		m.allocatable[i] = !reserved[i] && i >= m.start && i <= m.end
		any = any || m.allocatable[i]
	}
	return prefix, opts, m, valid && any, data
}

func (m *poolModel) nextFree() (int, bool) {
	n := m.end - m.start + 1
	from := m.cursor + 1
	if m.cursor < 0 || m.cursor >= m.end {
		from = m.start
	}
	for k := range n {
		i := m.start + (from-m.start+k)%n
		if _, taken := m.owners[i]; m.allocatable[i] && !taken {
			return i, true
		}
	}
	return 0, false
}

func (m *poolModel) offsetOf(a netip.Addr) int { return slices.Index(m.addrs, a) }

func (m *poolModel) lookup(owner string) []netip.Addr {
	var out []netip.Addr
	for i := range m.addrs[:m.size] {
		if o, ok := m.owners[i]; ok && o == owner {
			out = append(out, m.addrs[i])
		}
	}
	return out
}

var fuzzOwners = []string{"", "a/eth0", "b/eth0", "c/net1"}

func FuzzPool(f *testing.F) {
	f.Add([]byte{0x06, 0, 0, 0, 0, 0, 0, 0, 1, 1, 4, 3, 7, 0})
	f.Add([]byte{0x80, 1, 1, 3, 0, 0, 0, 0, 0, 0, 0, 4, 2, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		prefix, opts, m, valid, ops := fuzzConfig(data)
		p, err := New(prefix, opts...)
		if !valid {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("New(%s) = %v, want ErrInvalid", prefix, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("New(%s): %v", prefix, err)
		}
		defer p.Close()
		var log []entry // successful changes, for the journal round trip

		for len(ops) >= 2 {
			code, arg := ops[0]%10, int(ops[1])
			ops = ops[2:]
			owner := fuzzOwners[arg%len(fuzzOwners)]
			target := m.addrs[arg%len(m.addrs)]
			off := m.offsetOf(target)
			switch code {
			case 0, 1: // Allocate, AllocateFor
				var got netip.Addr
				var err error
				if code == 0 || owner == "" {
					owner = ""
					got, err = p.Allocate()
				} else {
					got, err = p.AllocateFor(owner)
				}
				want, ok := m.nextFree()
				if !ok {
					if !errors.Is(err, ErrExhausted) {
						t.Fatalf("allocate: got %v %v, want ErrExhausted", got, err)
					}
					continue
				}
				if err != nil || got != m.addrs[want] {
					t.Fatalf("allocate: got %v %v, want %v", got, err, m.addrs[want])
				}
				m.owners[want], m.cursor = owner, want
				log = append(log, entry{kind: entryAlloc, off: p.lay.offset(got), owner: owner})
			case 2, 3: // AllocateAddr, AllocateAddrFor
				var err error
				if code == 2 || owner == "" {
					owner = ""
					err = p.AllocateAddr(target)
				} else {
					err = p.AllocateAddrFor(owner, target)
				}
				var want error
				switch _, taken := m.owners[off]; {
				case off >= m.size || off < m.start || off > m.end:
					want = ErrOutOfRange
				case !m.allocatable[off]:
					want = ErrReserved
				case taken:
					want = ErrDuplicate
				}
				if want == nil {
					if err != nil {
						t.Fatalf("allocate %s: %v", target, err)
					}
					m.owners[off] = owner
					log = append(log, entry{kind: entryAllocAddr, off: p.lay.offset(target), owner: owner})
				} else if !errors.Is(err, want) {
					t.Fatalf("allocate %s: got %v, want %v", target, err, want)
				}
			case 4: // Release
				err := p.Release(target)
				if _, ok := m.owners[off]; ok && off < m.size {
					if err != nil {
						t.Fatalf("release %s: %v", target, err)
					}
					delete(m.owners, off)
					log = append(log, entry{kind: entryRelease, off: p.lay.offset(target)})
				} else if !errors.Is(err, ErrNotAllocated) {
					t.Fatalf("release %s: got %v, want ErrNotAllocated", target, err)
				}
			case 5: // ReleaseOwner
				got, err := p.ReleaseOwner(owner)
				if owner == "" {
					if !errors.Is(err, ErrInvalid) {
						t.Fatalf("release owner \"\": %v", err)
					}
					continue
				}
				want := m.lookup(owner)
				if err != nil || !slices.Equal(got, want) {
					t.Fatalf("release owner %s: got %v %v, want %v", owner, got, err, want)
				}
				for _, a := range want {
					delete(m.owners, m.offsetOf(a))
					log = append(log, entry{kind: entryRelease, off: p.lay.offset(a)})
				}
			case 6: // GC: bit i of arg says whether owner i is alive
				alive := func(o string) bool { return arg>>slices.Index(fuzzOwners, o)&1 != 0 }
				got, err := p.GC(alive)
				if err != nil {
					t.Fatalf("gc: %v", err)
				}
				var want []Allocation
				for i, a := range m.addrs[:m.size] {
					if o, ok := m.owners[i]; ok && o != "" && !alive(o) {
						want = append(want, Allocation{a, o})
						delete(m.owners, i)
						log = append(log, entry{kind: entryRelease, off: p.lay.offset(a)})
					}
				}
				if !slices.Equal(got, want) {
					t.Fatalf("gc: got %v, want %v", got, want)
				}
			case 7: // queries
				checkAgainstModel(t, p, m, owner, target, off)
			case 8: // AllocateFrom, AllocateFromFor
				var got netip.Addr
				var err error
				if owner == "" || arg%2 == 0 {
					owner = ""
					got, err = p.AllocateFrom(target)
				} else {
					got, err = p.AllocateFromFor(owner, target)
				}
				if off >= m.size {
					if !errors.Is(err, ErrOutOfRange) {
						t.Fatalf("allocate from %s: got %v %v, want ErrOutOfRange", target, got, err)
					}
					continue
				}
				want := -1
				for i := max(off, m.start); i <= m.end; i++ {
					if _, taken := m.owners[i]; m.allocatable[i] && !taken {
						want = i
						break
					}
				}
				if want < 0 {
					if !errors.Is(err, ErrExhausted) {
						t.Fatalf("allocate from %s: got %v %v, want ErrExhausted", target, got, err)
					}
					continue
				}
				if err != nil || got != m.addrs[want] {
					t.Fatalf("allocate from %s: got %v %v, want %v", target, got, err, m.addrs[want])
				}
				m.owners[want], m.cursor = owner, want
				log = append(log, entry{kind: entryAlloc, off: p.lay.offset(got), owner: owner})
			case 9: // AllocateAddrFor with Advance
				if owner == "" {
					owner = fuzzOwners[1]
				}
				err := p.AllocateAddrFor(owner, target, Advance())
				_, taken := m.owners[off]
				if off < m.size && off >= m.start && off <= m.end && m.allocatable[off] && !taken {
					if err != nil {
						t.Fatalf("allocate %s advancing: %v", target, err)
					}
					m.owners[off], m.cursor = owner, off
					log = append(log, entry{kind: entryAlloc, off: p.lay.offset(target), owner: owner})
				} else if err == nil {
					t.Fatalf("allocate %s advancing: no error, want one", target)
				}
			}
		}
		checkAgainstModel(t, p, m, "a/eth0", m.addrs[0], 0)
		checkJournalRoundTrip(t, p, log)
	})
}

func checkAgainstModel(t *testing.T, p *Pool, m *poolModel, owner string, target netip.Addr, off int) {
	t.Helper()
	if p.Used() != len(m.owners) {
		t.Fatalf("Used() = %d, want %d", p.Used(), len(m.owners))
	}
	capacity := 0
	for _, ok := range m.allocatable {
		if ok {
			capacity++
		}
	}
	if p.Size() != uint64(capacity) || p.Free() != uint64(capacity-len(m.owners)) {
		t.Fatalf("Size, Free = %d, %d, want %d, %d", p.Size(), p.Free(), capacity, capacity-len(m.owners))
	}
	var want []Allocation
	for i, a := range m.addrs[:m.size] {
		if o, ok := m.owners[i]; ok {
			want = append(want, Allocation{a, o})
		}
	}
	if got := slices.Collect(p.All()); !slices.Equal(got, want) {
		t.Fatalf("All() = %v, want %v", got, want)
	}
	if owner != "" {
		if got, want := p.Lookup(owner), m.lookup(owner); !slices.Equal(got, want) {
			t.Fatalf("Lookup(%s) = %v, want %v", owner, got, want)
		}
	}
	wantOwner, wantOK := m.owners[off]
	if gotOwner, gotOK := p.Owner(target); gotOK != wantOK || gotOwner != wantOwner {
		t.Fatalf("Owner(%s) = %q %v, want %q %v", target, gotOwner, gotOK, wantOwner, wantOK)
	}
	if p.Allocated(target) != wantOK {
		t.Fatalf("Allocated(%s) = %v", target, !wantOK)
	}
	inPool := off < m.size && m.allocatable[off]
	if p.Contains(target) != inPool {
		t.Fatalf("Contains(%s) = %v, want %v", target, !inPool, inPool)
	}
}

// checkJournalRoundTrip writes the operations as journal records and
// replays them; the result must equal the pool, including the round-robin
// position.
func checkJournalRoundTrip(t *testing.T, p *Pool, log []entry) {
	t.Helper()
	b := encodeHeader(p.lay.encode())
	seq := uint64(0)
	for i := 0; i < len(log); {
		n := 1 + i%3 // vary the number of entries per record
		n = min(n, len(log)-i)
		seq++
		b = appendRecord(b, seq, p.lay, log[i:i+n])
		i += n
	}
	b = append(b, make([]byte, 64)...)
	st := newState(p.lay)
	if _, _, err := replayJournal(b, p.lay, st); err != nil {
		t.Fatalf("replay: %v", err)
	}
	q := &Pool{lay: p.lay, st: st}
	if got, want := slices.Collect(q.All()), slices.Collect(p.All()); !slices.Equal(got, want) {
		t.Fatalf("replayed %v, want %v", got, want)
	}
	if st.hasCursor != p.st.hasCursor || st.cursor != p.st.cursor {
		t.Fatalf("replayed cursor %v %v, want %v %v", st.cursor, st.hasCursor, p.st.cursor, p.st.hasCursor)
	}
	// A compacted snapshot of the pool replays to the same state too.
	snap := appendRecord(encodeHeader(p.lay.encode()), 1, p.lay, p.st.snapshot())
	if len(p.st.snapshot()) == 0 {
		snap = encodeHeader(p.lay.encode())
	}
	st2 := newState(p.lay)
	if _, _, err := replayJournal(append(snap, 0, 0, 0, 0), p.lay, st2); err != nil {
		t.Fatalf("replay snapshot: %v", err)
	}
	q2 := &Pool{lay: p.lay, st: st2}
	if got, want := slices.Collect(q2.All()), slices.Collect(p.All()); !slices.Equal(got, want) {
		t.Fatalf("snapshot replayed %v, want %v", got, want)
	}
	if st2.cursor != p.st.cursor {
		t.Fatalf("snapshot cursor %v, want %v", st2.cursor, p.st.cursor)
	}
}

// FuzzJournal feeds arbitrary bytes after a valid header to the replay: it
// must never panic, and whatever it accepts must be a consistent state.
func FuzzJournal(f *testing.F) {
	l, err := newLayout(netip.MustParsePrefix("10.0.0.0/28"), nil)
	if err != nil {
		f.Fatal(err)
	}
	valid := appendRecord(nil, 1, l, []entry{
		{kind: entryAlloc, off: u128{0, 2}, owner: "x"},
		{kind: entryAllocAddr, off: u128{0, 9}},
	})
	valid = appendRecord(valid, 2, l, []entry{{kind: entryRelease, off: u128{0, 2}}, {kind: entryCursor, off: u128{0, 5}}})
	f.Add(valid)
	f.Add(append(slices.Clone(valid), 0, 0, 0, 9, 1, 2, 3))
	f.Add(valid[:len(valid)-3])
	f.Fuzz(func(t *testing.T, data []byte) {
		st := newState(l)
		_, r, err := replayJournal(append(encodeHeader(l.encode()), data...), l, st)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("replay error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if r.torn < 0 || r.torn > maxRecord {
			t.Fatalf("torn = %d", r.torn)
		}
		n := 0
		st.t.each(func(off u128) bool {
			n++
			if l.reservedAt(off) {
				t.Fatalf("reserved offset %v allocated", off)
			}
			return true
		})
		if uint64(n) != st.used {
			t.Fatalf("tree holds %d, used = %d", n, st.used)
		}
		owned := 0
		for owner, offs := range st.byOwner {
			for _, off := range offs {
				if st.owners[off] != owner {
					t.Fatalf("owner index mismatch at %v", off)
				}
				owned++
			}
		}
		if owned != len(st.owners) {
			t.Fatalf("owner index holds %d, owners %d", owned, len(st.owners))
		}
	})
}

// FuzzOptions checks that New either rejects a configuration with
// ErrInvalid or yields a pool that keeps its reservations.
func FuzzOptions(f *testing.F) {
	f.Add([]byte{10, 0, 0, 0}, uint8(24), uint8(0), []byte{10, 0, 0, 5}, []byte{10, 0, 0, 9})
	f.Add([]byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, uint8(64), uint8(7), []byte{}, []byte{0xfd})
	f.Fuzz(func(t *testing.T, pfx []byte, bits, flags uint8, a1, a2 []byte) {
		addr, ok := netip.AddrFromSlice(pfx)
		if !ok {
			return
		}
		prefix := netip.PrefixFrom(addr, int(bits)%(addr.BitLen()+2))
		x, _ := netip.AddrFromSlice(a1)
		y, _ := netip.AddrFromSlice(a2)
		var opts []Option
		if flags&1 != 0 {
			opts = append(opts, Range(x, y))
		}
		if flags&2 != 0 {
			opts = append(opts, Gateway(x))
		}
		if flags&4 != 0 {
			opts = append(opts, NoGateway())
		}
		if flags&8 != 0 {
			opts = append(opts, Exclude(y))
		}
		if flags&16 != 0 {
			opts = append(opts, ExcludePrefix(netip.PrefixFrom(y, int(flags>>5)*20)))
		}
		p, err := New(prefix, opts...)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("New: %v does not wrap ErrInvalid", err)
			}
			return
		}
		defer p.Close()
		network := prefix.Addr()
		if p.Contains(network) || p.Size() == 0 {
			t.Fatalf("network %s allocatable or empty pool", network)
		}
		if gw, ok := p.Gateway(); ok && (p.Contains(gw) || !prefix.Contains(gw)) {
			t.Fatalf("gateway %s allocatable or outside", gw)
		}
		if network.Is4() && p.Contains(lastAddr(prefix)) {
			t.Fatalf("broadcast allocatable")
		}
		for range 3 {
			a, err := p.Allocate()
			if errors.Is(err, ErrExhausted) {
				break
			}
			if err != nil || !p.Contains(a) || !prefix.Contains(a) {
				t.Fatalf("Allocate = %v %v", a, err)
			}
			if err := p.AllocateAddr(a); !errors.Is(err, ErrDuplicate) {
				t.Fatalf("AllocateAddr(%s) again = %v", a, err)
			}
		}
		if s := fmt.Sprint(p.Size()); s == "" {
			t.Fatal("unreachable")
		}
	})
}
