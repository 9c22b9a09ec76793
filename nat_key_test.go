package podnet_test

import (
	"strings"
	"testing"
	"time"

	"github.com/podnet/podnet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMasqueradeKey installs a rule under a key the way a program that
// runs once per request does (a CNI plugin): Create is idempotent, the rule
// outlives its Go object (Close leaves it), carries no ownership mark, and
// Remove takes it away whoever installed it.
func TestMasqueradeKey(t *testing.T) {
	requireIptables(t)
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			w := newNATWorld(t)
			serveTCP(t, w.internet, internetIP+":80", func(remote string) string { return remote })
			spec := func() *podnet.MasqueradeSpec {
				return podnet.NewMasquerade(pfx("192.168.52.0/24")).ExceptOut("br0").In(w.host).Backend(be.b).Key("cni.net1.192.168.52.0-24")
			}
			const rule = `-A PODNET-POSTROUTING -s 192.168.52.0/24 ! -o br0 -m comment --comment "podnet-key:cni.net1.192.168.52.0-24" -j MASQUERADE`

			installed, err := spec().Installed(ctx)
			require.NoError(t, err)
			assert.False(t, installed)
			m1, err := spec().Create(ctx)
			require.NoError(t, err)
			m2, err := spec().Create(ctx)
			require.NoError(t, err, "a second Create under the key adds nothing")
			assert.Equal(t, []string{rule}, keyedRules(t, w, be.b))
			got, err := tcpGet(w.a, internetIP+":80", 5*time.Second)
			require.NoError(t, err)
			assert.Equal(t, hostOutside, got)

			require.NoError(t, m1.Close())
			require.NoError(t, m2.Close())
			assert.Equal(t, []string{rule}, keyedRules(t, w, be.b), "Close leaves a keyed rule")
			installed, err = spec().Installed(ctx)
			require.NoError(t, err)
			assert.True(t, installed)
			list, err := podnet.List(ctx, podnet.SweepIn(w.host))
			require.NoError(t, err)
			for _, o := range list {
				if o.Namespace != "" {
					continue // another test's named namespace
				}
				assert.NotEqual(t, "iptables-rule", o.Kind, "a keyed rule carries no mark: %v", o)
				assert.NotEqual(t, "nft-record", o.Kind, "a keyed rule's table is not a crash record's: %v", o)
			}

			require.NoError(t, spec().Remove(ctx))
			assert.Empty(t, keyedRules(t, w, be.b))
			require.NoError(t, spec().Remove(ctx), "Remove is idempotent")
			installed, err = spec().Installed(ctx)
			require.NoError(t, err)
			assert.False(t, installed)
		})
	}
	t.Run("invalid", func(t *testing.T) {
		ctx := testCtx(t)
		for _, spec := range []*podnet.MasqueradeSpec{
			podnet.NewMasquerade(pfx("10.0.0.0/24")).Key("a b"),
			podnet.NewMasquerade(pfx("10.0.0.0/24")).Key(strings.Repeat("k", 201)),
			podnet.NewMasquerade(pfx("10.0.0.0/24")).Key("k").Label("l"),
		} {
			_, err := spec.Create(ctx)
			assert.ErrorIs(t, err, podnet.ErrInvalidOption)
		}
		assert.ErrorIs(t, podnet.NewMasquerade(pfx("10.0.0.0/24")).Remove(ctx), podnet.ErrInvalidOption, "Remove needs a key")
	})
}

func keyedRules(t *testing.T, w *natWorld, b podnet.IptablesBackend) []string {
	var out []string
	for _, r := range podnetRules(t, w.host, b, 4) {
		if strings.Contains(r, "podnet-key:") {
			out = append(out, r)
		}
	}
	return out
}
