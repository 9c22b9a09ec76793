package plugin

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/ipam"
)

// Del detaches the container: it deletes the attachment's veth pair (the
// container's interface goes with it) and releases its addresses. It needs
// neither the container's namespace nor prevResult, so it works, and
// succeeds, when the namespace is gone or the attachment was deleted
// already. The bridge and the network's NAT rule stay.
//
// With p.Exe set (and not waitForKernel), the pair is deleted by a
// detached copy of the plugin and Del returns once the kernel has removed
// both ends, without waiting for it to free them (see unlink.go).
//
// Equivalent to what the reference bridge plugin with host-local IPAM does
// on DEL.
func (p *Plugin) Del(ctx context.Context, args *skel.CmdArgs) error {
	c, err := ParseConfig(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	host, release, err := p.host()
	if err != nil {
		return internal("open the host namespace", err)
	}
	defer release()
	// Open the stores while the veth pair goes. Addresses are released
	// only once the interface is gone.
	type stores struct {
		ps  pools
		err error
	}
	ch := make(chan stores, 1)
	go func() {
		ps, err := openExistingPools(c)
		ch <- stores{ps, err}
	}()
	delErr := p.deleteHostVeth(host, c, args.ContainerID, args.IfName, !c.WaitForKernel)
	o := <-ch
	if o.err == nil {
		defer o.ps.close()
	}
	if delErr != nil {
		// The addresses may still be on the interface: keep them for the
		// runtime's next DEL.
		return internal("delete the attachment's veth pair", delErr)
	}
	if o.err != nil {
		return o.err
	}
	var errs []error
	owner := ownerKey(args.ContainerID, args.IfName)
	o.ps.each(c, func(r Range, p *ipam.Pool) {
		if _, err := p.ReleaseOwner(owner); err != nil {
			errs = append(errs, fmt.Errorf("release the addresses of range %s: %w", r, err))
		}
	})
	if err := errors.Join(errs...); err != nil {
		return internal("delete the attachment", err)
	}
	return nil
}

// deleteHostVeth deletes the host end of an attachment's veth pair if it
// is there and is podnet-cni's (its alias says so, or it still carries the
// podnet mark of an ADD that did not finish), detached when detach is set
// (see unlink.go). It returns once the pair is gone.
//
// Equivalent to: `ip link del HOSTVETH`
func (p *Plugin) deleteHostVeth(host *podnet.Namespace, c *NetConf, containerID, ifname string, detach bool) error {
	name := hostVethName(c.Name, containerID, ifname)
	l, err := host.Handle().LinkByName(name)
	if err != nil {
		if isGone(err) {
			return nil
		}
		return fmt.Errorf("look up %s: %w", name, err)
	}
	want := vethAlias(c.Name, containerID, ifname)
	alias := l.Attrs().Alias
	m, isMark := podnet.ParseMark(alias)
	if l.Type() != "veth" || alias != want && !(isMark && m.Label == vethLabel(name)) {
		// Not ours: leave it, and say so.
		fmt.Fprintf(os.Stderr, "podnet-cni: not deleting %s: it is a %s with alias %q, not this attachment's veth\n", name, l.Type(), alias)
		return nil
	}
	if _, err := p.unlink(host, l, detach); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// GC releases the addresses of every attachment of the network not in
// cni.dev/valid-attachments, deletes the host veth ends of such
// attachments still present, and removes the network's masquerade rule of
// a subnet left without addresses. It runs every step and reports every
// error. An absent list is an error, not an empty one: it would release
// everything.
func (p *Plugin) GC(ctx context.Context, args *skel.CmdArgs) error {
	c, err := ParseConfig(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	if !c.HasValidAttachments {
		return invalidConf("GC needs cni.dev/valid-attachments", "")
	}
	host, release, err := p.host()
	if err != nil {
		return internal("open the host namespace", err)
	}
	defer release()
	var errs []error
	if err := p.gcVeths(ctx, host, c); err != nil {
		errs = append(errs, err)
	}
	ps, err := openExistingPools(c)
	if err != nil {
		return err
	}
	defer ps.close()
	alive := func(owner string) bool {
		// Keys that are not "ID/ifname" are not podnet-cni's: keep them.
		return strings.Count(owner, "/") != 1 || c.ValidAttachments[owner]
	}
	unlock, err := lockNetwork(c)
	if err != nil {
		return types.NewError(types.ErrIOFailure, "lock the network", err.Error())
	}
	defer unlock()
	used := map[netip.Prefix]int{}
	ps.each(c, func(r Range, p *ipam.Pool) {
		if _, err := p.GC(alive); err != nil {
			errs = append(errs, fmt.Errorf("release stale addresses of range %s: %w", r, err))
		}
		used[r.Subnet] += p.Used()
	})
	if c.IPMasq {
		forgetHostSetup(c)
		for _, s := range c.subnets() {
			if used[s] == 0 {
				if err := removeMasquerade(ctx, host, c, s); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return internal("garbage-collect the network", err)
	}
	return nil
}

// gcVeths deletes the host veth ends of the network's attachments that are
// not valid. Normally there are none: a veth pair dies with the container's
// namespace.
func (p *Plugin) gcVeths(ctx context.Context, host *podnet.Namespace, c *NetConf) error {
	links, err := host.Links(ctx)
	if err != nil {
		return err
	}
	prefix := aliasPrefix + c.Name + "/"
	var errs []error
	for _, l := range links {
		rest, ok := strings.CutPrefix(l.Attrs().Alias, prefix)
		if !ok || l.Type() != "veth" {
			continue
		}
		id, ifname, ok := strings.Cut(rest, "/")
		if !ok || c.ValidAttachments[ownerKey(id, ifname)] {
			continue
		}
		if err := p.deleteHostVeth(host, c, id, ifname, false); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Status reports whether ADD can succeed: every range set must have a free
// address (else CNI error 50) and every existing store must be readable.
func (p *Plugin) Status(ctx context.Context, args *skel.CmdArgs) error {
	c, err := ParseConfig(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	ps, err := openExistingPools(c)
	if err != nil {
		var te *types.Error
		if errors.As(err, &te) {
			return types.NewError(types.ErrPluginNotAvailable, te.Msg, te.Details)
		}
		return err
	}
	defer ps.close()
	for i, set := range c.RangeSets {
		free := false
		for j := range set {
			p := ps[i][j]
			free = free || p == nil || p.Free() > 0
		}
		if !free {
			return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("no free address in range set %d", i), "")
		}
	}
	return nil
}
