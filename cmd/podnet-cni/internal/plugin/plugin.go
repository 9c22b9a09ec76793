// Package plugin implements podnet-cni, a CNI plugin that does what the
// reference bridge plugin with host-local IPAM does, built on podnet's
// primitives and its durable address store, in one process.
//
// The commands are methods of Plugin, which tests call directly with a
// sandbox namespace standing in for the host; Funcs adapts them to skel
// for the binary.
package plugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/ipam"
)

// Versions are the CNI spec versions podnet-cni implements.
var Versions = version.PluginSupports("0.4.0", "1.0.0", "1.1.0")

// Plugin-specific error codes (the spec leaves 100 and up to plugins).
const (
	// CodeAttached: ADD of an attachment (container ID and interface) that
	// exists already, or of an interface name the container already has.
	CodeAttached uint = 100
	// CodeCheckFailed: CHECK found the attachment other than prevResult
	// describes it.
	CodeCheckFailed uint = 101
)

// Plugin runs the CNI commands.
type Plugin struct {
	// Host is the runtime's namespace, where the bridge, the host ends of
	// the veth pairs and the NAT rules live. Nil means the process's own
	// namespace, which is right for the binary: runtimes run plugins in
	// theirs. The caller keeps ownership.
	Host *podnet.Namespace
	// Exe, if set, is the plugin's own executable: DEL runs it with
	// UnlinkArg to delete the veth pair in a detached process and returns
	// as soon as the pair is gone, without waiting for the kernel to free
	// it (see unlink.go). The binary sets it to /proc/self/exe. Empty: DEL
	// deletes the pair itself.
	Exe string
}

// inHost runs fn in the host namespace: directly if that is the process's
// own (Host unset), else on a thread inside it.
func (p *Plugin) inHost(host *podnet.Namespace, fn func() error) error {
	if p.Host == nil {
		return fn()
	}
	return host.Do(fn)
}

// Funcs adapts the commands to skel. ADD writes its result to stdout.
func (p *Plugin) Funcs(ctx context.Context, stdout io.Writer) skel.CNIFuncs {
	return skel.CNIFuncs{
		Add: func(args *skel.CmdArgs) error {
			res, err := p.Add(ctx, args)
			if err != nil {
				return err
			}
			return res.PrintTo(stdout)
		},
		Del:    func(args *skel.CmdArgs) error { return p.Del(ctx, args) },
		Check:  func(args *skel.CmdArgs) error { return p.Check(ctx, args) },
		GC:     func(args *skel.CmdArgs) error { return p.GC(ctx, args) },
		Status: func(args *skel.CmdArgs) error { return p.Status(ctx, args) },
	}
}

// host returns the host namespace and a function that releases it.
func (p *Plugin) host() (*podnet.Namespace, func(), error) {
	if p.Host != nil {
		return p.Host, func() {}, nil
	}
	ns, err := podnet.CurrentNamespace()
	if err != nil {
		return nil, nil, fmt.Errorf("open the runtime's namespace: %w", err)
	}
	return ns, func() { ns.Close() }, nil
}

// ownerKey is the key addresses are allocated under: one attachment.
func ownerKey(containerID, ifname string) string { return containerID + "/" + ifname }

// hostVethName is the name of an attachment's veth end on the bridge. It
// is derived from the attachment, so that DEL finds it without the
// container's namespace (which may be gone) and a second ADD collides.
func hostVethName(network, containerID, ifname string) string {
	h := sha256.Sum256([]byte(network + "\x00" + containerID + "\x00" + ifname))
	return "pnc" + hex.EncodeToString(h[:6])
}

// aliasPrefix starts the alias of the links podnet-cni leaves behind. It
// replaces podnet's ownership mark, which names the creating process: the
// links outlive the plugin process, and podnet's Sweep would take them for
// a dead process's leftovers.
const aliasPrefix = "podnet-cni:"

// vethAlias is the alias of an attachment's host veth end, read back by DEL
// (to check the link is ours) and GC (to find stale ones).
func vethAlias(network, containerID, ifname string) string {
	a := aliasPrefix + network + "/" + containerID + "/" + ifname
	if len(a) > 255 {
		a = a[:255] // IFALIASZ; GC then cannot parse it, DEL still matches
	}
	return a
}

func bridgeAlias(network string) string { return aliasPrefix + network }

// vethLabel is the label of the podnet mark a host veth end carries until
// ADD replaces the mark with vethAlias. An ADD that dies in between leaves
// the mark, which DEL recognises by this label (and Sweep by the dead
// owner).
func vethLabel(hostName string) string { return aliasPrefix + hostName }

// netnsError turns a failure to open CNI_NETNS into a CNI error.
func netnsError(path string, err error) error {
	switch {
	case errors.Is(err, podnet.ErrNotFound):
		return types.NewError(types.ErrUnknownContainer, fmt.Sprintf("network namespace %s does not exist", path), err.Error())
	case errors.Is(err, podnet.ErrInvalidOption):
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_NETNS: %s is not a network namespace", path), err.Error())
	}
	return types.NewError(types.ErrInternal, fmt.Sprintf("open network namespace %s", path), err.Error())
}

// storeError turns an address store failure into a CNI error.
func storeError(what string, err error) error {
	switch {
	case errors.Is(err, ipam.ErrInvalid):
		return types.NewError(types.ErrInvalidNetworkConfig, what+": the store does not match the configuration", err.Error())
	case errors.Is(err, ipam.ErrExhausted):
		return types.NewError(types.ErrInternal, what+": no free address", err.Error())
	}
	return types.NewError(types.ErrIOFailure, what, err.Error())
}

// internal wraps a failure that has no CNI code of its own.
func internal(what string, err error) error {
	var te *types.Error
	if errors.As(err, &te) {
		return err
	}
	return types.NewError(types.ErrInternal, what, err.Error())
}

// withUndo adds the errors of a failed rollback to err's details.
func withUndo(err, undoErr error) error {
	if undoErr == nil {
		return err
	}
	var te *types.Error
	if errors.As(err, &te) {
		e := *te
		if e.Details != "" {
			e.Details += "; "
		}
		e.Details += "rollback: " + undoErr.Error()
		return &e
	}
	return errors.Join(err, fmt.Errorf("rollback: %w", undoErr))
}
