package podnet

import (
	"context"
	"errors"
)

// setupNAT turns on forwarding and masquerading for the network as asked.
func (nw *Network) setupNAT(ctx context.Context, s *NetworkSpec) error {
	switch {
	case s.masq:
		return nw.EnableMasquerade(ctx)
	case s.forwarding:
		return nw.EnableForwarding(ctx)
	}
	return nil
}

// EnableForwarding turns IP forwarding on in the bridge's namespace for the
// network's families and installs the network's BridgeFirewall: traffic
// from and to its subnets is accepted even under a FORWARD policy of DROP,
// and traffic between it and podnet's other networks is dropped until
// Allow. Close undoes both (forwarding goes back to its old value). Calling
// it again is a no-op.
func (nw *Network) EnableForwarding(ctx context.Context) error {
	nw.natMu.Lock()
	defer nw.natMu.Unlock()
	return opErr("enable forwarding on", "network", nw.name, nw.enableForwardingLocked(ctx))
}

func (nw *Network) enableForwardingLocked(ctx context.Context) error {
	if nw.closed.Load() {
		return ErrClosed
	}
	if nw.firewall != nil {
		return nil
	}
	var v4, v6 bool
	for _, p := range nw.Subnets() {
		v4, v6 = v4 || p.Addr().Is4(), v6 || p.Addr().Is6()
	}
	fs := NewForwarding().In(nw.ns).Label(nw.label)
	if v4 {
		fs.IPv4(true)
	}
	if v6 {
		fs.IPv6(true)
	}
	f, err := fs.Create(ctx)
	if err != nil {
		return err
	}
	fw, err := NewBridgeFirewall(nw.name, nw.Subnets()...).In(nw.ns).Label(nw.label).Create(ctx)
	if err != nil {
		return errors.Join(err, f.Close())
	}
	nw.undo = append(nw.undo, f.Close, fw.Close)
	nw.firewall = fw
	return nil
}

// EnableMasquerade turns forwarding on (see EnableForwarding) and
// masquerades traffic from the network's subnets that leaves through any
// interface other than the bridge. Close removes the rules. Calling it
// again is a no-op.
//
// Equivalent to: `iptables -t nat -A POSTROUTING -s SUBNET ! -o BRIDGE -j MASQUERADE`
// (in podnet's own chain, with an ownership comment).
func (nw *Network) EnableMasquerade(ctx context.Context) error {
	nw.natMu.Lock()
	defer nw.natMu.Unlock()
	err := nw.enableForwardingLocked(ctx)
	if err == nil && !nw.masq {
		for _, p := range nw.Subnets() {
			var m *Masquerade
			m, err = NewMasquerade(p).In(nw.ns).ExceptOut(nw.name).Label(nw.label).Create(ctx)
			if err != nil {
				break
			}
			nw.undo = append(nw.undo, m.Close)
		}
		nw.masq = err == nil
	}
	return opErr("enable masquerade on", "network", nw.name, err)
}

// Allow lets this network and other exchange traffic through the bridges'
// namespace, which their firewalls otherwise forbid. Both networks need
// forwarding on.
func (nw *Network) Allow(ctx context.Context, other *Network) error {
	nw.natMu.Lock()
	fw := nw.firewall
	nw.natMu.Unlock()
	if fw == nil || other == nil {
		return opErr("allow", "network", nw.name, invalid(ErrInvalidOption, "both networks need forwarding (EnableForwarding or Masquerade)"))
	}
	return opErr("allow", "network", nw.name, fw.Allow(ctx, other.name))
}
