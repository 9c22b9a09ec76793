package main

import (
	"context"
	"errors"

	"github.com/podnet/podnet"
)

// podnetAttacher is the library under test: NewNetwork(...).Masquerade()
// for the network, NewAnonymousNamespace + Network.Attach per namespace.
// With batch, teardown is Network.Close alone (one group delete of all the
// attachments' links) instead of Attachment.Close one by one.
type podnetAttacher struct {
	sb    *sandbox
	env   *attachEnv
	batch bool
	nw    *podnet.Network
	nss   []*podnet.Namespace
	atts  []*podnet.Attachment
}

func newPodnetAttacher(sb *sandbox, env *attachEnv, batch bool) *podnetAttacher {
	return &podnetAttacher{sb: sb, env: env, batch: batch}
}

func (p *podnetAttacher) up(ctx context.Context) error {
	spec := podnet.NewNetwork(p.env.bridge, p.env.subnet).In(p.sb.host)
	if p.env.masq {
		spec.Masquerade()
	}
	nw, err := spec.Create(ctx)
	p.nw = nw
	return err
}

func (p *podnetAttacher) attach(ctx context.Context, i int) error {
	ns, err := podnet.NewAnonymousNamespace().Create(ctx)
	if err != nil {
		return err
	}
	p.nss = append(p.nss, ns)
	a, err := p.nw.Attach(ctx, ns)
	if err != nil {
		return err
	}
	p.atts = append(p.atts, a)
	return nil
}

func (p *podnetAttacher) detach(ctx context.Context, i int) error {
	if p.batch {
		return nil // Network.Close does it all in down
	}
	err := errors.Join(p.atts[i].Close(), p.nss[i].Close())
	p.atts[i], p.nss[i] = nil, nil
	return err
}

func (p *podnetAttacher) down(ctx context.Context) error {
	err := p.nw.Close()
	for i, ns := range p.nss {
		if ns != nil {
			err = errors.Join(err, ns.Close())
			p.nss[i] = nil
		}
	}
	return err
}

func (p *podnetAttacher) pods() []pod {
	out := make([]pod, len(p.atts))
	for i, a := range p.atts {
		addr, _ := a.Addr(4)
		out[i] = pod{addr: addr, ns: p.nss[i]}
	}
	return out
}

func (p *podnetAttacher) close() error {
	var errs []error
	if p.nw != nil {
		errs = append(errs, p.nw.Close())
	}
	for _, ns := range p.nss {
		if ns != nil {
			errs = append(errs, ns.Close())
		}
	}
	return errors.Join(errs...)
}
