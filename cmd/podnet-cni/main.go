// Command podnet-cni is a CNI plugin that attaches containers to a Linux
// bridge, as the reference bridge plugin with host-local IPAM does and with
// the same configuration, built on podnet. It implements CNI spec versions
// 0.4.0, 1.0.0 and 1.1.0: ADD, DEL, CHECK, GC, STATUS and VERSION. See
// README.md for installing it and for the configuration it accepts.
package main

import (
	"context"
	"os"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/podnet/podnet/cmd/podnet-cni/internal/plugin"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == plugin.UnlinkArg {
		// A copy started by DEL to sit through the kernel's deletion of a
		// veth pair (see internal/plugin/unlink.go).
		os.Exit(plugin.UnlinkMain(os.Args[2:]))
	}
	p := &plugin.Plugin{Exe: "/proc/self/exe"}
	skel.PluginMainFuncs(p.Funcs(context.Background(), os.Stdout), plugin.Versions, "podnet-cni: a CNI bridge plugin built on podnet")
}
