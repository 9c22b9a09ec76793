package ipam

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
)

// Sentinel errors. Every error returned by this package wraps one or more of
// them (test with errors.Is) inside an *Error.
var (
	// ErrExhausted means the pool has no free address left.
	ErrExhausted = errors.New("no free address in pool")
	// ErrNotAllocated means the address is not currently allocated.
	ErrNotAllocated = errors.New("address not allocated")
	// ErrReserved means the address is the network address, the IPv4
	// broadcast address, the gateway or excluded.
	ErrReserved = errors.New("address reserved")
	// ErrOutOfRange means the address is outside the pool's prefix or range.
	ErrOutOfRange = errors.New("address out of range")
	// ErrDuplicate means the address is already allocated.
	ErrDuplicate = errors.New("address already allocated")
	// ErrInvalid means an argument, option or path is invalid.
	ErrInvalid = errors.New("invalid argument")
	// ErrCorrupt means a store file is damaged or inconsistent. The store is
	// never repaired silently; inspect or remove it by hand.
	ErrCorrupt = errors.New("store corrupt")
	// ErrClosed means the pool was closed.
	ErrClosed = errors.New("pool closed")
)

// Error records the operation and the address (and owner, if any) that an
// error is about. Err wraps the sentinel errors above and, for store
// failures, the underlying system error.
type Error struct {
	Op    string     // operation, e.g. "allocate", "release", "open"
	Addr  netip.Addr // zero when the error is not about one address
	Owner string     // empty when the operation has no owner
	Err   error
}

// Error returns "ipam: op addr (owner "x"): cause".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("ipam: ")
	b.WriteString(e.Op)
	if e.Addr.IsValid() {
		b.WriteByte(' ')
		b.WriteString(e.Addr.String())
	}
	if e.Owner != "" {
		b.WriteString(" (owner ")
		b.WriteString(quote(e.Owner))
		b.WriteByte(')')
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

func quote(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}
