// Command podnet lists and removes what podnet left behind.
//
//	podnet ls      [-netns NAME] [-named PREFIX] [-store DIR]...   list podnet objects and their owners
//	podnet sweep   [-n] [-netns NAME] [-named PREFIX] [-store DIR]...  remove those whose owner is gone
//
// Every kernel object podnet creates carries an ownership mark naming the
// process that made it (pid and start time). `ls` shows each object with its
// owner and whether that process is still alive; `sweep` removes the objects
// of dead owners (with -n it only says what it would remove). Objects of
// live processes, and objects podnet did not make, are never touched.
//
// Exit status: 0 on success, 1 if listing or removing failed, 2 on bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/podnet/podnet"
)

type stringList []string

func (s *stringList) String() string     { return fmt.Sprint(*s) }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: podnet <command> [flags]

commands:
  ls      list podnet objects (namespaces, links, iptables rules, pool
          allocations) with their owner and whether the owner is alive
  sweep   remove the objects whose owner process is gone

flags:
  -netns NAME   look in the named network namespace instead of this one
                (named namespaces under /run/netns are always searched)
  -named PREFIX search only the named namespaces whose names start with
                PREFIX (default: all of them)
  -store DIR    also look at the pool store in DIR (repeatable)
  -n            with sweep: only print what would be removed
`)
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	cmd := args[0]
	switch cmd {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return 0
	case "ls", "sweep":
	default:
		fmt.Fprintf(stderr, "podnet: unknown command %q\n", cmd)
		usage(stderr)
		return 2
	}
	fs := flag.NewFlagSet("podnet "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(stderr) }
	netns := fs.String("netns", "", "named network namespace to look in")
	dry := fs.Bool("n", false, "dry run: print what sweep would remove")
	named := fs.String("named", "", "search only named namespaces with this prefix")
	var stores stringList
	fs.Var(&stores, "store", "pool store directory (repeatable)")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "podnet %s: unexpected arguments %q\n", cmd, fs.Args())
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var opts []podnet.SweepOption
	if *netns != "" {
		ns, err := podnet.OpenNamespace(*netns)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer ns.Close()
		opts = append(opts, podnet.SweepIn(ns))
	}
	if *named != "" {
		opts = append(opts, podnet.SweepNamed(*named))
	}
	for _, dir := range stores {
		opts = append(opts, podnet.SweepStore(dir))
	}
	if cmd == "ls" {
		objs, err := podnet.List(ctx, opts...)
		printObjects(stdout, objs)
		if err != nil {
			fmt.Fprintln(stderr, "podnet ls:", err)
			return 1
		}
		return 0
	}
	if *dry {
		opts = append(opts, podnet.DryRun())
	}
	removed, err := podnet.Sweep(ctx, opts...)
	verb := "removed"
	if *dry {
		verb = "would remove"
	}
	for _, o := range removed {
		fmt.Fprintf(stdout, "%s %s\n", verb, o)
	}
	fmt.Fprintf(stdout, "%s %d object(s)\n", verb, len(removed))
	if err != nil {
		fmt.Fprintln(stderr, "podnet sweep:", err)
		return 1
	}
	return 0
}

func printObjects(w io.Writer, objs []podnet.Object) {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tNAME\tNAMESPACE\tOWNER PID\tALIVE\tLABEL")
	for _, o := range objs {
		where := o.Namespace
		if where == "" {
			where = "-"
		}
		alive := "no"
		if o.Alive {
			alive = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", o.Kind, o.Name, where, o.Mark.Owner.PID, alive, o.Mark.Label)
	}
	tw.Flush()
}
