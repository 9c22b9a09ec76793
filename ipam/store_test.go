//go:build unix

package ipam

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func openPool(t *testing.T, dir, prefix string, opts ...Option) *Pool {
	t.Helper()
	p, err := Open(dir, mustPrefix(prefix), opts...)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

func TestStorePersists(t *testing.T) {
	for _, tt := range []struct{ prefix, base string }{{"10.0.0.0/24", "10.0.0."}, {"fd00::/64", "fd00::"}} {
		prefix := tt.prefix
		t.Run(prefix, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "net")
			opts := []Option{Exclude(mustAddr(tt.base + "5")), Gateway(mustAddr(tt.base + "9"))}
			p := openPool(t, dir, prefix, opts...)
			for i := range 6 {
				_, err := p.AllocateFor(fmt.Sprintf("c%d", i%2))
				require.NoError(t, err)
			}
			anon, err := p.Allocate()
			require.NoError(t, err)
			specific := mustAddr(tt.base + "20")
			require.NoError(t, p.AllocateAddrFor("c9", specific))
			_, err = p.ReleaseOwner("c1")
			require.NoError(t, err)
			want := slices.Collect(p.All())
			next, err := p.Allocate()
			require.NoError(t, err)
			require.NoError(t, p.Release(next))
			require.NoError(t, p.Close())

			q := openPool(t, dir, prefix, opts...)
			assert.Equal(t, want, slices.Collect(q.All()))
			assert.Equal(t, len(want), q.Used())
			assert.Equal(t, q.Size()-uint64(len(want)), q.Free())
			owner, ok := q.Owner(specific)
			assert.True(t, ok)
			assert.Equal(t, "c9", owner)
			assert.True(t, q.Allocated(anon))
			assert.Nil(t, q.Lookup("c1"))
			// The round-robin position survives too: next was released, so
			// the pool moves on past it.
			a, err := q.Allocate()
			require.NoError(t, err)
			assert.Equal(t, next.Next(), a)
		})
	}
}

// TestAllocateAddrAdvance: with Advance, a requested address moves the
// round-robin position, in memory and across a reopen; without it, not.
func TestAllocateAddrAdvance(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "net")
	p := openPool(t, dir, "10.0.0.0/24")
	a, err := p.Allocate()
	require.NoError(t, err)
	require.Equal(t, mustAddr("10.0.0.2"), a)
	require.NoError(t, p.AllocateAddrFor("quiet", mustAddr("10.0.0.100")))
	a, err = p.Allocate()
	require.NoError(t, err)
	assert.Equal(t, mustAddr("10.0.0.3"), a, "without Advance the position stays")
	require.NoError(t, p.AllocateAddrFor("moves", mustAddr("10.0.0.50"), Advance()))
	a, err = p.Allocate()
	require.NoError(t, err)
	assert.Equal(t, mustAddr("10.0.0.51"), a, "with Advance the position moves")
	require.NoError(t, p.Release(a))
	require.NoError(t, p.AllocateAddr(mustAddr("10.0.0.200"), Advance()))
	require.ErrorIs(t, p.AllocateAddr(mustAddr("10.0.0.200"), Advance()), ErrDuplicate)
	require.NoError(t, p.Close())

	q := openPool(t, dir, "10.0.0.0/24")
	a, err = q.Allocate()
	require.NoError(t, err)
	assert.Equal(t, mustAddr("10.0.0.201"), a, "the position survives a reopen")
	owner, ok := q.Owner(mustAddr("10.0.0.50"))
	assert.True(t, ok)
	assert.Equal(t, "moves", owner)
}

func TestStorePermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	openPool(t, dir, "10.0.0.0/24")
	for _, d := range []string{filepath.Dir(dir), dir} {
		st, err := os.Stat(d)
		require.NoError(t, err)
		assert.Equal(t, fs.ModeDir|0o700, st.Mode(), d)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
		info, err := e.Info()
		require.NoError(t, err)
		assert.Equal(t, fs.FileMode(0o600), info.Mode(), e.Name())
	}
	assert.Equal(t, []string{"journal", "lock"}, names)
}

func TestStoreSymlinks(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	require.NoError(t, os.Mkdir(real, 0o700))
	require.NoError(t, os.Symlink(real, filepath.Join(base, "link")))

	// A fully set-up store whose files we can point links at.
	good := filepath.Join(base, "good")
	openPool(t, good, "10.0.0.0/24").Close()

	tests := []struct {
		name  string
		setup func(t *testing.T) string
	}{
		{"dir is a link", func(t *testing.T) string { return filepath.Join(base, "link") }},
		{"parent is a link", func(t *testing.T) string { return filepath.Join(base, "link", "sub") }},
		{"journal is a link", func(t *testing.T) string {
			d := filepath.Join(base, "j")
			require.NoError(t, os.Mkdir(d, 0o700))
			require.NoError(t, os.Symlink(filepath.Join(good, "journal"), filepath.Join(d, "journal")))
			return d
		}},
		{"lock is a link", func(t *testing.T) string {
			d := filepath.Join(base, "l")
			require.NoError(t, os.Mkdir(d, 0o700))
			require.NoError(t, os.Symlink(filepath.Join(good, "lock"), filepath.Join(d, "lock")))
			return d
		}},
		{"dangling lock link", func(t *testing.T) string {
			d := filepath.Join(base, "dl")
			require.NoError(t, os.Mkdir(d, 0o700))
			require.NoError(t, os.Symlink(filepath.Join(base, "nowhere"), filepath.Join(d, "lock")))
			return d
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.setup(t)
			p, err := Open(dir, mustPrefix("10.0.0.0/24"))
			assert.Nil(t, p)
			require.ErrorIs(t, err, ErrInvalid)
			assert.Contains(t, err.Error(), "symbolic link")
			assertMessage(t, err)
		})
	}
	_, err := os.Lstat(filepath.Join(base, "nowhere"))
	assert.ErrorIs(t, err, fs.ErrNotExist, "nothing was created through the link")

	p, err := Open("", mustPrefix("10.0.0.0/24"))
	assert.Nil(t, p)
	assert.ErrorIs(t, err, ErrInvalid)
	file := filepath.Join(base, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	_, err = Open(file, mustPrefix("10.0.0.0/24"))
	assert.Error(t, err)
}

func TestStoreMismatch(t *testing.T) {
	dir := t.TempDir()
	openPool(t, dir, "10.0.0.0/24", Exclude(mustAddr("10.0.0.7"))).Close()
	tests := []struct {
		prefix string
		opts   []Option
		msg    string
	}{
		{"10.0.1.0/24", []Option{Exclude(mustAddr("10.0.1.7"))}, "store holds pool 10.0.0.0/24, not 10.0.1.0/24"},
		{"10.0.0.0/23", nil, "not 10.0.0.0/23"},
		{"fd00::/64", nil, "not fd00::/64"},
		{"10.0.0.0/24", nil, "other options"},
		{"10.0.0.0/24", []Option{Exclude(mustAddr("10.0.0.7")), NoGateway()}, "other options"},
		{"10.0.0.0/24", []Option{Exclude(mustAddr("10.0.0.7")), Range(mustAddr("10.0.0.2"), mustAddr("10.0.0.100"))}, "other options"},
	}
	for _, tt := range tests {
		p, err := Open(dir, mustPrefix(tt.prefix), tt.opts...)
		assert.Nil(t, p)
		require.ErrorIs(t, err, ErrInvalid)
		assert.Contains(t, err.Error(), tt.msg)
		assertMessage(t, err)
	}
	// Equivalent options in another order are the same pool.
	openPool(t, dir, "10.0.0.0/24", Exclude(mustAddr("10.0.0.7"), mustAddr("10.0.0.7")), Gateway(mustAddr("10.0.0.1")))
}

// journalFixture builds a store with a few records and returns its
// directory, the journal bytes and the offsets of its records.
func journalFixture(t *testing.T) (dir string, data []byte, recs []int) {
	t.Helper()
	dir = t.TempDir()
	p := openPool(t, dir, "10.0.0.0/24")
	for i := range 5 {
		_, err := p.AllocateFor(fmt.Sprintf("c%d", i))
		require.NoError(t, err)
	}
	require.NoError(t, p.Release(mustAddr("10.0.0.3")))
	_, err := p.AllocateFor("c5")
	require.NoError(t, err)
	require.NoError(t, p.Close())
	data, err = os.ReadFile(filepath.Join(dir, journalName))
	require.NoError(t, err)
	_, off, err := decodeHeader(data)
	require.NoError(t, err)
	for {
		n := int(binary.BigEndian.Uint32(data[off:]))
		if n == 0 {
			break
		}
		recs = append(recs, off)
		off += 4 + n + 4
	}
	require.Len(t, recs, 7)
	recs = append(recs, off) // end
	return dir, data, recs
}

// sealRecord recomputes the checksum of the record at off.
func sealRecord(b []byte, off int) {
	n := int(binary.BigEndian.Uint32(b[off:]))
	binary.BigEndian.PutUint32(b[off+4+n:], crc32.Checksum(b[off:off+4+n], castagnoli()))
}

func TestStoreCorrupt(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(b []byte, recs []int) []byte
		msg    string
	}{
		{"empty file", func(b []byte, _ []int) []byte { return b[:0] }, "header truncated"},
		{"truncated header", func(b []byte, _ []int) []byte { return b[:12] }, "header truncated"},
		{"bad magic", func(b []byte, _ []int) []byte { b[0] = 'X'; return b }, "bad magic"},
		{"bad version", func(b []byte, _ []int) []byte { b[9] = 9; return b }, "version"},
		{"header checksum", func(b []byte, _ []int) []byte { b[headerFixed+3] ^= 1; return b }, "header checksum"},
		{"header length", func(b []byte, _ []int) []byte {
			binary.BigEndian.PutUint32(b[12:], 1<<30)
			return b
		}, "out of bounds"},
		{"flipped bit in a middle record", func(b []byte, recs []int) []byte {
			b[recs[3]+9] ^= 0x10
			return b
		}, "followed by more data"},
		{"flipped length of a middle record", func(b []byte, recs []int) []byte {
			b[recs[2]+3] ^= 0x04
			return b
		}, "followed by more data"},
		{"zeroed middle record", func(b []byte, recs []int) []byte {
			clear(b[recs[4]:recs[5]])
			return b
		}, "followed by more data"},
		{"garbage far past the end", func(b []byte, recs []int) []byte {
			b[recs[7]+maxRecord+100] = 1
			return b
		}, "followed by more data"},
		{"wrong sequence", func(b []byte, recs []int) []byte {
			binary.BigEndian.PutUint64(b[recs[2]+4:], 7)
			sealRecord(b, recs[2])
			return b
		}, "sequence 7, want 3"},
		{"unknown entry kind", func(b []byte, recs []int) []byte {
			b[recs[1]+12] = 99
			sealRecord(b, recs[1])
			return b
		}, "unknown entry kind"},
		{"address outside prefix", func(b []byte, recs []int) []byte {
			b[recs[1]+13+2] = 7 // 10.0.7.x
			sealRecord(b, recs[1])
			return b
		}, "out of range"},
		{"allocates a reserved address", func(b []byte, recs []int) []byte {
			b[recs[1]+13+3] = 1 // the gateway
			sealRecord(b, recs[1])
			return b
		}, "address reserved"},
		{"allocates twice", func(b []byte, recs []int) []byte {
			b[recs[1]+13+3] = 2 // record 1 allocated .2 already
			sealRecord(b, recs[1])
			return b
		}, "address already allocated"},
		{"releases a free address", func(b []byte, recs []int) []byte {
			b[recs[5]+13+3] = 200
			sealRecord(b, recs[5])
			return b
		}, "address not allocated"},
		{"owner length overruns", func(b []byte, recs []int) []byte {
			b[recs[0]+18] = 200
			sealRecord(b, recs[0])
			return b
		}, "truncated owner"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, data, recs := journalFixture(t)
			bad := tt.mutate(slices.Clone(data), recs)
			path := filepath.Join(dir, journalName)
			require.NoError(t, os.WriteFile(path, bad, 0o600))
			p, err := Open(dir, mustPrefix("10.0.0.0/24"))
			assert.Nil(t, p)
			require.ErrorIs(t, err, ErrCorrupt)
			assert.Contains(t, err.Error(), tt.msg)
			assertMessage(t, err)
			after, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.Equal(t, bad, after, "a corrupt store is never repaired")
		})
	}
}

func TestStoreTornTail(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(b []byte, recs []int)
	}{
		{"tail of last record missing", func(b []byte, recs []int) {
			clear(b[recs[7]-3 : recs[7]])
		}},
		{"only the length written", func(b []byte, recs []int) {
			clear(b[recs[6]+4 : recs[7]])
		}},
		{"first sector missing", func(b []byte, recs []int) {
			clear(b[recs[6] : recs[6]+4])
		}},
		{"stray bytes after the end marker", func(b []byte, recs []int) {
			clear(b[recs[6]:recs[7]])
			b[recs[6]+900] = 0xaa
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, data, recs := journalFixture(t)
			tt.mutate(data, recs)
			path := filepath.Join(dir, journalName)
			require.NoError(t, os.WriteFile(path, data, 0o600))

			p := openPool(t, dir, "10.0.0.0/24")
			// The last record (AllocateFor("c5")) is gone, the rest is there.
			assert.Nil(t, p.Lookup("c5"))
			assert.Equal(t, 4, p.Used())
			for _, c := range []string{"c0", "c2", "c3", "c4"} {
				assert.Len(t, p.Lookup(c), 1, c)
			}
			after, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.True(t, isZero(after[recs[6]:]), "the torn tail is zeroed")

			// Appending over the dropped tail yields a clean journal.
			a, err := p.AllocateFor("c6")
			require.NoError(t, err)
			require.NoError(t, p.Close())
			q := openPool(t, dir, "10.0.0.0/24")
			assert.Equal(t, []netip.Addr{a}, q.Lookup("c6"))
			assert.Equal(t, 5, q.Used())
		})
	}
}

func TestStoreSharedBetweenPools(t *testing.T) {
	dir := t.TempDir()
	p := openPool(t, dir, "fd00::/120")
	q := openPool(t, dir, "fd00::/120")
	seen := map[netip.Addr]bool{}
	for i := range 40 {
		pool := p
		if i%3 == 0 {
			pool = q
		}
		a, err := pool.AllocateFor(fmt.Sprintf("c%d", i))
		require.NoError(t, err)
		require.False(t, seen[a], "%s handed out twice", a)
		seen[a] = true
	}
	assert.Equal(t, 40, p.Used())
	assert.Equal(t, 40, q.Used())
	assert.Equal(t, slices.Collect(p.All()), slices.Collect(q.All()))
	owner, ok := q.Owner(p.Lookup("c1")[0])
	assert.True(t, ok)
	assert.Equal(t, "c1", owner)

	// Round-robin position is shared as well.
	a, err := p.Allocate()
	require.NoError(t, err)
	b, err := q.Allocate()
	require.NoError(t, err)
	assert.Equal(t, a.Next(), b)

	// Releases are seen by the other pool.
	got, err := q.ReleaseOwner("c1")
	require.NoError(t, err)
	assert.False(t, p.Allocated(got[0]))
	assert.ErrorIs(t, p.Release(got[0]), ErrNotAllocated)
	require.NoError(t, p.Refresh())

	gc, err := p.GC(func(o string) bool { return o != "c2" })
	require.NoError(t, err)
	assert.Len(t, gc, 1)
	assert.Nil(t, q.Lookup("c2"))
}

func TestStoreCompaction(t *testing.T) {
	old := compactMin
	compactMin = 2 << 10
	t.Cleanup(func() { compactMin = old })

	dir := t.TempDir()
	p := openPool(t, dir, "10.0.0.0/24")
	q := openPool(t, dir, "10.0.0.0/24")
	ino := func() uint64 {
		st, err := os.Stat(filepath.Join(dir, journalName))
		require.NoError(t, err)
		return st.Sys().(*syscall.Stat_t).Ino
	}
	first := ino()
	var held []netip.Addr
	for i := range 400 {
		a, err := p.AllocateFor(fmt.Sprintf("c%d", i))
		require.NoError(t, err)
		held = append(held, a)
		if len(held) > 10 {
			require.NoError(t, p.Release(held[0]))
			held = held[1:]
		}
	}
	assert.NotEqual(t, first, ino(), "journal was compacted")
	st, err := os.Stat(filepath.Join(dir, journalName))
	require.NoError(t, err)
	assert.Less(t, st.Size(), int64(2*growChunk))
	assert.Equal(t, fs.FileMode(0o600), st.Mode())
	_, err = os.Stat(filepath.Join(dir, tmpName))
	assert.ErrorIs(t, err, fs.ErrNotExist)

	// The other pool notices the new journal; a reopen agrees; the
	// round-robin position survives compaction.
	want := slices.Collect(p.All())
	assert.Len(t, want, 10)
	assert.Equal(t, want, slices.Collect(q.All()))
	next, err := q.Allocate()
	require.NoError(t, err)
	assert.Equal(t, held[len(held)-1].Next(), next)
	require.NoError(t, q.Release(next))
	r := openPool(t, dir, "10.0.0.0/24")
	assert.Equal(t, want, slices.Collect(r.All()))
	for _, a := range held {
		owner, ok := r.Owner(a)
		assert.True(t, ok)
		assert.NotEmpty(t, owner)
	}
}

func TestStoreLargeRelease(t *testing.T) {
	// ReleaseOwner and GC of more entries than fit one record.
	dir := t.TempDir()
	p := openPool(t, dir, "10.0.0.0/16")
	p.mu.Lock()
	require.NoError(t, p.beginLocked(true))
	es := make([]entry, 0, 12000)
	for i := range 12000 {
		off, ok := p.st.nextFree(p.lay)
		require.True(t, ok)
		owner := "big"
		if i%2 == 1 {
			owner = "other"
		}
		p.st.alloc(off, owner, true)
		es = append(es, entry{kind: entryAlloc, off: off, owner: owner})
	}
	require.NoError(t, p.store.append(p, es))
	p.endLocked()
	p.mu.Unlock()

	got, err := p.ReleaseOwner("big")
	require.NoError(t, err)
	assert.Len(t, got, 6000)
	gc, err := p.GC(func(string) bool { return false })
	require.NoError(t, err)
	assert.Len(t, gc, 6000)
	require.NoError(t, p.Close())
	q := openPool(t, dir, "10.0.0.0/16")
	assert.Zero(t, q.Used())
}

func TestStoreCatchUpAcrossReadAhead(t *testing.T) {
	dir := t.TempDir()
	p := openPool(t, dir, "10.0.0.0/16")
	q := openPool(t, dir, "10.0.0.0/16")
	require.Zero(t, p.Used())
	// Far more than readAhead bytes of records that p has not seen, with
	// long owners so that a record straddles the read-ahead boundary.
	long := string(make([]byte, 300))
	for i := range 40 {
		_, err := q.AllocateFor(fmt.Sprintf("%s%d", long, i))
		require.NoError(t, err)
	}
	require.Greater(t, q.store.tail-p.store.tail, readAhead)
	assert.Equal(t, 40, p.Used())
	assert.Equal(t, slices.Collect(q.All()), slices.Collect(p.All()))
	a, err := p.Allocate()
	require.NoError(t, err)
	assert.Equal(t, mustAddr("10.0.0.42"), a)
}

func TestStoreCorruptionSeenByRunningPool(t *testing.T) {
	dir := t.TempDir()
	p := openPool(t, dir, "10.0.0.0/24")
	a, err := p.Allocate()
	require.NoError(t, err)

	// Someone appends a well-formed record that releases a free address.
	f, err := os.OpenFile(filepath.Join(dir, journalName), os.O_WRONLY, 0)
	require.NoError(t, err)
	rec := appendRecord(nil, p.store.seq+1, p.lay, []entry{{kind: entryRelease, off: u128{0, 77}}})
	_, err = f.WriteAt(rec, int64(p.store.tail))
	require.NoError(t, err)
	require.NoError(t, f.Close())

	err = p.Refresh()
	require.ErrorIs(t, err, ErrCorrupt)
	assertMessage(t, err)
	// The pool stays unusable; it does not guess.
	_, err = p.Allocate()
	assert.ErrorIs(t, err, ErrCorrupt)
	assert.ErrorIs(t, p.Release(a), ErrCorrupt)
	require.NoError(t, p.Close())
	_, err = Open(dir, mustPrefix("10.0.0.0/24"))
	assert.ErrorIs(t, err, ErrCorrupt)
}

func TestStoreJournalRemoved(t *testing.T) {
	dir := t.TempDir()
	p := openPool(t, dir, "10.0.0.0/24")
	_, err := p.Allocate()
	require.NoError(t, err)
	require.NoError(t, os.Remove(filepath.Join(dir, journalName)))
	_, err = p.Allocate()
	assert.ErrorIs(t, err, ErrCorrupt)
	assert.Contains(t, err.Error(), "vanished")
	_, err = os.Stat(filepath.Join(dir, journalName))
	assert.ErrorIs(t, err, fs.ErrNotExist, "a running pool does not recreate a removed journal")
}
