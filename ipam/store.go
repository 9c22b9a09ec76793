//go:build unix

package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Files in a store directory.
const (
	lockName    = "lock"        // flock target; never replaced
	journalName = "journal"     // header and records; replaced by compaction
	tmpName     = "journal.tmp" // a journal being written; renamed over journal
	dirPerm     = 0o700         // directories Open creates
	filePerm    = 0o600         // files Open creates
	readAhead   = 4 << 10       // bytes read per catch-up in the common case
	growChunk   = 256 << 10     // the journal grows by preallocated zeros
	compactBulk = 4             // journals under compactBulk x the live data are not compacted
)

// compactMin is the size below which journals are not compacted; a
// variable so that tests can exercise compaction quickly.
var compactMin = 1 << 20

// store is the on-disk side of a pool opened with Open. All methods are
// called with the pool's mutex held; begin/end bracket the file lock.
type store struct {
	dir      string
	dirfd    int
	lockfd   int
	fd       int // journal, or -1
	dev, ino uint64
	hdrLen   int
	tail     int    // offset just past the last applied record
	size     int    // journal file size, including preallocated zeros
	seq      uint64 // sequence number of the last applied record
	write    bool   // the lock is held exclusively
	broken   error  // once set, the pool must be reopened
	nextComp int    // do not try to compact before end reaches this
	buf      []byte
}

// Open returns a pool persisted in the directory dir, creating the
// directory (mode 0700) and the store files in it (mode 0600) if needed.
//
// Any number of processes may open the same directory at once: every
// operation takes an flock on dir/lock, first replays what other processes
// appended to the journal, and returns only after its own change is on
// stable storage (fdatasync). See the package documentation for the file
// format and what survives a crash.
//
// The store records the prefix and options; opening it with a different
// prefix or different options fails with ErrInvalid. A damaged journal
// fails with ErrCorrupt and is never repaired silently. Neither dir nor any
// of its components may be a symbolic link (ErrInvalid); resolve links with
// filepath.EvalSymlinks first if you trust them.
//
// Unlike an in-memory pool, the methods of a store pool make system calls
// and wait for other processes holding the lock.
func Open(dir string, prefix netip.Prefix, opts ...Option) (*Pool, error) {
	l, err := newLayout(prefix, opts)
	if err != nil {
		return nil, &Error{Op: "open", Err: err}
	}
	p := &Pool{lay: l}
	s, err := openStore(dir, p)
	if err != nil {
		return nil, &Error{Op: "open", Err: fmt.Errorf("%s: %w", dir, err)}
	}
	p.store = s
	return p, nil
}

func openStore(dir string, p *Pool) (*store, error) {
	dirfd, err := openDir(dir)
	if err != nil {
		return nil, err
	}
	s := &store{dir: dir, dirfd: dirfd, lockfd: -1, fd: -1}
	if err := s.init(p); err != nil {
		_ = s.close()
		return nil, err
	}
	return s, nil
}

func (s *store) init(p *Pool) error {
	var err error
	if s.lockfd, err = s.openFile(lockName, true); err != nil {
		return err
	}
	if err := flock(s.lockfd, unix.LOCK_EX); err != nil {
		return err
	}
	s.write = true
	defer s.end()
	return s.load(p, true)
}

// openDir opens dir without following symbolic links, creating missing
// components with mode 0700.
func openDir(dir string) (int, error) {
	if dir == "" {
		return -1, fmt.Errorf("%w: empty store path", ErrInvalid)
	}
	clean := filepath.Clean(dir)
	root := "."
	if filepath.IsAbs(clean) {
		root, clean = "/", strings.TrimPrefix(clean, "/")
	}
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", root, err)
	}
	if clean == "" || clean == "." {
		return fd, nil
	}
	walked := root
	for comp := range strings.SplitSeq(clean, "/") {
		walked = filepath.Join(walked, comp)
		next, err := openatDir(fd, comp)
		if errors.Is(err, unix.ENOENT) {
			if err = unix.Mkdirat(fd, comp, dirPerm); err == nil {
				// The new entry must survive a crash like the files in it.
				_ = unix.Fsync(fd)
			}
			if err == nil || errors.Is(err, unix.EEXIST) {
				next, err = openatDir(fd, comp)
			}
			if err == nil {
				err = unix.Fchmod(next, dirPerm) // umask-proof
			}
		}
		unix.Close(fd)
		if err != nil {
			if next >= 0 {
				unix.Close(next)
			}
			return -1, fmt.Errorf("%s: %w", walked, err)
		}
		fd = next
	}
	return fd, nil
}

func openatDir(dirfd int, name string) (int, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == nil {
		return fd, nil
	}
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		var st unix.Stat_t
		if unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return -1, fmt.Errorf("%w: symbolic link in store path", ErrInvalid)
		}
	}
	return -1, err
}

// openFile opens a regular file in the store directory without following
// symbolic links, creating it with mode 0600 if create is set.
func (s *store) openFile(name string, create bool) (int, error) {
	const flags = unix.O_RDWR | unix.O_NOFOLLOW | unix.O_CLOEXEC
	var fd int
	var err error
	created := false
	if create {
		fd, err = unix.Openat(s.dirfd, name, flags|unix.O_CREAT|unix.O_EXCL, filePerm)
		created = err == nil
		if errors.Is(err, unix.EEXIST) {
			fd, err = unix.Openat(s.dirfd, name, flags, 0)
		}
	} else {
		fd, err = unix.Openat(s.dirfd, name, flags, 0)
	}
	if errors.Is(err, unix.ELOOP) {
		return -1, fmt.Errorf("%s: %w: symbolic link in store path", name, ErrInvalid)
	}
	if err != nil {
		return -1, fmt.Errorf("%s: %w", name, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("%s: %w", name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return -1, fmt.Errorf("%s: %w: not a regular file", name, ErrInvalid)
	}
	if created {
		if err := unix.Fchmod(fd, filePerm); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("%s: %w", name, err)
		}
		_ = unix.Fsync(s.dirfd)
	}
	return fd, nil
}

func flock(fd, how int) error {
	for {
		err := unix.Flock(fd, how)
		if err != unix.EINTR {
			if err != nil {
				return fmt.Errorf("flock: %w", err)
			}
			return nil
		}
	}
}

// begin takes the file lock and catches up with the journal.
func (s *store) begin(p *Pool, write bool) error {
	if s.broken != nil {
		return s.broken
	}
	how := unix.LOCK_SH
	if write {
		how = unix.LOCK_EX
	}
	if err := flock(s.lockfd, how); err != nil {
		return err
	}
	s.write = write
	err := s.catchUp(p)
	if err == nil && write {
		err = s.maybeCompact(p)
	}
	if err != nil {
		s.end()
		return err
	}
	return nil
}

// end releases the file lock.
func (s *store) end() {
	_ = flock(s.lockfd, unix.LOCK_UN)
	s.write = false
}

// catchUp applies records that other processes appended since we last
// looked. The common case costs one fstatat and one small pread.
func (s *store) catchUp(p *Pool) error {
	var st unix.Stat_t
	if err := unix.Fstatat(s.dirfd, journalName, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("%w: %s vanished", ErrCorrupt, journalName)
		}
		return fmt.Errorf("%s: %w", journalName, err)
	}
	if uint64(st.Dev) != s.dev || uint64(st.Ino) != s.ino {
		return s.load(p, false) // compacted (replaced) by another process
	}
	s.size = int(st.Size)
	if s.size < s.tail {
		return s.damaged(fmt.Errorf("%w: %s shrank to %d bytes", ErrCorrupt, journalName, s.size))
	}
	n := min(readAhead, s.size-s.tail)
	if n == 0 {
		return nil
	}
	s.buf = grow(s.buf, n)
	if err := preadFull(s.fd, s.buf[:n], s.tail); err != nil {
		return err
	}
	r, err := scanRecords(s.buf[:n], s.tail, s.tail+n == s.size, s.seq, p.lay, p.st)
	if err == nil && r.more {
		s.tail, s.seq = r.end, r.seq
		rest := make([]byte, s.size-s.tail)
		if err := preadFull(s.fd, rest, s.tail); err != nil {
			return err
		}
		r, err = scanRecords(rest, s.tail, true, s.seq, p.lay, p.st)
	}
	if err != nil {
		// Records before the damage were applied: the in-memory state is
		// ahead of anything we could report, so stop here for good.
		return s.damaged(err)
	}
	s.tail, s.seq = r.end, r.seq
	return s.dropTorn(r.torn)
}

// load (re)opens the journal and replays it from the start into a fresh
// state. It is used by Open, which passes create to start a new journal in a
// directory that has none, and after another process compacted the
// journal, when a missing journal means someone removed it.
func (s *store) load(p *Pool, create bool) error {
	fd, err := s.openFile(journalName, false)
	if errors.Is(err, unix.ENOENT) {
		if !create || !s.write {
			return fmt.Errorf("%w: %s vanished", ErrCorrupt, journalName)
		}
		if err = s.writeJournal(p.lay, nil); err == nil {
			fd, err = s.openFile(journalName, false)
		}
	}
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return err
	}
	data := make([]byte, st.Size)
	if err := preadFull(fd, data, 0); err != nil {
		unix.Close(fd)
		return err
	}
	ns := newState(p.lay)
	hdrLen, r, err := replayJournal(data, p.lay, ns)
	if err != nil {
		unix.Close(fd)
		return fmt.Errorf("%s: %w", journalName, err)
	}
	if s.fd >= 0 {
		unix.Close(s.fd)
	}
	s.fd, s.dev, s.ino = fd, uint64(st.Dev), uint64(st.Ino)
	s.hdrLen, s.tail, s.size, s.seq = hdrLen, r.end, len(data), r.seq
	s.nextComp = 0
	p.st = ns
	return s.dropTorn(r.torn)
}

// dropTorn zeroes the torn tail of a write that never completed, so that
// the next record written there cannot be followed by its leftovers. Only a
// writer may do this; readers leave it for the next writer.
func (s *store) dropTorn(n int) error {
	if n <= 0 || !s.write {
		return nil
	}
	if err := pwriteFull(s.fd, make([]byte, n), s.tail); err != nil {
		return s.damaged(err)
	}
	if err := datasync(s.fd); err != nil {
		return s.damaged(err)
	}
	return nil
}

// damaged marks the store unusable until it is reopened.
func (s *store) damaged(err error) error {
	s.broken = err
	return err
}

// append writes one record per batch and makes each durable before
// returning. If a record may have been partially written, the pool is
// marked broken: the operation may or may not have taken effect, and the
// pool must be reopened to find out.
func (s *store) append(p *Pool, es []entry) error {
	for _, batch := range splitRecords(p.lay, es) {
		rec := appendRecord(s.buf[:0], s.seq+1, p.lay, batch)
		s.buf = rec[:0]
		if need := s.tail + len(rec) + maxRecord; need > s.size {
			if err := s.grow(need); err != nil {
				return err
			}
		}
		if err := pwriteFull(s.fd, rec, s.tail); err != nil {
			return s.damaged(err)
		}
		if err := datasync(s.fd); err != nil {
			return s.damaged(err)
		}
		s.tail += len(rec)
		s.seq++
	}
	return nil
}

// grow extends the journal with zeros to at least n bytes. Overwriting
// preallocated zeros later needs no metadata update, which makes each
// record's fdatasync cheaper. Extra zeros are harmless if we crash.
func (s *store) grow(n int) error {
	size := (n + growChunk - 1) / growChunk * growChunk
	if err := pwriteFull(s.fd, make([]byte, size-s.size), s.size); err != nil {
		return err
	}
	if err := unix.Fsync(s.fd); err != nil {
		return s.damaged(err)
	}
	s.size = size
	return nil
}

// maybeCompact rewrites the journal as a snapshot of the live allocations
// once the records greatly outweigh them.
func (s *store) maybeCompact(p *Pool) error {
	logged := s.tail - s.hdrLen
	if logged < compactMin || s.tail < s.nextComp {
		return nil
	}
	alen := 16
	if p.lay.is4 {
		alen = 4
	}
	live := int(p.st.used)*(1+alen+2) + len(p.st.owners)*40
	if logged < compactBulk*live {
		return nil
	}
	if err := s.writeJournal(p.lay, p.st.snapshot()); err != nil {
		if s.broken != nil {
			return err
		}
		// Compaction is an optimisation; keep using the old journal and
		// try again later.
		s.nextComp = s.tail + compactMin
		return nil
	}
	return s.load(p, false)
}

// writeJournal writes a new journal holding entries to tmpName and renames
// it over journalName. Until the rename the old journal stays authoritative;
// after it, the new one is, so failing to sync the directory breaks the
// store.
func (s *store) writeJournal(l *layout, entries []entry) error {
	if err := unix.Unlinkat(s.dirfd, tmpName, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("%s: %w", tmpName, err)
	}
	b := encodeHeader(l.encode())
	var seq uint64
	for _, batch := range splitRecords(l, entries) {
		seq++
		b = appendRecord(b, seq, l, batch)
	}
	size := (len(b) + maxRecord + growChunk - 1) / growChunk * growChunk
	b = append(b, make([]byte, size-len(b))...)

	fd, err := unix.Openat(s.dirfd, tmpName, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, filePerm)
	if err != nil {
		return fmt.Errorf("%s: %w", tmpName, err)
	}
	err = unix.Fchmod(fd, filePerm)
	if err == nil {
		err = pwriteFull(fd, b, 0)
	}
	if err == nil {
		err = unix.Fsync(fd)
	}
	unix.Close(fd)
	if err == nil {
		err = unix.Renameat(s.dirfd, tmpName, s.dirfd, journalName)
	}
	if err != nil {
		_ = unix.Unlinkat(s.dirfd, tmpName, 0)
		return fmt.Errorf("%s: %w", tmpName, err)
	}
	if err := unix.Fsync(s.dirfd); err != nil {
		return s.damaged(fmt.Errorf("sync %s: %w", s.dir, err))
	}
	return nil
}

func (s *store) close() error {
	var errs []error
	for _, fd := range []int{s.fd, s.lockfd, s.dirfd} {
		if fd >= 0 {
			if err := unix.Close(fd); err != nil {
				errs = append(errs, err)
			}
		}
	}
	s.fd, s.lockfd, s.dirfd = -1, -1, -1
	return errors.Join(errs...)
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

func preadFull(fd int, b []byte, off int) error {
	for len(b) > 0 {
		n, err := unix.Pread(fd, b, int64(off))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", journalName, err)
		}
		if n == 0 {
			return fmt.Errorf("%w: %s: unexpected end of file", ErrCorrupt, journalName)
		}
		b, off = b[n:], off+n
	}
	return nil
}

func pwriteFull(fd int, b []byte, off int) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, int64(off))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", journalName, err)
		}
		b, off = b[n:], off+n
	}
	return nil
}
