package cnitest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/cmd/podnet-cni/internal/plugin"
)

// Copy is a detached podnet-cni copy: a process a DEL started to sit
// through the kernel's deletion of a veth pair after the pair was gone
// (see plugin.UnlinkArg).
type Copy struct {
	PID  int
	Link string // the host veth end it deletes
}

// Detached returns the detached podnet-cni copies running on the machine.
func Detached() ([]Copy, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var copies []Copy
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid <= 0 {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue // exited meanwhile
		}
		// podnet-cni UnlinkArg INDEX NAME ALIAS
		if args := bytes.Split(b, []byte{0}); len(args) > 3 && string(args[1]) == plugin.UnlinkArg {
			copies = append(copies, Copy{PID: pid, Link: string(args[3])})
		}
	}
	return copies, nil
}

// waitBound bounds WaitDetached: a copy lives about 20 ms.
const waitBound = 10 * time.Second

// WaitDetached waits until no detached podnet-cni copy runs (see
// Detached), so that what they leave the kernel to do does not weigh on
// what is measured next. It gives up when ctx is done or after 10 s.
func WaitDetached(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, waitBound)
	defer cancel()
	for {
		copies, err := Detached()
		if err != nil || len(copies) == 0 {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("detached podnet-cni copies %v still running: %w", copies, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

// Gone checks that a DEL of c removed its interface: c has no interface
// c.IfName any more, and host has no veth left but the want others.
func Gone(ctx context.Context, host *podnet.Namespace, c *Container, want int) error {
	if _, err := c.NS.Handle().LinkByName(c.IfName); err == nil {
		return fmt.Errorf("container %s still has %s", c.ID, c.IfName)
	}
	links, err := host.Links(ctx)
	if err != nil {
		return err
	}
	n := 0
	for _, l := range links {
		if l.Type() == "veth" && l.Attrs().MasterIndex != 0 {
			n++
		}
	}
	if n != want {
		return fmt.Errorf("%d veth ends on a bridge in the host namespace, want %d", n, want)
	}
	return nil
}
