package podnet

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/vishvananda/netlink"
)

// TestRedump reads an interrupted dump again, up to dumpTries times, and
// passes any other outcome through at once.
func TestRedump(t *testing.T) {
	for _, tc := range []struct {
		name      string
		interrupt int // how many reads are interrupted before one is not
		other     error
		wantTries int
		wantErr   error
	}{
		{"clean", 0, nil, 1, nil},
		{"interrupted twice", 2, nil, 3, nil},
		{"always interrupted", 100, nil, dumpTries, netlink.ErrDumpInterrupted},
		{"other error", 0, errors.New("boom"), 1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tries := 0
			v, err := redump(func() (int, error) {
				tries++
				if tries <= tc.interrupt {
					return -1, netlink.ErrDumpInterrupted
				}
				return 42, tc.other
			})
			assert.Equal(t, tc.wantTries, tries)
			switch {
			case tc.other != nil:
				assert.ErrorIs(t, err, tc.other)
			case tc.wantErr != nil:
				assert.ErrorIs(t, err, tc.wantErr)
				assert.Equal(t, -1, v)
			default:
				assert.NoError(t, err)
				assert.Equal(t, 42, v)
			}
		})
	}
}
