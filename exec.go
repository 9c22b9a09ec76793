package podnet

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
)

// Cmd is an external command that runs inside a namespace. It embeds
// *exec.Cmd, so Stdin, Stdout, Env, Dir and the rest are set as usual; its
// Start, Run, Output and CombinedOutput start the process on a thread
// switched into the namespace, so the process (and all it starts) lives
// there. Arguments go straight to the program: no shell is involved.
type Cmd struct {
	*exec.Cmd
	ns *Namespace
}

// Command returns a Cmd that runs the program name with args inside the
// namespace.
//
// Equivalent to: `ip netns exec NS NAME ARGS...`
func (n *Namespace) Command(name string, args ...string) *Cmd {
	return &Cmd{Cmd: exec.Command(name, args...), ns: n}
}

// CommandContext is Command with a context that kills the process when done.
func (n *Namespace) CommandContext(ctx context.Context, name string, args ...string) *Cmd {
	return &Cmd{Cmd: exec.CommandContext(ctx, name, args...), ns: n}
}

// Start starts the process inside the namespace.
func (c *Cmd) Start() error {
	return c.ns.Do(func() error { return c.Cmd.Start() })
}

// Run starts the process inside the namespace and waits for it.
func (c *Cmd) Run() error {
	if err := c.Start(); err != nil {
		return err
	}
	return c.Wait()
}

// Output runs the process and returns its standard output. On an
// *exec.ExitError the standard error is kept in its Stderr field.
func (c *Cmd) Output() ([]byte, error) {
	if c.Stdout != nil {
		return nil, errors.New("podnet: Stdout already set")
	}
	var stdout, stderr bytes.Buffer
	c.Stdout = &stdout
	captureErr := c.Stderr == nil
	if captureErr {
		c.Stderr = &stderr
	}
	err := c.Run()
	var ee *exec.ExitError
	if err != nil && captureErr && errors.As(err, &ee) {
		ee.Stderr = stderr.Bytes()
	}
	return stdout.Bytes(), err
}

// CombinedOutput runs the process and returns its standard output and
// standard error together.
func (c *Cmd) CombinedOutput() ([]byte, error) {
	if c.Stdout != nil || c.Stderr != nil {
		return nil, errors.New("podnet: Stdout or Stderr already set")
	}
	var b bytes.Buffer
	c.Stdout, c.Stderr = &b, &b
	err := c.Run()
	return b.Bytes(), err
}
