package podnet

import (
	"errors"
	"os"
	"strings"
)

// sysctlPath turns a net.* sysctl key ("net.ipv4.ip_forward" or
// "net/ipv4/ip_forward") into its /proc/sys path. Only net.* keys are
// accepted: they are the ones that belong to a network namespace.
func sysctlPath(key string) (string, error) {
	k := strings.ReplaceAll(key, "/", ".")
	if !strings.HasPrefix(k, "net.") {
		return "", invalid(ErrInvalidOption, "sysctl %q is not a net.* key", key)
	}
	parts := strings.Split(k, ".")
	for _, p := range parts {
		if p == "" || p == ".." || !validName(p) {
			return "", invalid(ErrInvalidOption, "sysctl key %q is malformed", key)
		}
	}
	return "/proc/sys/" + strings.Join(parts, "/"), nil
}

// linkSysctl returns the key of a per-interface sysctl, such as
// net.ipv6.conf.IFNAME.disable_ipv6. Interface names may contain '.', so
// this builds the path form.
func linkSysctl(family, ifname, leaf string) string {
	return "net/" + family + "/conf/" + ifname + "/" + leaf
}

func readSysctl(key string) (string, error) {
	p, err := sysctlPath(key)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func writeSysctl(key, value string) error {
	p, err := sysctlPath(key)
	if err != nil {
		return err
	}
	if strings.ContainsAny(value, "\n\x00") {
		return invalid(ErrInvalidOption, "sysctl value %q contains a newline or NUL", value)
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	return errors.Join(err, f.Close())
}

// Sysctl reads a net.* sysctl inside the namespace, for example
// Sysctl("net.ipv4.ip_forward").
//
// Equivalent to: `ip netns exec NS sysctl -n KEY`
func (n *Namespace) Sysctl(key string) (string, error) {
	var v string
	err := n.Do(func() error {
		var err error
		v, err = readSysctl(key)
		return err
	})
	return v, opErr("read sysctl", "namespace", n.String(), err)
}

// SetSysctl writes a net.* sysctl inside the namespace and returns its
// previous value.
//
// Equivalent to: `ip netns exec NS sysctl -w KEY=VALUE`
func (n *Namespace) SetSysctl(key, value string) (old string, err error) {
	err = n.Do(func() error {
		var err error
		if old, err = readSysctl(key); err != nil {
			return err
		}
		if old == value {
			return nil
		}
		return writeSysctl(key, value)
	})
	return old, opErr("write sysctl", "namespace", n.String(), err)
}
