package ipam

import (
	"math/big"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestU128Digit(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 1000 {
		x := u128{rng.Uint64(), rng.Uint64()}
		b := new(big.Int).Lsh(new(big.Int).SetUint64(x.hi), 64)
		b.Or(b, new(big.Int).SetUint64(x.lo))
		for level := range 22 {
			want := new(big.Int).Rsh(b, uint(6*level)).Uint64() & 63
			require.Equal(t, uint(want), x.digit(level), "%v level %d", x, level)
		}
		n := uint(rng.IntN(129))
		m := lowMask(n)
		want := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), n), big.NewInt(1))
		require.Equal(t, want.Uint64(), m.lo)
		require.Equal(t, new(big.Int).Rsh(want, 64).Uint64(), m.hi)
	}
}

// TestTreeAgainstModel drives the radix tree directly for space sizes the
// fuzz test cannot reach, comparing with a sorted-set model. Offsets are
// clustered around a few random centres so that paths are shared and
// digits at the 64-bit boundary are exercised.
func TestTreeAgainstModel(t *testing.T) {
	for _, hostBits := range []int{2, 6, 7, 13, 63, 64, 65, 100, 127, 128} {
		rng := rand.New(rand.NewPCG(uint64(hostBits), 9))
		last := lowMask(uint(hostBits))
		random := func() u128 {
			return u128{rng.Uint64(), rng.Uint64()}.and(last)
		}
		var centres []u128
		for range 4 {
			centres = append(centres, random())
		}
		near := func() u128 {
			c := centres[rng.IntN(len(centres))]
			d := u128{0, uint64(rng.IntN(300))}
			if rng.IntN(2) == 0 && !c.less(d) {
				return c.sub(d)
			}
			if x, over := c.add(d); !over && !last.less(x) {
				return x
			}
			return c
		}

		tr := newTree(hostBits)
		var spans []span
		for range 1 + rng.IntN(4) {
			lo := near()
			hi, over := lo.add(u128{0, uint64(rng.IntN(200))})
			if over || last.less(hi) {
				hi = last
			}
			spans = append(spans, span{lo, hi})
		}
		if hostBits >= 20 { // a huge aligned span too
			lo := random().and(lowMask(uint(hostBits - 10)).not())
			spans = append(spans, span{lo, lo.or(lowMask(uint(hostBits - 10)))})
		}
		spans = mergeSpans(spans)
		for _, s := range spans {
			tr.reserve(s.lo, s.hi)
		}
		reserved := func(x u128) bool {
			for _, s := range spans {
				if !x.less(s.lo) && !s.hi.less(x) {
					return true
				}
			}
			return false
		}
		set := map[u128]bool{}
		next := func(from u128) (u128, bool) {
			x := from
			for {
				advanced := false
				for _, s := range spans {
					if !x.less(s.lo) && !s.hi.less(x) {
						if s.hi == last {
							return u128{}, false
						}
						x, advanced = s.hi.addOne(), true
					}
				}
				if set[x] {
					if x == last {
						return u128{}, false
					}
					x, advanced = x.addOne(), true
				}
				if !advanced {
					return x, true
				}
			}
		}

		for i := range 3000 {
			x := near()
			switch rng.IntN(4) {
			case 0, 1:
				if !reserved(x) && !set[x] {
					tr.set(x)
					set[x] = true
				}
			case 2:
				require.Equal(t, set[x], tr.clear(x), "clear %v", x)
				delete(set, x)
			case 3:
				got, gotOK := tr.next(x)
				want, wantOK := next(x)
				require.Equal(t, wantOK, gotOK, "bits %d op %d next(%v)", hostBits, i, x)
				require.Equal(t, want, got, "bits %d op %d next(%v)", hostBits, i, x)
			}
			require.Equal(t, set[x], tr.allocated(x))
		}
		var want []u128
		for x := range set {
			want = append(want, x)
		}
		slices.SortFunc(want, u128.cmp)
		var got []u128
		tr.each(func(x u128) bool { got = append(got, x); return true })
		require.Equal(t, want, got, "bits %d", hostBits)
		for _, x := range want {
			require.True(t, tr.clear(x))
		}
		// Only the reservation scaffolding is left.
		fresh := newTree(hostBits)
		for _, s := range spans {
			fresh.reserve(s.lo, s.hi)
		}
		require.Equal(t, countNodes(fresh.root), countNodes(tr.root), "bits %d", hostBits)
	}
}
