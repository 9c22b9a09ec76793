package podnet

import (
	"context"
	"errors"
)

// Forwarding sysctls.
const (
	sysctlForwardV4 = "net.ipv4.ip_forward"
	sysctlForwardV6 = "net.ipv6.conf.all.forwarding"
)

// ForwardingSpec describes IP forwarding settings for a namespace. Its
// setters cannot fail; Create validates and reports every problem.
type ForwardingSpec struct {
	in     *Namespace
	v4, v6 *bool
	label  string
}

// NewForwarding describes forwarding settings; say which families with
// IPv4 and IPv6.
//
// Equivalent to: `sysctl -w net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1`
func NewForwarding() *ForwardingSpec { return &ForwardingSpec{} }

// In applies the settings in ns instead of the calling process's namespace.
func (s *ForwardingSpec) In(ns *Namespace) *ForwardingSpec { s.in = ns; return s }

// IPv4 turns IPv4 forwarding (net.ipv4.ip_forward) on or off.
func (s *ForwardingSpec) IPv4(on bool) *ForwardingSpec { s.v4 = &on; return s }

// IPv6 turns IPv6 forwarding (net.ipv6.conf.all.forwarding) on or off.
// Note that the kernel then also stops accepting router advertisements on
// interfaces whose accept_ra is 1.
func (s *ForwardingSpec) IPv6(on bool) *ForwardingSpec { s.v6 = &on; return s }

// Label sets the label recorded in the object's ownership mark.
func (s *ForwardingSpec) Label(label string) *ForwardingSpec { s.label = label; return s }

func (s *ForwardingSpec) validate() error {
	var errs []error
	if s.v4 == nil && s.v6 == nil {
		errs = append(errs, invalid(ErrInvalidOption, "neither IPv4 nor IPv6 forwarding was asked for"))
	}
	return errors.Join(append(errs, validateObjectLabel(s.label))...)
}

// Forwarding is IP forwarding set by podnet in a namespace. The caller must
// Close it.
//
// Objects of one process share the setting: the first Forwarding that
// changes a value remembers the old one, and the last one closed puts it
// back, unless someone else changed the value meanwhile, which is then
// kept. Two Forwardings of one process that want different values for the
// same family in the same namespace conflict (ErrInvalidOption).
type Forwarding struct {
	o *owner
}

// Create sets the requested forwarding values.
func (s *ForwardingSpec) Create(ctx context.Context) (*Forwarding, error) {
	if err := s.validate(); err != nil {
		return nil, opErr("create", "forwarding", "", err)
	}
	o, err := build(ctx, s.in, "forwarding", "", s.label, IptablesAuto, false, func(ctx context.Context, o *owner) error {
		for _, kv := range []struct {
			key string
			on  *bool
		}{{sysctlForwardV4, s.v4}, {sysctlForwardV6, s.v6}} {
			if kv.on == nil {
				continue
			}
			v := "0"
			if *kv.on {
				v = "1"
			}
			if err := o.hold(kv.key, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, opErr("create", "forwarding", "", err)
	}
	return &Forwarding{o: o}, nil
}

// Namespace returns the namespace the settings apply to.
func (f *Forwarding) Namespace() *Namespace { return f.o.ns }

// Close puts back the values podnet changed (see Forwarding). It is
// idempotent; a namespace already deleted counts as success.
func (f *Forwarding) Close() error { return f.o.close() }
