// Command bench measures podnet side by side with a raw-netlink floor, the
// CNI reference plugins and a shell script, and writes a table, JSON lines
// and an SVG plot. Run it as root from this directory (it is its own
// module, so `go run ./bench` from the repository root cannot reach it):
//
//	cd bench && go run . [-quick] [-json FILE] [-svg FILE]
//
// Suites:
//
//   - attach: per-namespace setup and teardown (namespace, veth on a
//     bridge, address, default route; masquerade on the network) for
//     N = 1, 10, 100, 1000 (-quick: 1, 10), for podnet, raw netlink (IPv6
//     off as podnet, and on), the bridge + host-local CNI plugins through
//     libcni, and a bash script of ip/iptables commands;
//   - ipam: allocate+release churn with 1,000 addresses held, podnet's
//     pool (with its store and in memory) against host-local's allocator;
//   - nat: 1, 100, 1000 port forwards, podnet's PortForward against one
//     iptables exec per rule.
//
// Implementations are interleaved step by step (attach) or block by block
// (ipam, nat), so that drift and the other load on a shared machine hit all
// of them alike. Every topology is checked to carry traffic (pings and TCP
// connections, bounded) before it is timed and after each timed setup,
// and every sandbox is checked to be empty after each teardown.
//
// Safety: everything is built inside throwaway namespaces that stand in
// for the host; the host's links, routes and iptables are never touched.
// External programs (CNI plugins, iptables, bash) run with their process
// inside the sandbox. The process re-executes itself in a private mount
// namespace with a tmpfs on /run/netns and on /run/podnet, so named
// namespaces (the shell's `ip netns add`) and podnet's crash records never
// appear in the host's /run, and nothing outlives the process even if it
// is killed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"
)

type config struct {
	args     []string // as given, for the report
	quick    bool
	jsonPath string
	svgPath  string
	suites   map[string]bool
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage (as root, from the bench directory): go run . [-quick] [-json FILE] [-svg FILE] [-suites attach,ipam,nat]\n")
		fs.PrintDefaults()
	}
	c := &config{args: args}
	fs.BoolVar(&c.quick, "quick", false, "small sizes only (attach N = 1, 10; nat n = 1, 10; less ipam churn)")
	fs.StringVar(&c.jsonPath, "json", "", "write one JSON object per result and line to `FILE`")
	fs.StringVar(&c.svgPath, "svg", "", "write the attach suite's plot to `FILE` (SVG)")
	suites := fs.String("suites", strings.Join(suiteOrder, ","), "comma-separated `suites` to run")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c.suites = map[string]bool{}
	for _, s := range strings.Split(*suites, ",") {
		s = strings.TrimSpace(s)
		if indexOf(suiteOrder, s) == len(suiteOrder) {
			return nil, fmt.Errorf("unknown suite %q (have %s)", s, strings.Join(suiteOrder, ", "))
		}
		c.suites[s] = true
	}
	return c, nil
}

func main() {
	if _, err := parseFlags(os.Args[1:], os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: run as root (it creates network namespaces)")
		os.Exit(1)
	}
	code, reexeced, err := reexecPrivate()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if reexeced {
		os.Exit(code)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the child's main, inside the private mount namespace.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return 2
	}
	if err := preparePrivateMounts(); err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	// A signal cancels the run; what is built is then torn down.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench(ctx, cfg, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	return 0
}

func bench(ctx context.Context, cfg *config, stdout, stderr io.Writer) (err error) {
	start := time.Now()
	loadBefore := loadavg()
	progress := func(s string) { fmt.Fprintf(stderr, "[%6.1fs] %s\n", time.Since(start).Seconds(), s) }
	tmp, err := os.MkdirTemp("", "podnet-bench-")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, os.RemoveAll(tmp)) }()

	c := newCollector()
	env := defaultAttachEnv()
	env.tmp = tmp
	attachN, natN := []int{1, 10, 100, 1000}, []int{1, 100, 1000}
	if cfg.quick {
		attachN, natN = []int{1, 10}, []int{1, 10}
	}
	if cfg.suites["attach"] {
		progress("building the CNI reference plugins")
		if env.cni, err = buildCNIPlugins(ctx, tmp+"/cni-bin"); err != nil {
			return err
		}
		progress("attach: checking that every implementation's topology carries traffic")
		if err := preflightAttach(ctx, env); err != nil {
			return fmt.Errorf("preflight: %w", err)
		}
		if err := runAttachSuite(ctx, env, attachN, cfg.quick, c, progress); err != nil {
			return err
		}
	}
	if cfg.suites["ipam"] {
		if err := runIPAMSuite(ctx, tmp, cfg.quick, c, progress); err != nil {
			return fmt.Errorf("ipam: %w", err)
		}
	}
	if cfg.suites["nat"] {
		if err := runNATSuite(ctx, natN, cfg.quick, c, progress); err != nil {
			return fmt.Errorf("nat: %w", err)
		}
	}
	progress("done")

	rs := c.results()
	cmdline := strings.Join(append([]string{"cd bench && go run ."}, cfg.args...), " ")
	fmt.Fprintf(stdout, "## podnet benchmarks\n\n`%s` (%s)\n\n", cmdline, time.Since(start).Round(time.Second))
	for _, line := range machine(ctx, env) {
		fmt.Fprintf(stdout, "- %s\n", line)
	}
	fmt.Fprintf(stdout, "- load average (1, 5, 15 min; the machine is shared): %s at the start, %s at the end\n", loadBefore, loadavg())
	writeTable(stdout, rs, c)
	if cfg.jsonPath != "" {
		if err := writeFileWith(cfg.jsonPath, func(w io.Writer) error { return writeJSON(w, rs) }); err != nil {
			return err
		}
	}
	if cfg.svgPath != "" {
		title := "podnet attach/detach cost vs raw netlink, CNI plugins and shell"
		if err := writeFileWith(cfg.svgPath, func(w io.Writer) error { return writeSVG(w, rs, title) }); err != nil {
			return err
		}
	}
	return nil
}

func writeFileWith(path string, fn func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	return errors.Join(fn(f), f.Close())
}

// machine describes where the numbers come from.
func machine(ctx context.Context, env *attachEnv) []string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "unknown kernel"
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		kernel = cstr(u.Release[:])
	}
	lines := []string{
		fmt.Sprintf("machine: %d CPUs (nproc), %s, Linux %s, %s/%s", runtime.NumCPU(), cpu, kernel, runtime.GOOS, runtime.GOARCH),
		"toolchain: " + runtime.Version(),
	}
	if out, err := exec.CommandContext(ctx, "iptables", "--version").Output(); err == nil {
		lines = append(lines, "iptables: "+strings.TrimSpace(string(out)))
	}
	if out, err := exec.CommandContext(ctx, "ip", "-V").Output(); err == nil {
		lines = append(lines, "iproute2: "+strings.TrimSpace(string(out)))
	}
	if env.cni != nil {
		lines = append(lines, "CNI plugins: bridge + host-local "+env.cni.version+", driven through libcni")
	}
	return lines
}

// loadavg returns the first three fields of /proc/loadavg.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func cstr(b []int8) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}
