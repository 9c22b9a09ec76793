package podnet_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/podnettest"
	"github.com/stretchr/testify/require"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// linkNames lists the interface names in ns, sorted.
func linkNames(t testing.TB, ns *podnet.Namespace) []string {
	t.Helper()
	links, err := ns.Links(context.Background())
	require.NoError(t, err)
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	sort.Strings(names)
	return names
}

func link(t testing.TB, ns *podnet.Namespace, name string) netlink.Link {
	t.Helper()
	l, err := ns.Handle().LinkByName(name)
	require.NoError(t, err, "link %s in %s", name, ns)
	return l
}

// nsInode returns the inode identifying the namespace behind path.
func nsInode(t testing.TB, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Stat(path, &st), path)
	return st.Ino
}

func fdInode(t testing.TB, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Fstat(fd, &st))
	return st.Ino
}

// echoServer accepts connections on l and echoes what it reads, until l is
// closed.
func echoServer(l net.Listener) {
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
}

// tcpRoundTrip connects from client to addr, sends a message and expects
// it echoed back.
func tcpRoundTrip(ctx context.Context, client *podnet.Namespace, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := []byte("hello through podnet")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != string(msg) {
		return io.ErrUnexpectedEOF
	}
	return nil
}

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		os.Exit(crashChild())
	}
	os.Exit(m.Run())
}

var _ = podnettest.Sandbox
