package plugin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/ipam"
)

// networkDir is where a network's stores and lock live:
// DATADIR/NETWORK.
func (c *NetConf) networkDir() string { return filepath.Join(c.DataDir, c.Name) }

// storeDir is the store of one range: DATADIR/NETWORK/SUBNET_START-END,
// the subnet's '/' written as '_'. The name holds the range, so that
// changing a range starts a new store rather than failing to open the old
// one; the gateway is recorded in the store, and changing it is an error.
func (c *NetConf) storeDir(r Range) string {
	return filepath.Join(c.networkDir(), strings.ReplaceAll(r.Subnet.String(), "/", "_")+"_"+r.String())
}

// poolOptions are the ipam options of r. The defaults of ipam and
// host-local agree (range: the whole subnet; gateway: the first address),
// so only what the configuration says explicitly is passed.
func poolOptions(r Range) []ipam.Option {
	var opts []ipam.Option
	if r.explicitRange {
		opts = append(opts, ipam.Range(r.Start, r.End))
	}
	if r.explicitGW {
		opts = append(opts, ipam.Gateway(r.Gateway))
	}
	return opts
}

// pools are the open stores of a configuration, indexed like RangeSets.
type pools [][]*ipam.Pool

// openPools opens the store of every range, creating it if needed (ADD).
// The caller must close them.
func openPools(c *NetConf) (pools, error) { return openStores(c, true) }

// openExistingPools is openPools for commands that only read or release:
// a store that was never created is left out (nil) rather than created.
func openExistingPools(c *NetConf) (pools, error) { return openStores(c, false) }

func openStores(c *NetConf, create bool) (pools, error) {
	ps := make(pools, len(c.RangeSets))
	for i, set := range c.RangeSets {
		ps[i] = make([]*ipam.Pool, len(set))
		for j, r := range set {
			dir := c.storeDir(r)
			if _, err := os.Lstat(filepath.Join(dir, "journal")); !create && errors.Is(err, os.ErrNotExist) {
				continue
			}
			p, err := ipam.Open(dir, r.Subnet, poolOptions(r)...)
			if err != nil {
				ps.close()
				return nil, storeError(fmt.Sprintf("open the address store of range %s", r), err)
			}
			ps[i][j] = p
		}
	}
	return ps, nil
}

// each calls fn for every open pool with its range.
func (ps pools) each(c *NetConf, fn func(r Range, p *ipam.Pool)) {
	for i, set := range ps {
		for j, p := range set {
			if p != nil {
				fn(c.RangeSets[i][j], p)
			}
		}
	}
}

func (ps pools) close() {
	for _, set := range ps {
		for _, p := range set {
			if p != nil {
				p.Close()
			}
		}
	}
}

// lockNetwork takes an exclusive lock on the network, across processes,
// and returns its release. ADD holds it while it sets up the bridge and
// the NAT rules, so that two plugins adding the first containers at once
// do not both try to create them.
func lockNetwork(c *NetConf) (unlock func(), err error) {
	dir := c.networkDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	fd, err := unix.Open(filepath.Join(dir, "lock"), unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the network lock: %w", err)
	}
	for {
		err = unix.Flock(fd, unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lock the network: %w", err)
	}
	return func() { unix.Close(fd) }, nil
}
