package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/disk"

	"github.com/podnet/podnet/ipam"
)

// The ipam suite is bench/ipambench's workload run side by side: a /16
// with ipamAllocated addresses held, then churn, each op allocating an
// address for a new owner and releasing it by owner. podnet's store makes
// every change durable (fdatasync) before it returns; host-local writes one
// file per address and never syncs, so the store comparison favours
// host-local on durability.
const (
	ipamSubnet    = "10.0.0.0/16"
	ipamAllocated = 1000
)

// churner is one allocator under test.
type churner interface {
	alloc(owner string) error
	release(owner string) error
	close() error
}

type ipamKind struct {
	impl string
	note string
	make func(dir string) (churner, error)
}

var ipamKinds = []ipamKind{
	{"podnet-store", "ipam.Open: pool with its durable store (fdatasync per change)", newPodnetChurner(true)},
	{"podnet-mem", "ipam.New: pool in memory (what a Network uses without Store)", newPodnetChurner(false)},
	{"host-local", "host-local's allocator with its disk store, as the plugin runs it", newHostLocalChurner},
}

type podnetChurner struct{ p *ipam.Pool }

func newPodnetChurner(persistent bool) func(string) (churner, error) {
	return func(dir string) (churner, error) {
		prefix := netip.MustParsePrefix(ipamSubnet)
		var p *ipam.Pool
		var err error
		if persistent {
			p, err = ipam.Open(filepath.Join(dir, "net"), prefix)
		} else {
			p, err = ipam.New(prefix)
		}
		return podnetChurner{p}, err
	}
}

func (c podnetChurner) alloc(owner string) error {
	_, err := c.p.AllocateFor(owner + "/eth0")
	return err
}

func (c podnetChurner) release(owner string) error {
	addrs, err := c.p.ReleaseOwner(owner + "/eth0")
	if err == nil && len(addrs) != 1 {
		err = fmt.Errorf("released %d addresses, want 1", len(addrs))
	}
	return err
}

func (c podnetChurner) close() error { return c.p.Close() }

type hostLocalChurner struct {
	a     *allocator.IPAllocator
	store *disk.Store
}

func newHostLocalChurner(dir string) (churner, error) {
	st, err := disk.New("net", dir)
	if err != nil {
		return nil, err
	}
	_, sn, err := net.ParseCIDR(ipamSubnet)
	if err != nil {
		return nil, err
	}
	rs := allocator.RangeSet{allocator.Range{Subnet: types.IPNet(*sn)}}
	if err := rs.Canonicalize(); err != nil {
		return nil, err
	}
	return hostLocalChurner{allocator.NewIPAllocator(&rs, st, 0), st}, nil
}

func (c hostLocalChurner) alloc(owner string) error {
	_, err := c.a.Get(owner, "eth0", nil)
	return err
}

func (c hostLocalChurner) release(owner string) error { return c.a.Release(owner, "eth0") }

func (c hostLocalChurner) close() error { return c.store.Close() }

// runIPAMSuite fills every allocator to ipamAllocated, then runs blocks of
// churn round-robin across them (the order rotating per round) and records
// the median over blocks of the cost of one allocate+release pair.
func runIPAMSuite(ctx context.Context, tmp string, quick bool, c *collector, progress func(string)) (err error) {
	rounds, block := 40, 50
	if quick {
		rounds, block = 8, 25
	}
	cs := make([]churner, len(ipamKinds))
	defer func() {
		for _, ch := range cs {
			if ch != nil {
				err = errors.Join(err, ch.close())
			}
		}
	}()
	for k, kind := range ipamKinds {
		c.note("ipam", kind.impl, "alloc+release", kind.note)
		dir, err := os.MkdirTemp(tmp, "ipam-"+kind.impl+"-")
		if err != nil {
			return err
		}
		if cs[k], err = kind.make(dir); err != nil {
			return fmt.Errorf("%s: %w", kind.impl, err)
		}
		for i := 0; i < ipamAllocated; i++ {
			if err := cs[k].alloc(fmt.Sprintf("fill-%d", i)); err != nil {
				return fmt.Errorf("%s: fill: %w", kind.impl, err)
			}
		}
	}
	progress(fmt.Sprintf("ipam: %d rounds of %d alloc+release each", rounds, block))
	next := 0
	for r := 0; r < rounds; r++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		for k := range cs {
			j := (k + r) % len(cs)
			t0 := time.Now()
			for b := 0; b < block; b++ {
				owner := fmt.Sprintf("churn-%d", next)
				next++
				if err := cs[j].alloc(owner); err != nil {
					return fmt.Errorf("%s: %w", ipamKinds[j].impl, err)
				}
				if err := cs[j].release(owner); err != nil {
					return fmt.Errorf("%s: %w", ipamKinds[j].impl, err)
				}
			}
			c.add(key{"ipam", ipamKinds[j].impl, ipamAllocated, "alloc+release"}, perOp(time.Since(t0), block))
		}
	}
	return nil
}
