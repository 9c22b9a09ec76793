package plugin

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/podnet/podnet"
)

// Masquerading (ipMasq) is per network, not per container as in the
// reference plugin: one podnet rule per subnet of the network,
//
//	-s SUBNET ! -o BRIDGE -j MASQUERADE   (in podnet's PODNET-POSTROUTING)
//
// installed under the key cni.NETWORK.SUBNET by the first ADD and kept,
// like the bridge, while the network is in use. Per container, every ADD
// and DEL would rewrite the NAT table (an iptables-save and an
// iptables-restore each) and the table would grow with the containers;
// per network, ADD only reads it to see the rule is there, and DEL leaves
// it alone. GC removes the rules of a network with no attachment left.
// What is translated is the same: traffic from the containers' addresses
// that leaves the host by another interface than the bridge.
//
// Looking costs an iptables-save per family, about 2 ms, so ADD looks at
// most every setupRecheck per network (see ensureHostSetup). CHECK always
// looks.

// subnets returns the distinct subnets of the configuration.
func (c *NetConf) subnets() []netip.Prefix {
	var out []netip.Prefix
	for _, set := range c.RangeSets {
		for _, r := range set {
			if !slices.Contains(out, r.Subnet) {
				out = append(out, r.Subnet)
			}
		}
	}
	return out
}

// masqKey names the masquerade rule of a network's subnet.
func masqKey(network string, subnet netip.Prefix) string {
	s := strings.NewReplacer("/", "-", ":", ".").Replace(subnet.String())
	return "cni." + network + "." + s
}

func masquerade(host *podnet.Namespace, c *NetConf, subnet netip.Prefix) *podnet.MasqueradeSpec {
	return podnet.NewMasquerade(subnet).In(host).ExceptOut(c.Bridge).Key(masqKey(c.Name, subnet))
}

// ensureMasquerade installs the network's masquerade rules that are
// missing.
func ensureMasquerade(ctx context.Context, host *podnet.Namespace, c *NetConf) error {
	for _, s := range c.subnets() {
		m, err := masquerade(host, c, s).Create(ctx)
		if err != nil {
			return internal(fmt.Sprintf("masquerade %s", s), err)
		}
		m.Close() // releases the Go object; a keyed rule stays
	}
	return nil
}

// checkMasquerade reports a missing masquerade rule of the network.
func checkMasquerade(ctx context.Context, host *podnet.Namespace, c *NetConf) error {
	for _, s := range c.subnets() {
		ok, err := masquerade(host, c, s).Installed(ctx)
		if err != nil {
			return internal(fmt.Sprintf("look up the masquerade rule of %s", s), err)
		}
		if !ok {
			return types.NewError(CodeCheckFailed, fmt.Sprintf("the masquerade rule of %s (key %s) is missing", s, masqKey(c.Name, s)), "")
		}
	}
	return nil
}

// removeMasquerade removes the masquerade rule of subnet.
func removeMasquerade(ctx context.Context, host *podnet.Namespace, c *NetConf, subnet netip.Prefix) error {
	if err := masquerade(host, c, subnet).Remove(ctx); err != nil {
		return fmt.Errorf("remove the masquerade rule of %s: %w", subnet, err)
	}
	return nil
}
