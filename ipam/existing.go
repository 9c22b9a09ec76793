package ipam

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// OpenExisting opens the store that already exists in dir with the prefix
// and options recorded in it, for tools that find stores without knowing
// how they were made (such as podnet's sweep). It never creates a store:
// a directory without one gives an error wrapping os.ErrNotExist.
func OpenExisting(dir string) (*Pool, error) {
	prefix, opts, err := readLayout(dir)
	if err != nil {
		return nil, &Error{Op: "open", Err: fmt.Errorf("%s: %w", dir, err)}
	}
	return Open(dir, prefix, opts...)
}

// readLayout reads the header of dir's journal and turns its layout back
// into a prefix and options.
func readLayout(dir string) (netip.Prefix, []Option, error) {
	fd, err := unix.Open(filepath.Join(dir, journalName), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if err == unix.ENOENT {
			return netip.Prefix{}, nil, fmt.Errorf("no store: %w", os.ErrNotExist)
		}
		return netip.Prefix{}, nil, err
	}
	defer unix.Close(fd)
	buf := make([]byte, headerFixed+maxLayout+4)
	n, err := unix.Pread(fd, buf, 0)
	if err != nil {
		return netip.Prefix{}, nil, err
	}
	lay, _, err := decodeHeader(buf[:n])
	if err != nil {
		return netip.Prefix{}, nil, err
	}
	return decodeLayout(lay)
}

// decodeLayout is the inverse of layout.encode.
func decodeLayout(b []byte) (netip.Prefix, []Option, error) {
	bad := fmt.Errorf("%w: malformed layout in journal header", ErrCorrupt)
	prefix, ok := decodePrefix(b)
	if !ok {
		return netip.Prefix{}, nil, bad
	}
	n := 4
	if prefix.Addr().Is6() {
		n = 16
	}
	b = b[3+n:]
	next := func() (netip.Addr, bool) {
		if len(b) < n {
			return netip.Addr{}, false
		}
		a, _ := netip.AddrFromSlice(b[:n])
		b = b[n:]
		return a, true
	}
	start, ok1 := next()
	end, ok2 := next()
	if !ok1 || !ok2 || len(b) < 1 {
		return netip.Prefix{}, nil, bad
	}
	opts := []Option{Range(start, end)}
	hasGW := b[0]
	b = b[1:]
	if hasGW == 1 {
		gw, ok := next()
		if !ok {
			return netip.Prefix{}, nil, bad
		}
		opts = append(opts, Gateway(gw))
	} else {
		opts = append(opts, NoGateway())
	}
	if len(b) < 4 {
		return netip.Prefix{}, nil, bad
	}
	count := binary.BigEndian.Uint32(b)
	b = b[4:]
	for i := uint32(0); i < count; i++ {
		lo, ok1 := next()
		hi, ok2 := next()
		if !ok1 || !ok2 {
			return netip.Prefix{}, nil, bad
		}
		opts = append(opts, ExcludePrefix(rangeToPrefixes(lo, hi)...))
	}
	return prefix, opts, nil
}

// rangeToPrefixes covers lo..hi (inclusive) with the fewest prefixes.
func rangeToPrefixes(lo, hi netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	bits := lo.BitLen()
	for {
		// The largest prefix starting at lo that does not pass hi.
		l := bits
		for l > 0 {
			p := netip.PrefixFrom(lo, l-1).Masked()
			if p.Addr() != lo || prefixLast(p).Compare(hi) > 0 {
				break
			}
			l--
		}
		p := netip.PrefixFrom(lo, l)
		out = append(out, p)
		last := prefixLast(p)
		if last.Compare(hi) >= 0 {
			return out
		}
		lo = last.Next()
	}
}

func prefixLast(p netip.Prefix) netip.Addr {
	a := p.Addr().AsSlice()
	for i := p.Bits(); i < len(a)*8; i++ {
		a[i/8] |= 0x80 >> (i % 8)
	}
	r, _ := netip.AddrFromSlice(a)
	return r
}
