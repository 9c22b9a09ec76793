package plugin

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/podnet/podnet/ipam"
)

// TestAllocateInSet walks a range set of two ranges as one, from after
// the last address handed out, and starts from the first range when that
// record is missing, unreadable or names the end of a range.
func TestAllocateInSet(t *testing.T) {
	c, err := ParseConfig([]byte(`{"cniVersion": "1.1.0", "name": "n", "type": "podnet-cni", "bridge": "b0",
		"ipam": {"type": "host-local", "dataDir": "`+t.TempDir()+`", "ranges": [[
			{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.11"},
			{"subnet": "10.2.0.0/24", "rangeStart": "10.2.0.10", "rangeEnd": "10.2.0.11"}]]}}`), "")
	require.NoError(t, err)
	alloc := func(owner string) string {
		t.Helper()
		a := allocate(c, owner)
		defer a.ps.close()
		if a.err != nil {
			return "error: " + a.err.Error()
		}
		require.Len(t, a.allocs, 1)
		return a.allocs[0].addr.String()
	}
	release := func(owner string) {
		t.Helper()
		ps, err := openExistingPools(c)
		require.NoError(t, err)
		defer ps.close()
		n := 0
		ps.each(c, func(_ Range, p *ipam.Pool) {
			got, err := p.ReleaseOwner(owner)
			require.NoError(t, err)
			n += len(got)
		})
		require.Equal(t, 1, n, "%s held one address", owner)
	}
	assert.Equal(t, "10.1.0.10", alloc("o1"))
	assert.Equal(t, "10.1.0.11", alloc("o2"))
	assert.Equal(t, "10.2.0.10", alloc("o3"), "on into the second range")
	release("o1")
	require.NoError(t, os.WriteFile(c.lastFile(0), []byte("not an address"), 0o600))
	assert.Equal(t, "10.1.0.10", alloc("o4"), "an unreadable record: from the first range")
	require.NoError(t, os.WriteFile(c.lastFile(0), []byte("10.2.0.11\n"), 0o600))
	assert.Equal(t, "10.2.0.11", alloc("o5"), "after the end of the last range: wrap to the first, full, then the second")
	assert.Contains(t, alloc("o6"), "no free address in range set 0")
	release("o2")
	require.NoError(t, os.Remove(c.lastFile(0)))
	assert.Equal(t, "10.1.0.11", alloc("o7"), "no record: from the first range")
	last, ok := c.last(0)
	require.True(t, ok)
	assert.Equal(t, "10.1.0.11", last.String(), "recorded")
}
