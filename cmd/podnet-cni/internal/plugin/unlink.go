package plugin

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet"
)

// Deleting a veth pair takes the kernel 15-19 ms on the machine we
// measured (bench/cnicompare, kernel-del), nearly all of it after the
// pair is gone: the request first removes both ends from their namespaces
// and from the bridge, frees their names, flushes their addresses and
// routes and announces it (RTM_DELLINK), and then, before it returns,
// waits for every CPU to pass an RCU grace period (rcu_barrier in
// netdev_run_todo) so that the devices' memory can be freed. Nothing a
// runtime can observe changes during that wait; the reference bridge
// plugin makes the runtime sit through it on every DEL.
//
// With Plugin.Exe set, DEL hands the request to a detached copy of the
// plugin (Exe run with UnlinkArg, in its own session, with no stdio) and
// returns as soon as the kernel announces the host end's removal: by then
// both ends are gone and their names are free. The copy sits through the
// wait and exits; nobody waits for it. If the copy cannot be started,
// exits before the announcement or does not deliver it within
// unlinkTimeout, DEL deletes the pair itself, as without Exe.

// UnlinkArg is the first argument that makes the plugin binary delete
// one veth pair (see UnlinkMain) instead of running a CNI command.
const UnlinkArg = "--podnet-cni-unlink"

// unlinkTimeout bounds how long DEL waits for the detached copy.
const unlinkTimeout = 2 * time.Second

// UnlinkMain is the detached copy's work: args are the host end's index,
// name and alias as DEL read them. It deletes the link only if it is still
// that one (a veth with that name and alias), and returns the process's
// exit code: 0 if the link is gone, 1 if it is not.
func UnlinkMain(args []string) int {
	if len(args) != 3 {
		return 2
	}
	idx, err := strconv.Atoi(args[0])
	if err != nil || idx <= 0 {
		return 2
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return 1
	}
	defer h.Close()
	if err := unlinkIfSame(h, idx, args[1], args[2]); err != nil {
		return 1
	}
	return 0
}

// unlinkIfSame deletes the link idx if it is a veth named name with alias
// alias. A link already gone counts as deleted.
func unlinkIfSame(h *netlink.Handle, idx int, name, alias string) error {
	l, err := h.LinkByIndex(idx)
	if isGone(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if a := l.Attrs(); l.Type() != "veth" || a.Name != name || a.Alias != alias {
		return fmt.Errorf("link %d is no longer %s (now %s %q, alias %q)", idx, name, l.Type(), a.Name, a.Alias)
	}
	return delLink(h, l)
}

// delLink deletes l; a link already gone counts as deleted.
func delLink(h *netlink.Handle, l netlink.Link) error {
	if err := h.LinkDel(l); err != nil && !isGone(err) {
		return err
	}
	return nil
}

// isGone reports whether err says the link does not exist. ENODEV comes
// when the kernel removed the pair meanwhile, with the container's
// namespace (which it tears down asynchronously).
func isGone(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, podnet.ErrNotFound) || errors.Is(err, unix.ENODEV)
}

// unlink deletes the link l in host: through a detached copy of p.Exe
// when detach is set and p.Exe is, in-process otherwise or when the copy
// fails. It returns once the link is gone, and reports whether the copy
// deleted it.
func (p *Plugin) unlink(host *podnet.Namespace, l netlink.Link, detach bool) (detached bool, err error) {
	if !detach || p.Exe == "" {
		return false, delLink(host.Handle(), l)
	}
	a := l.Attrs()
	ok, derr := p.unlinkDetached(host, a.Index, a.Name, a.Alias)
	if ok {
		return true, nil
	}
	if derr != nil {
		fmt.Fprintf(os.Stderr, "podnet-cni: deleting %s in-process: %v\n", a.Name, derr)
	}
	// Time has passed: look again before deleting.
	return false, unlinkIfSame(host.Handle(), a.Index, a.Name, a.Alias)
}

// unlinkDetached starts p.Exe to delete the link and waits for the
// kernel's announcement that it is gone. ok is false if the caller must
// delete it.
func (p *Plugin) unlinkDetached(host *podnet.Namespace, idx int, name, alias string) (ok bool, err error) {
	exe := p.Exe
	var sock *nl.NetlinkSocket
	if err := p.inHost(host, func() error {
		var err error
		sock, err = nl.Subscribe(unix.NETLINK_ROUTE, unix.RTNLGRP_LINK)
		return err
	}); err != nil {
		return false, fmt.Errorf("subscribe to link events: %w", err)
	}
	defer sock.Close()
	gone := func() bool {
		_, err := host.Handle().LinkByIndex(idx)
		return isGone(err)
	}
	// Subscribed first, then looked: a deletion in between is not missed.
	if gone() {
		return true, nil
	}

	cmd := &exec.Cmd{
		Path: exe,
		Args: []string{exe, UnlinkArg, strconv.Itoa(idx), name, alias},
		Env:  []string{},
		// Its own session: signals for the runtime's process group do
		// not reach it. No stdio: the runtime reads the plugin's stdout to
		// its end, which must not wait for the copy.
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if err := p.inHost(host, cmd.Start); err != nil {
		return false, fmt.Errorf("start %s: %w", exe, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	deadline := time.Now().Add(unlinkTimeout)
	if err := sock.SetReceiveTimeout(&unix.Timeval{Usec: 5000}); err != nil {
		return false, err
	}
	for time.Now().Before(deadline) {
		msgs, _, err := sock.Receive()
		switch {
		case err == nil:
			for _, m := range msgs {
				if m.Header.Type == unix.RTM_DELLINK && len(m.Data) >= unix.SizeofIfInfomsg &&
					int(nl.DeserializeIfInfomsg(m.Data).Index) == idx {
					return true, nil
				}
			}
			continue
		case errors.Is(err, unix.EAGAIN):
		case errors.Is(err, unix.ENOBUFS):
			// Events were dropped, maybe ours: look.
		default:
			return false, fmt.Errorf("read link events: %w", err)
		}
		if gone() {
			return true, nil
		}
		select {
		case werr := <-exited:
			// It ended: look once more, as it may have deleted the link
			// since the look above.
			if gone() {
				return true, nil
			}
			return false, fmt.Errorf("%s exited (%v) leaving the link", exe, werr)
		default:
		}
	}
	return false, fmt.Errorf("%s did not delete the link within %v", exe, unlinkTimeout)
}
