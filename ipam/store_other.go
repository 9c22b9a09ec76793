//go:build !unix

package ipam

import (
	"errors"
	"fmt"
	"net/netip"
)

// Open is not supported on this platform: the store needs flock and
// O_NOFOLLOW.
func Open(dir string, prefix netip.Prefix, opts ...Option) (*Pool, error) {
	if _, err := newLayout(prefix, opts); err != nil {
		return nil, &Error{Op: "open", Err: err}
	}
	return nil, &Error{Op: "open", Err: fmt.Errorf("%s: %w", dir, errors.ErrUnsupported)}
}

type store struct{}

func (*store) begin(*Pool, bool) error     { return errors.ErrUnsupported }
func (*store) end()                        {}
func (*store) append(*Pool, []entry) error { return errors.ErrUnsupported }
func (*store) close() error                { return nil }
