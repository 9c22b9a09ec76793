package ipam

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net/netip"
	"sync"
)

// The journal file starts with a header and continues with records, then
// zeros up to the end of the (preallocated) file:
//
//	header: "PODNIPAM" | u16 version | u16 zero | u32 n | layout[n] | u32 crc
//	record: u32 n | body[n] | u32 crc
//	body:   u64 seq | entry...
//	entry:  u8 kind | addr[4 or 16] | (alloc kinds only) u16 m | owner[m]
//
// Integers are big-endian; crc is CRC-32C over everything before it in the
// header or record. Record sequence numbers start at 1 and increase by one.
// A record whose length field is zero marks the end of the journal.

const (
	journalMagic   = "PODNIPAM"
	journalVersion = 1
	headerFixed    = 8 + 2 + 2 + 4 // bytes before the layout
	// maxRecord bounds the size of one record including framing. Every
	// write to the journal is one record, so after a crash the damage is
	// confined to the maxRecord bytes at the end of the valid records.
	maxRecord = 64 << 10
	// maxLayout bounds the encoded layout in the header.
	maxLayout = 16 << 20
)

// castagnoli is the CRC table of the journal, made on first use rather
// than at init: a program that links ipam but does not use a store (a CNI
// plugin answering VERSION) does not pay for it at every start.
var castagnoli = sync.OnceValue(func() *crc32.Table { return crc32.MakeTable(crc32.Castagnoli) })

type entryKind uint8

const (
	entryAlloc     entryKind = 1 // dynamic allocation; moves the cursor
	entryAllocAddr entryKind = 2 // allocation of a requested address
	entryRelease   entryKind = 3
	entryCursor    entryKind = 4 // sets the round-robin cursor (snapshots)
)

type entry struct {
	kind  entryKind
	off   u128
	owner string
}

func encodeHeader(layout []byte) []byte {
	b := make([]byte, 0, headerFixed+len(layout)+4)
	b = append(b, journalMagic...)
	b = binary.BigEndian.AppendUint16(b, journalVersion)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(len(layout)))
	b = append(b, layout...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli()))
}

// decodeHeader returns the encoded layout and the header's length. The
// header is written once, before the journal is renamed into place, so any
// damage to it is corruption.
func decodeHeader(b []byte) (layout []byte, n int, err error) {
	if len(b) < headerFixed+4 {
		return nil, 0, fmt.Errorf("%w: journal header truncated (%d bytes)", ErrCorrupt, len(b))
	}
	if string(b[:8]) != journalMagic {
		return nil, 0, fmt.Errorf("%w: not a podnet ipam journal (bad magic)", ErrCorrupt)
	}
	if v := binary.BigEndian.Uint16(b[8:]); v != journalVersion {
		return nil, 0, fmt.Errorf("%w: unsupported journal version %d", ErrCorrupt, v)
	}
	ln := binary.BigEndian.Uint32(b[12:])
	if ln > maxLayout || int(ln) > len(b)-headerFixed-4 {
		return nil, 0, fmt.Errorf("%w: journal header length %d out of bounds", ErrCorrupt, ln)
	}
	n = headerFixed + int(ln) + 4
	if crc32.Checksum(b[:n-4], castagnoli()) != binary.BigEndian.Uint32(b[n-4:]) {
		return nil, 0, fmt.Errorf("%w: journal header checksum mismatch", ErrCorrupt)
	}
	return b[headerFixed : n-4], n, nil
}

// appendRecord appends one record holding entries to b.
func appendRecord(b []byte, seq uint64, l *layout, entries []entry) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0)
	b = binary.BigEndian.AppendUint64(b, seq)
	for _, e := range entries {
		b = append(b, byte(e.kind))
		b = l.appendOff(b, e.off)
		if e.kind == entryAlloc || e.kind == entryAllocAddr {
			b = binary.BigEndian.AppendUint16(b, uint16(len(e.owner)))
			b = append(b, e.owner...)
		}
	}
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli()))
}

// entrySize returns the encoded size of e.
func entrySize(l *layout, e entry) int {
	n := 1 + 16
	if l.is4 {
		n = 1 + 4
	}
	if e.kind == entryAlloc || e.kind == entryAllocAddr {
		n += 2 + len(e.owner)
	}
	return n
}

// splitRecords groups entries into batches that each fit one record.
func splitRecords(l *layout, entries []entry) [][]entry {
	const room = maxRecord - 4 - 8 - 4
	var out [][]entry
	for len(entries) > 0 {
		n, size := 0, 0
		for n < len(entries) && size+entrySize(l, entries[n]) <= room {
			size += entrySize(l, entries[n])
			n++
		}
		out = append(out, entries[:n])
		entries = entries[n:]
	}
	return out
}

type recordStatus int

const (
	recordOK    recordStatus = iota
	recordEnd                // zero length: end of the journal
	recordShort              // b ends inside the record
	recordBad                // bad length or checksum: torn or corrupt
)

// parseRecord parses the record at the start of b. A record that fails its
// checksum may be the torn tail of an interrupted write; one that passes its
// checksum but does not decode is corruption and returned as an error.
func parseRecord(b []byte, l *layout) (seq uint64, entries []entry, n int, st recordStatus, err error) {
	if len(b) < 4 {
		return 0, nil, 0, recordShort, nil
	}
	ln := binary.BigEndian.Uint32(b)
	switch {
	case ln == 0:
		return 0, nil, 0, recordEnd, nil
	case ln < 8 || ln > maxRecord-8:
		return 0, nil, 0, recordBad, nil
	}
	n = 4 + int(ln) + 4
	if len(b) < n {
		return 0, nil, 0, recordShort, nil
	}
	if crc32.Checksum(b[:n-4], castagnoli()) != binary.BigEndian.Uint32(b[n-4:]) {
		return 0, nil, 0, recordBad, nil
	}
	body := b[4 : n-4]
	seq = binary.BigEndian.Uint64(body)
	body = body[8:]
	alen := 16
	if l.is4 {
		alen = 4
	}
	for len(body) > 0 {
		var e entry
		e.kind = entryKind(body[0])
		if e.kind < entryAlloc || e.kind > entryCursor {
			return 0, nil, 0, recordOK, fmt.Errorf("%w: record %d: unknown entry kind %d", ErrCorrupt, seq, body[0])
		}
		if len(body) < 1+alen {
			return 0, nil, 0, recordOK, fmt.Errorf("%w: record %d: truncated entry", ErrCorrupt, seq)
		}
		a, _ := netip.AddrFromSlice(body[1 : 1+alen])
		if !l.prefix.Contains(a) {
			return 0, nil, 0, recordOK, fmt.Errorf("%w: record %d: address %s: %w %s", ErrCorrupt, seq, a, ErrOutOfRange, l.prefix)
		}
		e.off = l.offset(a)
		body = body[1+alen:]
		if e.kind == entryAlloc || e.kind == entryAllocAddr {
			if len(body) < 2 {
				return 0, nil, 0, recordOK, fmt.Errorf("%w: record %d: truncated owner", ErrCorrupt, seq)
			}
			m := int(binary.BigEndian.Uint16(body))
			if len(body) < 2+m {
				return 0, nil, 0, recordOK, fmt.Errorf("%w: record %d: truncated owner", ErrCorrupt, seq)
			}
			e.owner = string(body[2 : 2+m])
			body = body[2+m:]
		}
		entries = append(entries, e)
	}
	if len(entries) == 0 {
		return 0, nil, 0, recordOK, fmt.Errorf("%w: record %d: no entries", ErrCorrupt, seq)
	}
	return seq, entries, n, recordOK, nil
}

// isZero reports whether b holds only zero bytes.
func isZero(b []byte) bool {
	for len(b) >= 64 {
		if !bytes.Equal(b[:64], zeros64[:]) {
			return false
		}
		b = b[64:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

var zeros64 [64]byte

// tailKind classifies the bytes from an offset where no valid record starts
// to the end of the file.
type tailKind int

const (
	tailClean   tailKind = iota // all zero: the journal ends here
	tailTorn                    // damage confined to one record's span
	tailCorrupt                 // damage beyond: not the result of a crash
)

// classifyTail decides whether rest (the file from the first byte that is
// not part of a valid record) is a clean end, the torn tail of one
// interrupted write, or corruption. seq is the sequence number of the last
// valid record.
//
// Writes are sequential, one record each and at most maxRecord bytes, and
// each is made durable before the next begins, so a crash can only damage
// the last record and leaves zeros after its span. Damage followed by
// non-zero bytes beyond that span, or by a valid later record, is not a
// crash. Damage to the very last record cannot be told apart from a torn
// write; it is treated as one.
func classifyTail(rest []byte, seq uint64, l *layout) tailKind {
	if isZero(rest) {
		return tailClean
	}
	if len(rest) > maxRecord && !isZero(rest[maxRecord:]) {
		return tailCorrupt
	}
	// Look for a valid record with a later sequence number in the span.
	const maxLater = maxRecord / 16 // records are at least 16 bytes
	for p := 1; p+12 <= min(len(rest), maxRecord); p++ {
		v := binary.BigEndian.Uint64(rest[p+4:])
		if v <= seq+1 || v > seq+1+maxLater {
			continue
		}
		if rseq, _, _, st, err := parseRecord(rest[p:], l); err == nil && st == recordOK && rseq == v {
			return tailCorrupt
		}
	}
	return tailTorn
}

// replay is the result of scanning records.
type replay struct {
	end  int    // offset just past the last valid record
	seq  uint64 // sequence number of the last valid record
	torn int    // length of the torn tail at end, 0 if none
	more bool   // the scan needs the rest of the file to decide
}

// scanRecords applies the records in b to s; b starts at file offset base
// and, if eof, extends to the end of the file. It stops at the end of the
// journal or at a torn tail. Without eof it stops with more set when the
// bytes it has are not enough to tell a clean end from damage; a zero end
// marker followed by zeros up to the end of b counts as a clean end.
func scanRecords(b []byte, base int, eof bool, seq uint64, l *layout, s *state) (replay, error) {
	off := 0
	for {
		rseq, entries, n, st, err := parseRecord(b[off:], l)
		if err != nil {
			return replay{}, fmt.Errorf("at offset %d: %w", base+off, err)
		}
		if st == recordOK {
			if rseq != seq+1 {
				return replay{}, fmt.Errorf("%w: record at offset %d has sequence %d, want %d", ErrCorrupt, base+off, rseq, seq+1)
			}
			for _, e := range entries {
				if err := s.apply(l, e); err != nil {
					return replay{}, fmt.Errorf("record %d at offset %d: %w", rseq, base+off, err)
				}
			}
			seq = rseq
			off += n
			continue
		}
		r := replay{end: base + off, seq: seq}
		if !eof {
			r.more = st != recordEnd || !isZero(b[off:])
			return r, nil
		}
		switch classifyTail(b[off:], seq, l) {
		case tailClean:
			return r, nil
		case tailTorn:
			r.torn = min(len(b)-off, maxRecord)
			return r, nil
		}
		return replay{}, fmt.Errorf("%w: damaged record at offset %d followed by more data", ErrCorrupt, base+off)
	}
}

// replayJournal checks the header of a whole journal file against l and
// applies its records to st.
func replayJournal(data []byte, l *layout, st *state) (hdrLen int, r replay, err error) {
	enc, hdrLen, err := decodeHeader(data)
	if err != nil {
		return 0, replay{}, err
	}
	if want := l.encode(); !bytes.Equal(enc, want) {
		pfx, ok := decodePrefix(enc)
		switch {
		case !ok:
			return 0, replay{}, fmt.Errorf("%w: unreadable pool description in header", ErrCorrupt)
		case pfx != l.prefix:
			return 0, replay{}, fmt.Errorf("%w: store holds pool %s, not %s", ErrInvalid, pfx, l.prefix)
		}
		return 0, replay{}, fmt.Errorf("%w: store holds pool %s with other options (range, gateway or exclusions)", ErrInvalid, pfx)
	}
	r, err = scanRecords(data[hdrLen:], hdrLen, true, 0, l, st)
	return hdrLen, r, err
}
