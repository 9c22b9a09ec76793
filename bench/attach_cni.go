package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const pluginsModule = "github.com/containernetworking/plugins"

// cniPlugins are the reference plugin binaries built for this run.
type cniPlugins struct {
	dir     string // holds bridge and host-local
	version string // of the plugins module they were built from
}

// buildCNIPlugins builds the bridge and host-local plugins at the version
// bench/go.mod pins into dir. It runs `go build` in the current
// directory, which must be inside the bench module.
func buildCNIPlugins(ctx context.Context, dir string) (*cniPlugins, error) {
	version := "(unknown version)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == pluginsModule {
				version = d.Version
			}
		}
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", dir+string(filepath.Separator),
		pluginsModule+"/plugins/main/bridge", pluginsModule+"/plugins/ipam/host-local")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build the CNI plugins (run from the bench directory): %w\n%s", err, out)
	}
	return &cniPlugins{dir: dir, version: version}, nil
}

// cniAttacher drives the reference plugins through libcni, as a container
// runtime does: it creates the namespace (as the raw floor does, with lo
// up), then ADD with a one-plugin list, bridge with host-local IPAM,
// isDefaultGateway and ipMasq; teardown is DEL, then closing the
// namespace. The plugins run with their process inside the sandbox (libcni
// called on a thread in it), so their iptables rules and sysctls land
// there. The bridge plugin creates the bridge on the first ADD and never
// deletes it; down deletes it with one netlink call.
type cniAttacher struct {
	sb      *sandbox
	env     *attachEnv
	cfg     *libcni.CNIConfig
	list    *libcni.NetworkConfigList
	scratch string
	nss     []netns.NsHandle
	rts     []*libcni.RuntimeConf
	addrs   []netip.Addr
}

func newCNIAttacher(sb *sandbox, env *attachEnv) (*cniAttacher, error) {
	scratch, err := os.MkdirTemp(env.tmp, "cni-")
	if err != nil {
		return nil, err
	}
	return &cniAttacher{sb: sb, env: env, scratch: scratch}, nil
}

// cniConfList is the network configuration: what a runtime would read
// from /etc/cni/net.d, with the state kept in the scratch directory.
func cniConfList(env *attachEnv, dataDir string) ([]byte, error) {
	return json.Marshal(map[string]any{
		"cniVersion": "1.0.0",
		"name":       "podnet-bench",
		"plugins": []any{map[string]any{
			"type":             "bridge",
			"bridge":           env.bridge,
			"isDefaultGateway": true,
			"ipMasq":           env.masq,
			"ipam": map[string]any{
				"type":    "host-local",
				"dataDir": dataDir,
				"ranges":  [][]map[string]string{{{"subnet": env.subnet.String(), "gateway": env.gw.String()}}},
			},
		}},
	})
}

func (c *cniAttacher) up(ctx context.Context) error {
	conf, err := cniConfList(c.env, filepath.Join(c.scratch, "ipam"))
	if err != nil {
		return err
	}
	if c.list, err = libcni.ConfListFromBytes(conf); err != nil {
		return err
	}
	c.cfg = libcni.NewCNIConfigWithCacheDir([]string{c.env.cni.dir}, filepath.Join(c.scratch, "cache"), nil)
	return nil
}

func (c *cniAttacher) attach(ctx context.Context, i int) error {
	ns, err := rawNewNS()
	if err != nil {
		return err
	}
	c.nss = append(c.nss, ns)
	c.rts = append(c.rts, nil)
	if err := rawLoUp(ns); err != nil {
		return err
	}
	rt := &libcni.RuntimeConf{
		ContainerID: "bench" + strconv.Itoa(i),
		NetNS:       fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(ns)),
		IfName:      "eth0",
	}
	var res *types100.Result
	err = c.sb.host.Do(func() error {
		r, err := c.cfg.AddNetworkList(ctx, c.list, rt)
		if err != nil {
			return err
		}
		res, err = types100.NewResultFromResult(r)
		return err
	})
	if err != nil {
		return err
	}
	c.rts[i] = rt
	if len(res.IPs) == 0 {
		return errors.New("ADD returned no address")
	}
	addr, ok := netip.AddrFromSlice(res.IPs[0].Address.IP)
	if !ok {
		return fmt.Errorf("ADD returned a bad address %v", res.IPs[0].Address)
	}
	c.addrs = append(c.addrs, addr.Unmap())
	return nil
}

func (c *cniAttacher) detach(ctx context.Context, i int) error {
	rt := c.rts[i]
	err := c.sb.host.Do(func() error { return c.cfg.DelNetworkList(ctx, c.list, rt) })
	c.rts[i] = nil
	c.nss[i].Close()
	c.nss[i] = -1
	return err
}

func (c *cniAttacher) down(ctx context.Context) error {
	h, err := netlink.NewHandleAt(netns.NsHandle(c.sb.host.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer h.Close()
	br, err := h.LinkByName(c.env.bridge)
	if err != nil {
		return err
	}
	return h.LinkDel(br)
}

func (c *cniAttacher) pods() []pod { return fdPods(c.addrs, c.nss) }

func (c *cniAttacher) close() error {
	closeNamespaces(c.nss)
	return os.RemoveAll(c.scratch)
}

// rawLoUp brings lo up in ns, as a runtime does for a new namespace.
func rawLoUp(ns netns.NsHandle) error {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := h.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 1}}); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return nil
}
