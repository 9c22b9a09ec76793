package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podnet/podnet/podnettest"
)

// envRunMain makes the test binary act as the bench command, so that the
// end-to-end test runs the real main (with its re-execution into a private
// mount namespace) without building anything.
const envRunMain = "PODNET_BENCH_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envRunMain) == "1" {
		main()
		return
	}
	// The tests run in a private mount namespace like the command, so that
	// checkClean's look at /run/netns sees only theirs.
	if os.Geteuid() == 0 {
		code, reexeced, err := reexecPrivate()
		if err != nil {
			os.Stderr.WriteString("bench test: " + err.Error() + "\n")
			os.Exit(1)
		}
		if reexeced {
			os.Exit(code)
		}
		if err := preparePrivateMounts(); err != nil {
			os.Stderr.WriteString("bench test: " + err.Error() + "\n")
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestQuickEndToEnd runs `bench -quick -json F -svg F` as a separate
// process and checks its outputs: every JSON line parses and has every
// field, every suite and implementation is there, and the SVG is
// well-formed XML.
func TestQuickEndToEnd(t *testing.T) {
	podnettest.RequirePrivilege(t)
	dir := t.TempDir()
	jsonPath, svgPath := filepath.Join(dir, "out.json"), filepath.Join(dir, "out.svg")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// Warm the build cache, so that the timing below is the run's, not a
	// first compilation of the CNI plugins.
	if _, err := buildCNIPlugins(ctx, filepath.Join(dir, "warm")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, os.Args[0], "-quick", "-json", jsonPath, "-svg", svgPath)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envPrivate+"=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, envRunMain+"=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("bench -quick: %v\nstderr:\n%s\nstdout:\n%s", err, stderr.String(), stdout.String())
	}
	t.Logf("bench -quick took %v", elapsed.Round(time.Millisecond))
	if elapsed > time.Minute {
		t.Errorf("bench -quick took %v, want well under a minute", elapsed)
	}
	if !strings.Contains(stdout.String(), "| n | op | podnet |") {
		t.Errorf("no table on stdout:\n%s", stdout.String())
	}

	f, err := os.Open(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	lines := 0
	for sc.Scan() {
		lines++
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %d: %v: %s", lines, err, sc.Text())
		}
		for _, field := range []string{"suite", "impl", "op"} {
			if s, ok := m[field].(string); !ok || s == "" {
				t.Errorf("line %d: field %q missing or not a string: %s", lines, field, sc.Text())
			}
		}
		for _, field := range []string{"n", "ns_per_op", "ratio_to_podnet"} {
			if v, ok := m[field].(float64); !ok || v <= 0 {
				t.Errorf("line %d: field %q missing or not a positive number: %s", lines, field, sc.Text())
			}
		}
		seen[m["suite"].(string)+"/"+m["impl"].(string)] = true
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for suite, impls := range implOrder {
		for _, impl := range impls {
			if !seen[suite+"/"+impl] {
				t.Errorf("no result for %s/%s", suite, impl)
			}
		}
	}

	svg, err := os.ReadFile(svgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := wellFormed(svg); err != nil {
		t.Errorf("SVG is not well-formed: %v", err)
	}
}

// wellFormed decodes b as XML to the end and checks the root is <svg>.
func wellFormed(b []byte) error {
	d := xml.NewDecoder(bytes.NewReader(b))
	root := ""
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		return errors.New("root element is " + root + ", not svg")
	}
	return nil
}
