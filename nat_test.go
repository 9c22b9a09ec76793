package podnet_test

import (
	"testing"
	"time"

	"github.com/podnet/podnet"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMasquerade(t *testing.T) {
	requireIptables(t)
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			w := newNATWorld(t)
			serveTCP(t, w.internet, internetIP+":80", func(remote string) string { return remote })
			before := takeSnapshot(t, w.host, be.b)

			mustFail(t, "without masquerade", func() (string, error) { return tcpGet(w.a, internetIP+":80", time.Second) })

			m, err := podnet.NewMasquerade(pfx("192.168.52.0/24")).In(w.host).ExceptOut("br0").Backend(be.b).Create(ctx)
			require.NoError(t, err)
			assert.Equal(t, be.b, m.Backend())
			got, err := tcpGet(w.a, internetIP+":80", 5*time.Second)
			require.NoError(t, err)
			assert.Equal(t, hostOutside, got, "the server must see the host's outside address")

			rules := podnetRules(t, w.host, be.b, 4)
			assert.Contains(t, rules, `-A POSTROUTING -m comment --comment podnet -j PODNET-POSTROUTING`)
			assert.Contains(t, rules, `-A PODNET-POSTROUTING -s 192.168.52.0/24 ! -o br0 -m comment --comment "`+m.Mark()+`" -j MASQUERADE`)

			require.NoError(t, m.Close())
			require.NoError(t, m.Close())
			assert.Equal(t, before, takeSnapshot(t, w.host, be.b))
			mustFail(t, "after Close", func() (string, error) { return tcpGet(w.a, internetIP+":80", time.Second) })
		})
	}
}
