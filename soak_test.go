package podnet_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/podnettest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ownNamedNamespaces counts the named namespaces this process made and
// still has (by podnet's records), not other test processes' ones, which
// come and go meanwhile.
func ownNamedNamespaces(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir(podnet.RecordDir)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	require.NoError(t, err)
	n := 0
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(podnet.RecordDir, e.Name()))
		if err != nil {
			continue // gone meanwhile
		}
		if m, ok := podnet.ParseMark(strings.TrimSpace(string(b))); ok && m.Owner == podnet.Self() {
			n++
		}
	}
	return n
}

func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

// TestSoak runs 8 goroutines that each create and close a small lab 100
// times (10 with -short), all in one sandbox, then checks that nothing
// leaked: no link, no named namespace, no file descriptor, no goroutine.
func TestSoak(t *testing.T) {
	// 800 labs take about 40 s on an idle 2-core machine; the bound is a
	// safety net against a hang, not a speed check, so it leaves room for
	// a loaded one.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	host := podnettest.Sandbox(t)
	cycles := 100
	if testing.Short() {
		cycles = 10
	}
	const workers = 8
	lab := func(w, i int) error {
		l, err := soakTopology(w).In(host).Create(ctx)
		if err != nil {
			return err
		}
		if err := l.Host("a").PingNode(ctx, l.Host("b")); err != nil {
			return fmt.Errorf("ping: %w", errorsJoin(err, l.Close()))
		}
		return l.Close()
	}
	// Warm up so that lazily opened descriptors and pooled threads exist
	// before the baseline is taken.
	require.NoError(t, lab(0, 0))
	runtime.GC()
	fds, goroutines := openFDs(t), runtime.NumGoroutine()
	netns := ownNamedNamespaces(t)

	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, workers*cycles)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < cycles; i++ {
				if err := lab(w, i); err != nil {
					errs <- fmt.Errorf("worker %d cycle %d: %w", w, i, err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	t.Logf("%d labs in %v", workers*cycles, time.Since(start))

	assert.Equal(t, []string{"lo"}, linkNames(t, host), "links leaked")
	assert.NotContains(t, iptablesSave(t, host), "-A ", "iptables rules leaked")
	fwd, err := host.Sysctl("net.ipv4.ip_forward")
	require.NoError(t, err)
	assert.Equal(t, "0", fwd, "forwarding left on")
	assert.Zero(t, podnet.NamespaceStates(), "iptables/sysctl state leaked")
	assert.Equal(t, netns, ownNamedNamespaces(t), "named namespaces leaked")
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	assert.LessOrEqual(t, runtime.NumGoroutine(), goroutines, "goroutines leaked")
	assert.Equal(t, fds, openFDs(t), "file descriptors leaked")
}

// soakTopology is a small lab; worker 0's masquerades, so that iptables
// rules and the forwarding sysctl come and go with it.
func soakTopology(w int) *podnet.TopologySpec {
	t := podnet.Topology().Network(fmt.Sprintf("soak%d", w), fmt.Sprintf("10.%d.0.0/24", 100+w))
	if w == 0 {
		t.Masquerade()
	}
	return t.Host("a", fmt.Sprintf("soak%d", w)).Host("b", fmt.Sprintf("soak%d", w))
}

func errorsJoin(errs ...error) error {
	var out []error
	for _, e := range errs {
		if e != nil {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return fmt.Errorf("%v", out)
}
