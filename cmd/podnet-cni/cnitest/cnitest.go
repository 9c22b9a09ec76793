// Package cnitest runs CNI plugin binaries through libcni the way a
// container runtime does, but inside a sandbox namespace that stands in
// for the host: every plugin process starts in the sandbox, so the bridges,
// veth ends and NAT rules it makes land there and go with it. It provides
// containers (named namespaces), an "internet" namespace behind the
// sandbox, and a comparison of a Result with the kernel's state. It is
// shared by podnet-cni's tests and the comparison with the reference
// plugins in the bench module.
package cnitest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/podnet/podnet"
	"github.com/podnet/podnet/podnettest"
)

// Build compiles the Go main package pkg with `go build -o dir/name pkg`,
// run in workdir (so that pkg resolves in workdir's module), and returns
// the binary's path. It builds static binaries (CGO_ENABLED=0), as the
// CNI plugin releases are: they start faster.
func Build(dir, name, pkg, workdir string) (string, error) {
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = workdir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w: %s", pkg, err, b)
	}
	return out, nil
}

// Env is a container runtime's view of CNI inside a sandbox namespace.
type Env struct {
	Host    *podnet.Namespace // the sandbox: the plugins' host namespace
	CNI     *libcni.CNIConfig // finds plugins in the bin dirs; caches in a temp dir
	DataDir string            // an empty directory for ipam.dataDir
	binDirs []string
}

// NewEnv makes an Env in a fresh sandbox whose plugins are found in
// binDirs. Everything goes when the test ends.
func NewEnv(t testing.TB, binDirs ...string) *Env {
	t.Helper()
	return &Env{
		Host:    podnettest.Sandbox(t),
		CNI:     newCNI(binDirs, t.TempDir()),
		DataDir: t.TempDir(),
		binDirs: binDirs,
	}
}

// newCNI returns a libcni that is safe for concurrent use: given its Exec
// rather than making it on first use.
func newCNI(binDirs []string, cacheDir string) *libcni.CNIConfig {
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
	return libcni.NewCNIConfigWithCacheDir(binDirs, cacheDir, exec)
}

// ConfList builds a configuration list of one plugin.
func ConfList(name, cniVersion string, plugin map[string]any) (*libcni.NetworkConfigList, error) {
	b, err := json.Marshal(map[string]any{"cniVersion": cniVersion, "name": name, "plugins": []any{plugin}})
	if err != nil {
		return nil, err
	}
	return libcni.NetworkConfFromBytes(b)
}

// Container is a named network namespace standing for a container.
type Container struct {
	NS     *podnet.Namespace
	ID     string
	IfName string
	// CapabilityArgs and Args, if set, are what the runtime passes with
	// the container: capability arguments ("ips", "mac": runtimeConfig
	// for plugins that declare the capability) and CNI_ARGS pairs.
	CapabilityArgs map[string]any
	Args           [][2]string
}

// Container makes a container, deleted when the test ends.
func (e *Env) Container(t testing.TB, id string) *Container {
	t.Helper()
	return &Container{NS: podnettest.NamedNamespace(t, "cnitest-"), ID: id, IfName: "eth0"}
}

// RuntimeConf is the container's CNI invocation parameters.
func (c *Container) RuntimeConf() *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: c.ID, NetNS: c.NS.Path(), IfName: c.IfName, CapabilityArgs: c.CapabilityArgs, Args: c.Args}
}

// do runs fn on a thread in the sandbox, so that the plugin processes it
// starts are in the sandbox.
func (e *Env) do(fn func() error) error { return e.Host.Do(fn) }

// Add runs ADD for c and returns the result in the current version.
func (e *Env) Add(ctx context.Context, list *libcni.NetworkConfigList, c *Container) (*current.Result, error) {
	var res types.Result
	err := e.do(func() error {
		var err error
		res, err = e.CNI.AddNetworkList(ctx, list, c.RuntimeConf())
		return err
	})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

// Check runs CHECK for c with the cached result of its ADD.
func (e *Env) Check(ctx context.Context, list *libcni.NetworkConfigList, c *Container) error {
	return e.do(func() error { return e.CNI.CheckNetworkList(ctx, list, c.RuntimeConf()) })
}

// Del runs DEL for c.
func (e *Env) Del(ctx context.Context, list *libcni.NetworkConfigList, c *Container) error {
	return e.do(func() error { return e.CNI.DelNetworkList(ctx, list, c.RuntimeConf()) })
}

// GC runs GC with the given valid attachments. It uses a libcni with an
// empty cache, so that libcni itself deletes nothing: what is released is
// the plugins' doing.
func (e *Env) GC(ctx context.Context, list *libcni.NetworkConfigList, valid []types.GCAttachment) error {
	cni := newCNI(e.binDirs, filepath.Join(e.DataDir, "empty-cache"))
	return e.do(func() error { return cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: valid}) })
}

// Status runs STATUS.
func (e *Env) Status(ctx context.Context, list *libcni.NetworkConfigList) error {
	return e.do(func() error { return e.CNI.GetStatusNetworkList(ctx, list) })
}

// Version runs VERSION on the plugin binary named pluginType.
func (e *Env) Version(ctx context.Context, pluginType string) (version.PluginInfo, error) {
	var info version.PluginInfo
	err := e.do(func() error {
		var err error
		info, err = e.CNI.GetVersionInfo(ctx, pluginType)
		return err
	})
	return info, err
}

// Internet is a namespace behind the sandbox standing for the internet:
// it has no route to the containers' subnets, so a container reaches it
// only through masquerading.
type Internet struct {
	NS        *podnet.Namespace
	Addr4     netip.Addr // the internet's address
	Addr6     netip.Addr
	HostAddr4 netip.Addr // the sandbox's address on the link, which masquerading uses
	HostAddr6 netip.Addr
}

// Internet links a new namespace to the sandbox: 203.0.113.1/24 and
// 2001:db8:5::1/64 on its side, 203.0.113.2/24 and 2001:db8:5::2/64 on the
// sandbox's "uplink".
func (e *Env) Internet(t testing.TB) *Internet {
	t.Helper()
	in := &Internet{NS: podnettest.Namespace(t),
		Addr4: netip.MustParseAddr("203.0.113.1"), HostAddr4: netip.MustParseAddr("203.0.113.2"),
		Addr6: netip.MustParseAddr("2001:db8:5::1"), HostAddr6: netip.MustParseAddr("2001:db8:5::2")}
	v, err := podnet.NewVethPair("uplink").In(e.Host).Address(netip.PrefixFrom(in.HostAddr4, 24), netip.PrefixFrom(in.HostAddr6, 64)).
		Peer("eth0", in.NS).PeerAddress(netip.PrefixFrom(in.Addr4, 24), netip.PrefixFrom(in.Addr6, 64)).Create(context.Background())
	if err != nil {
		t.Fatalf("cnitest: internet: %v", err)
	}
	t.Cleanup(func() { v.Close() })
	in.serve(t)
	return in
}

// serve runs a TCP server on port 80 of both addresses that writes the
// client's address and closes the connection, until the test ends.
func (in *Internet) serve(t testing.TB) {
	for _, a := range []netip.Addr{in.Addr4, in.Addr6} {
		l, err := in.NS.Listen(context.Background(), "tcp", netip.AddrPortFrom(a, 80).String())
		if err != nil {
			t.Fatalf("cnitest: listen: %v", err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
				_, _ = io.WriteString(c, host)
				c.Close()
			}
		}()
	}
}

// SeenFrom connects from ns to the internet's address dst and returns the
// source address the internet saw.
func (in *Internet) SeenFrom(ctx context.Context, ns *podnet.Namespace, dst netip.Addr) (netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := ns.Dial(ctx, "tcp", netip.AddrPortFrom(dst, 80).String())
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		return netip.Addr{}, err
	}
	return netip.ParseAddr(string(b))
}

// State is what the kernel shows of an attachment inside its container,
// in a form that compares across plugins: global addresses and the routes
// of the main table through the interface, sorted.
type State struct {
	Addrs  []netip.Prefix
	Routes []string // "DST via GW" ("default" for a default route)
	MTU    int
}

// Observe reads the state of c's interface.
func Observe(ctx context.Context, c *Container) (State, error) {
	var s State
	addrs, err := c.NS.Addresses(ctx, c.IfName)
	if err != nil {
		return s, err
	}
	for _, p := range addrs {
		if !p.Addr().IsLinkLocalUnicast() {
			s.Addrs = append(s.Addrs, p)
		}
	}
	slices.SortFunc(s.Addrs, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	routes, err := c.NS.Routes(ctx, 0)
	if err != nil {
		return s, err
	}
	for _, r := range routes {
		if r.Dev != c.IfName {
			continue
		}
		s.Routes = append(s.Routes, routeString(r.Dst, r.Gateway))
	}
	slices.Sort(s.Routes)
	l, err := c.NS.Handle().LinkByName(c.IfName)
	if err != nil {
		return s, err
	}
	s.MTU = l.Attrs().MTU
	return s, nil
}

func routeString(dst netip.Prefix, gw netip.Addr) string {
	s := "default"
	if dst.IsValid() && dst.Bits() > 0 {
		s = dst.String()
	} else if dst.IsValid() && dst.Addr().Is6() || !dst.IsValid() && gw.Is6() {
		s = "default6"
	}
	if gw.IsValid() {
		s += " via " + gw.String()
	}
	return s
}

// CheckResult compares an ADD result with the kernel: the bridge, host
// and container interfaces exist with the MACs given, the container's
// global addresses are exactly the result's, each address's gateway is on
// the bridge (when wantGateway) and every route of the result is
// installed, through the result's gateway of its family if it names none.
func CheckResult(ctx context.Context, host *podnet.Namespace, c *Container, res *current.Result, wantGateway bool) error {
	if len(res.Interfaces) != 3 {
		return fmt.Errorf("result has %d interfaces, want bridge, host veth and container: %v", len(res.Interfaces), res.Interfaces)
	}
	br, hv, cv := res.Interfaces[0], res.Interfaces[1], res.Interfaces[2]
	for _, i := range []struct {
		iface *current.Interface
		ns    *podnet.Namespace
		kind  string
	}{{br, host, "bridge"}, {hv, host, "veth"}, {cv, c.NS, "veth"}} {
		l, err := i.ns.Handle().LinkByName(i.iface.Name)
		if err != nil {
			return fmt.Errorf("result interface %s: %w", i.iface.Name, err)
		}
		if l.Type() != i.kind {
			return fmt.Errorf("result interface %s is a %s, want %s", i.iface.Name, l.Type(), i.kind)
		}
		if i.iface != br && l.Attrs().HardwareAddr.String() != i.iface.Mac {
			return fmt.Errorf("result interface %s has MAC %s, kernel %s", i.iface.Name, i.iface.Mac, l.Attrs().HardwareAddr)
		}
	}
	if cv.Name != c.IfName || cv.Sandbox != c.NS.Path() {
		return fmt.Errorf("container interface in result is %s in %q, want %s in %q", cv.Name, cv.Sandbox, c.IfName, c.NS.Path())
	}
	st, err := Observe(ctx, c)
	if err != nil {
		return err
	}
	var want []netip.Prefix
	gws := map[bool]netip.Addr{}
	brAddrs, err := host.Addresses(ctx, br.Name)
	if err != nil {
		return err
	}
	for _, ipc := range res.IPs {
		if ipc.Interface == nil || *ipc.Interface != 2 {
			return fmt.Errorf("result address %v is not on the container's interface", ipc)
		}
		p := toPrefix(ipc.Address)
		want = append(want, p)
		gw, _ := netip.AddrFromSlice(ipc.Gateway)
		gw = gw.Unmap()
		if !gw.IsValid() {
			return fmt.Errorf("result address %v has no gateway", ipc)
		}
		if _, ok := gws[gw.Is4()]; !ok {
			gws[gw.Is4()] = gw
		}
		if wantGateway && !slices.Contains(brAddrs, netip.PrefixFrom(gw, p.Bits())) {
			return fmt.Errorf("gateway %s/%d is not on bridge %s (it has %v)", gw, p.Bits(), br.Name, brAddrs)
		}
	}
	slices.SortFunc(want, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	if !slices.Equal(want, st.Addrs) {
		return fmt.Errorf("container addresses are %v, result says %v", st.Addrs, want)
	}
	for _, r := range res.Routes {
		dst := toPrefix(r.Dst)
		gw, _ := netip.AddrFromSlice(r.GW)
		gw = gw.Unmap()
		if !gw.IsValid() {
			gw = gws[dst.Addr().Is4()]
		}
		if s := routeString(dst, gw); !slices.Contains(st.Routes, s) {
			return fmt.Errorf("result route %s is not installed (routes: %s)", s, strings.Join(st.Routes, "; "))
		}
	}
	return nil
}

func toPrefix(n net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

// Code returns the code of the CNI error in err's chain, if there is one.
func Code(err error) (uint, bool) {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code, true
	}
	return 0, false
}
