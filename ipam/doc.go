// Package ipam allocates IP addresses from a prefix, in memory (New) or
// persisted in a directory shared by several processes (Open), in the
// manner of CNI's host-local IPAM plugin. It is pure Go on net/netip and
// needs no privileges.
//
// # Pools
//
// A pool covers one IPv4 or IPv6 prefix of any size from /30 or /126 up to
// /0. The network address, the IPv4 broadcast address and the gateway (the
// first usable address unless Gateway or NoGateway says otherwise) are
// reserved, as are addresses excluded with Exclude and ExcludePrefix and,
// with Range, everything outside the range. IPv6 has no broadcast address,
// so the last address of an IPv6 prefix is allocatable, as in host-local.
//
// Allocate hands out addresses round-robin: it continues after the last
// address it handed out and wraps around at the end of the range, so a
// released address is reused only after the rest of the range has been
// tried. AllocateAddr, which takes a specific address, does not move that
// position (host-local's does; we prefer that a requested address cannot
// make a just-released neighbour come back early).
//
// Allocations may carry an owner key, for example containerID+"/"+ifname,
// which Lookup, ReleaseOwner and GC use. An owner may hold several
// addresses.
//
// All methods are safe for concurrent use. The free-space index is a 64-ary
// radix tree of bitmaps with per-node "full" summaries, so finding the next
// free address costs O(log64 of the pool size) word operations however full
// the pool is, and memory grows with the allocations, not the pool size: an
// empty /64 or /8 holds a single node.
//
// # Store
//
// A pool opened with Open lives in a directory holding two files, both mode
// 0600 in a 0700 directory:
//
//   - lock: empty; every operation holds flock on it (shared for reads,
//     exclusive for changes), which serialises processes. A mutex
//     serialises goroutines within one Pool.
//   - journal: a header recording the prefix and options, followed by an
//     append-only sequence of records, followed by preallocated zeros.
//
// The header is "PODNIPAM", a version, the canonical encoding of the
// prefix, range, gateway and merged exclusions, and a CRC-32C. A record is a
// 32-bit length, a body (a 64-bit sequence number, starting at 1 and
// increasing by one, and one or more entries: allocate, allocate-requested,
// release, or set-cursor, each with its address and, for allocations, the
// owner) and a CRC-32C of length and body. A zero length marks the end.
//
// Each change appends one record with a single pwrite and calls fdatasync
// before the method returns; that is the commit point. Writing over
// preallocated zeros keeps the fdatasync free of metadata updates. A
// process that takes the lock first compares the journal's inode with the
// one it has open (a change means another process compacted it) and reads
// the bytes after the last record it applied, so seeing other processes'
// changes costs one fstatat and one small pread when nothing changed.
//
// When the records outgrow the live allocations (at least 1 MiB and four
// times the size of a snapshot) the journal is compacted: a snapshot of the
// allocations and the round-robin position is written to journal.tmp,
// fsynced, renamed over journal and the directory fsynced.
//
// # Crashes and corruption
//
// An operation is committed once its record is completely in the journal
// with a valid checksum; every operation that returned success is
// committed. After a crash (kill -9 or power loss) at most the final write
// can be incomplete, and a write is one record of at most 64 KiB. So on
// replay, a record that fails its checksum (or an end marker followed by
// stray bytes) is a torn tail and is dropped, and zeroed by the next
// writer, if and only if every byte from 64 KiB past its start to the end of
// the file is zero. Any other damage is reported as ErrCorrupt and the
// store is left untouched: a bad header, a record with a valid checksum
// that does not decode, a wrong sequence number, a record that is
// inconsistent with the state (allocating a reserved or allocated address,
// releasing a free one), or damage followed by more data. An operation that
// failed with an I/O error may or may not have been committed; the pool
// then refuses further operations until it is reopened.
//
// Store operations make system calls and may wait for the lock held by
// another process; they take no context because the API is shared with the
// in-memory pool, whose operations never block.
package ipam
