package ipam

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestOpenExistingRestoresLayout(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		opts   []Option
	}{
		{"10.1.0.0/24", nil},
		{"10.2.0.0/16", []Option{Range(netip.MustParseAddr("10.2.1.10"), netip.MustParseAddr("10.2.3.77")), Gateway(netip.MustParseAddr("10.2.0.254")),
			Exclude(netip.MustParseAddr("10.2.1.20")), ExcludePrefix(netip.MustParsePrefix("10.2.2.0/25"))}},
		{"fd00::/64", []Option{NoGateway(), ExcludePrefix(netip.MustParsePrefix("fd00::100/120"))}},
	} {
		t.Run(tc.prefix, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "store")
			p, err := Open(dir, netip.MustParsePrefix(tc.prefix), tc.opts...)
			require.NoError(t, err)
			a, err := p.AllocateFor("owner-1")
			require.NoError(t, err)
			require.NoError(t, p.Close())

			q, err := OpenExisting(dir)
			require.NoError(t, err)
			defer q.Close()
			assert.Equal(t, tc.prefix, q.Prefix().String())
			owner, ok := q.Owner(a)
			assert.True(t, ok)
			assert.Equal(t, "owner-1", owner)
			// The reopened layout is the same one: opening with the original
			// options still works while q is open.
			r, err := Open(dir, netip.MustParsePrefix(tc.prefix), tc.opts...)
			require.NoError(t, err)
			require.NoError(t, r.Close())
		})
	}
	_, err := OpenExisting(t.TempDir())
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestRangeToPrefixes(t *testing.T) {
	got := rangeToPrefixes(netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("10.0.0.17"))
	var s []string
	for _, p := range got {
		s = append(s, p.String())
	}
	assert.Equal(t, []string{"10.0.0.3/32", "10.0.0.4/30", "10.0.0.8/29", "10.0.0.16/31"}, s)
	one := rangeToPrefixes(netip.MustParseAddr("fd00::5"), netip.MustParseAddr("fd00::5"))
	assert.Equal(t, []netip.Prefix{netip.MustParsePrefix("fd00::5/128")}, one)
}
