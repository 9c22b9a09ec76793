package plugin

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/podnet/podnet"
)

// setupRecheck bounds how long ADD trusts the setup marker.
const setupRecheck = 30 * time.Second

// ensureHostSetup makes sure of the network's settings in the host
// namespace: forwarding for the families of its subnets (isGateway, as the
// reference plugin) and the masquerade rules (ipMasq). Looking costs a
// thread switch per sysctl and an iptables-save per family, 2 to 3 ms in
// all, so ADD looks at most every setupRecheck: a marker file in the
// network's directory records when it last found everything in place, in
// which namespace, since which boot and for which configuration; any
// difference makes it look again. Something someone else undid (iptables
// -F, sysctl -w) thus comes back on the first ADD after at most
// setupRecheck, for the containers already attached too. The caller holds
// the network's lock.
func ensureHostSetup(ctx context.Context, host *podnet.Namespace, c *NetConf) error {
	if !c.IsGateway && !c.IPMasq {
		return nil
	}
	path := filepath.Join(c.networkDir(), "setup")
	want, err := setupMarker(host, c)
	if err != nil {
		return internal("identify the host namespace", err)
	}
	if st, err := os.Stat(path); err == nil && time.Since(st.ModTime()) < setupRecheck {
		if have, err := os.ReadFile(path); err == nil && string(have) == want {
			return nil
		}
	}
	if c.IsGateway {
		v4, v6 := false, false
		for _, s := range c.subnets() {
			v4, v6 = v4 || s.Addr().Is4(), v6 || s.Addr().Is6()
		}
		for _, f := range []struct {
			on  bool
			key string
		}{{v4, "net.ipv4.ip_forward"}, {v6, "net.ipv6.conf.all.forwarding"}} {
			if !f.on {
				continue
			}
			if _, err := host.SetSysctl(f.key, "1"); err != nil {
				return internal("turn forwarding on", err)
			}
		}
	}
	if c.IPMasq {
		if err := ensureMasquerade(ctx, host, c); err != nil {
			return err
		}
	}
	// A lost marker only costs a look next time: no fsync.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(want), 0o600); err == nil {
		_ = os.Rename(tmp, path)
	}
	return nil
}

// setupMarker describes what the marker vouches for: this boot, this host
// namespace and this configuration.
func setupMarker(host *podnet.Namespace, c *NetConf) (string, error) {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", err
	}
	var st unix.Stat_t
	if err := unix.Fstat(host.Fd(), &st); err != nil {
		return "", err
	}
	return fmt.Sprintf("boot %s\nnetns %d:%d\nbridge %s\ngateway %v\nmasquerade %v\nsubnets %v\n",
		strings.TrimSpace(string(boot)), st.Dev, st.Ino, c.Bridge, c.IsGateway, c.IPMasq, c.subnets()), nil
}

// forgetHostSetup drops the marker, so that the next ADD looks.
func forgetHostSetup(c *NetConf) {
	_ = os.Remove(filepath.Join(c.networkDir(), "setup"))
}
