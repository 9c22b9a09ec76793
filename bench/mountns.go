package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// The bench runs in a private mount namespace of its own, with a tmpfs on
// /run/netns and one on /run/podnet. The shell implementation's `ip netns add` then makes its
// namespaces there rather than in the host's /run/netns (which other
// engineers' before/after snapshots look at), and whatever the bench
// leaves behind, even when it is killed, goes away with the mount
// namespace when the process exits.

// envPrivate marks the re-executed child that runs in the private mount
// namespace.
const envPrivate = "PODNET_BENCH_PRIVATE_MNTNS"

// reexecPrivate runs this program again, with the same arguments, in a
// new private mount namespace, and returns the child's exit code. It
// returns reexeced false when the process already is that child.
func reexecPrivate() (code int, reexeced bool, err error) {
	if os.Getenv(envPrivate) == "1" {
		return 0, false, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return 0, true, err
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(os.Environ(), envPrivate+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// Go makes / recursively private in the child after the unshare, as
	// unshare(1) does, so no mount made there propagates back.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return 0, true, fmt.Errorf("re-execute in a private mount namespace: %w", err)
	}
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), true, nil
	}
	return 0, true, err
}

// preparePrivateMounts checks that the process is in a mount namespace of
// its own and mounts a tmpfs on /run/netns there.
func preparePrivateMounts() error {
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return err
	}
	parent, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", os.Getppid()))
	if err != nil {
		return err
	}
	if self == parent {
		return fmt.Errorf("%s is set but the process shares its parent's mount namespace; unset it", envPrivate)
	}
	// iproute2 creates /run/netns itself on the first `ip netns add`; an
	// empty directory is no network state.
	// podnet keeps its crash records under /run/podnet: private too, so
	// that a killed run leaves none in the host's /run.
	for _, dir := range []string{"/run/netns", "/run/podnet"} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := unix.Mount("podnet-bench", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0755,size=16m"); err != nil {
			return fmt.Errorf("mount a private tmpfs on %s: %w", dir, err)
		}
	}
	return nil
}
