//go:build unix

package ipam

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The multi-process tests re-execute the test binary with IPAM_HELPER set;
// TestHelperProcess is then the child's entry point. A child reports each
// acknowledged operation on stdout ("alloc ADDR OWNER" or "release ADDR")
// before it starts the next one.
const (
	helperEnv       = "IPAM_HELPER"
	helperDirEnv    = "IPAM_HELPER_DIR"
	helperCountEnv  = "IPAM_HELPER_COUNT"
	helperPrefixEnv = "IPAM_HELPER_PREFIX"
)

func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("entry point for child processes of the multi-process tests")
	}
	if err := runHelper(mode); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	os.Exit(0)
}

func runHelper(mode string) error {
	p, err := Open(os.Getenv(helperDirEnv), netip.MustParsePrefix(os.Getenv(helperPrefixEnv)))
	if err != nil {
		return err
	}
	defer p.Close()
	count, _ := strconv.Atoi(os.Getenv(helperCountEnv))
	out := os.Stdout // unbuffered: each line is one write(2)
	pid := os.Getpid()
	var held []netip.Addr
	for i := 0; count <= 0 || i < count; i++ {
		owner := fmt.Sprintf("p%d-%d", pid, i)
		a, err := p.AllocateFor(owner)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(out, "alloc %s %s\n", a, owner); err != nil {
			return err
		}
		held = append(held, a)
		if mode == "churn" && i%3 == 2 {
			if err := p.Release(held[0]); err != nil {
				return err
			}
			if _, err := fmt.Fprintf(out, "release %s\n", held[0]); err != nil {
				return err
			}
			held = held[1:]
		}
	}
	return nil
}

type child struct {
	cmd   *exec.Cmd
	lines chan string
}

func startHelper(t *testing.T, mode, dir, prefix string, count int) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		helperEnv+"="+mode,
		helperDirEnv+"="+dir,
		helperPrefixEnv+"="+prefix,
		helperCountEnv+"="+strconv.Itoa(count),
	)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	c := &child{cmd: cmd, lines: make(chan string, 1024)}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if line := sc.Text(); strings.HasPrefix(line, "alloc ") || strings.HasPrefix(line, "release ") {
				c.lines <- line
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return c
}

func TestMultiProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	const prefix, children, each = "10.0.0.0/16", 4, 60
	dir := t.TempDir()
	p := openPool(t, dir, prefix)

	var kids []*child
	for range children {
		kids = append(kids, startHelper(t, "alloc", dir, prefix, each))
	}
	// The parent allocates at the same time, through two pools.
	q := openPool(t, dir, prefix)
	var mine []Allocation
	for i := range each {
		pool := p
		if i%2 == 1 {
			pool = q
		}
		owner := fmt.Sprintf("parent-%d", i)
		a, err := pool.AllocateFor(owner)
		require.NoError(t, err)
		mine = append(mine, Allocation{a, owner})
	}

	all := slices.Clone(mine)
	for _, k := range kids {
		for line := range k.lines {
			f := strings.Fields(line)
			all = append(all, Allocation{mustAddr(f[1]), f[2]})
		}
		require.NoError(t, k.cmd.Wait())
	}
	require.Len(t, all, (children+1)*each)
	slices.SortFunc(all, func(a, b Allocation) int { return a.Addr.Compare(b.Addr) })
	for i := 1; i < len(all); i++ {
		require.NotEqual(t, all[i-1].Addr, all[i].Addr, "address handed out twice")
	}

	// Every process's allocations are visible, with their owners, in the
	// long-lived pool and in a fresh one.
	assert.Equal(t, all, slices.Collect(p.All()))
	assert.Equal(t, len(all), q.Used())
	r := openPool(t, dir, prefix)
	assert.Equal(t, all, slices.Collect(r.All()))
}

func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	const prefix = "fd00::/118"
	dir := t.TempDir()
	model := map[netip.Addr]string{} // acknowledged state
	rng := rand.New(rand.NewPCG(7, 7))
	for round := range 6 {
		k := startHelper(t, "churn", dir, prefix, 0)
		stop := 10 + rng.IntN(60)
		n := 0
		for line := range k.lines {
			f := strings.Fields(line)
			switch f[0] {
			case "alloc":
				model[mustAddr(f[1])] = f[2]
			case "release":
				delete(model, mustAddr(f[1]))
			}
			if n++; n == stop {
				require.NoError(t, k.cmd.Process.Signal(syscall.SIGKILL))
			}
		}
		err := k.cmd.Wait()
		require.Error(t, err, "child was killed")

		p, err := Open(dir, mustPrefix(prefix))
		require.NoError(t, err, "round %d", round)
		got := map[netip.Addr]string{}
		for a := range p.All() {
			got[a.Addr] = a.Owner
		}
		// Every acknowledged operation is there; the one in flight when
		// the child died may or may not be.
		var diff []string
		for a, o := range model {
			if got[a] != o {
				diff = append(diff, fmt.Sprintf("acknowledged %s %q missing", a, o))
			}
		}
		for a, o := range got {
			if _, ok := model[a]; !ok {
				diff = append(diff, fmt.Sprintf("unacknowledged %s %q present", a, o))
			}
		}
		assert.LessOrEqual(t, len(diff), 1, "round %d: %v", round, diff)
		t.Logf("round %d: killed after %d acknowledged operations; %d allocated; %v", round, n, len(got), diff)
		// Adopt what the store says for the next round.
		model = got
		require.NoError(t, p.Close())
	}
	assert.NotEmpty(t, model)
}

// TestCrashWhileOthersWrite kills one writer while others keep going.
func TestCrashWhileOthersWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	const prefix = "10.1.0.0/16"
	dir := t.TempDir()
	openPool(t, dir, prefix).Close()
	victim := startHelper(t, "churn", dir, prefix, 0)
	var others []*child
	for range 2 {
		others = append(others, startHelper(t, "alloc", dir, prefix, 50))
	}
	var mu sync.Mutex
	acked := map[netip.Addr]string{}
	var wg sync.WaitGroup
	for _, k := range others {
		wg.Go(func() {
			for line := range k.lines {
				f := strings.Fields(line)
				mu.Lock()
				acked[mustAddr(f[1])] = f[2]
				mu.Unlock()
			}
		})
	}
	n := 0
	for range victim.lines {
		if n++; n == 40 {
			require.NoError(t, victim.cmd.Process.Signal(syscall.SIGKILL))
		}
	}
	wg.Wait()
	for _, k := range others {
		require.NoError(t, k.cmd.Wait())
	}
	p := openPool(t, dir, prefix)
	for a, o := range acked {
		owner, ok := p.Owner(a)
		assert.True(t, ok, a)
		assert.Equal(t, o, owner)
	}
	assert.Len(t, acked, 100)
}
