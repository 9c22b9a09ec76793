package podnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/podnet/podnet/ipam"
	"golang.org/x/sys/unix"
)

// Object is a kernel object or record that carries a podnet ownership mark.
type Object struct {
	Kind      string // "namespace", "link", "iptables-rule", "address"
	Name      string // namespace name, link name, rule text, address
	Namespace string // where it lives: a namespace name or path; "" for the namespace Sweep ran in
	Store     string // for an address: the pool store directory
	Mark      Mark   // who made it
	Alive     bool   // whether the owner process is still running

	backend IptablesBackend // for an iptables rule
	fam     int             // for an iptables rule
	rec     *stateRecord    // for a crash record
}

func (o Object) String() string {
	where := ""
	if o.Namespace != "" {
		where = " in " + o.Namespace
	}
	if o.Store != "" {
		where = " in store " + o.Store
	}
	state := "dead"
	if o.Alive {
		state = "alive"
	}
	return fmt.Sprintf("%s %s%s (owner %s, %s, label %q)", o.Kind, o.Name, where, o.Mark.Owner, state, o.Mark.Label)
}

// SweepOption configures List and Sweep.
type SweepOption func(*sweepOptions)

type sweepOptions struct {
	in     *Namespace
	dryRun bool
	stores []storeSweeper
	named  string // only named namespaces with this prefix ("" for all)
}

// SweepIn makes List and Sweep look in ns (and the named namespaces) rather
// than the calling process's namespace.
func SweepIn(ns *Namespace) SweepOption { return func(o *sweepOptions) { o.in = ns } }

// SweepNamed limits the named namespaces List and Sweep search (their
// records, links and rules) to those whose names start with prefix. By
// default they search every one under NetnsDir. A tool or test harness
// that names its namespaces with a prefix of its own can then leave other
// users' namespaces alone, dead owners' objects included.
func SweepNamed(prefix string) SweepOption { return func(o *sweepOptions) { o.named = prefix } }

// DryRun makes Sweep report what it would remove without removing it.
func DryRun() SweepOption { return func(o *sweepOptions) { o.dryRun = true } }

// storeSweeper lists and releases the allocations of a pool store.
type storeSweeper interface {
	list() ([]Object, error)
	release(o Object) error
}

// SweepStore makes List and Sweep also look at the pool store in dir (or,
// if dir holds no store, at the stores up to three levels below it, as
// NetworkSpec.Store and TopologySpec.Store make them): allocations whose owner key is a podnet
// ownership mark. Allocations under other keys (such as a CNI runtime's
// container IDs) are left alone; those are for ipam.Pool.GC.
func SweepStore(dir string) SweepOption {
	return func(o *sweepOptions) { o.stores = append(o.stores, poolStore(dir)) }
}

type poolStore string

func (ps poolStore) dirs() []string {
	var out []string
	var walk func(dir string, depth int)
	walk = func(dir string, depth int) {
		if _, err := os.Lstat(filepath.Join(dir, "journal")); err == nil {
			out = append(out, dir)
			return
		}
		if depth == 0 {
			return
		}
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if e.IsDir() { // never follows symbolic links
				walk(filepath.Join(dir, e.Name()), depth-1)
			}
		}
	}
	walk(string(ps), 3)
	return out
}

func (ps poolStore) list() ([]Object, error) {
	var out []Object
	var errs []error
	for _, dir := range ps.dirs() {
		p, err := ipam.OpenExisting(dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for a := range p.All() {
			if m, ok := ParseMark(a.Owner); ok {
				out = append(out, Object{Kind: "address", Name: a.Addr.String(), Store: dir, Mark: m, Alive: m.Owner.Alive()})
			}
		}
		errs = append(errs, p.Close())
	}
	return out, errors.Join(errs...)
}

func (ps poolStore) release(o Object) error {
	if o.Kind != "address" || !strings.HasPrefix(o.Store, string(ps)) {
		return nil
	}
	p, err := ipam.OpenExisting(o.Store)
	if err != nil {
		return err
	}
	defer p.Close()
	a, err := netip.ParseAddr(o.Name)
	if err != nil {
		return err
	}
	if owner, ok := p.Owner(a); !ok || owner != o.Mark.String() {
		return nil // released or reallocated meanwhile
	}
	if err := p.Release(a); err != nil && !errors.Is(err, ipam.ErrNotAllocated) {
		return err
	}
	return nil
}

// List finds every object podnet marked: links in the namespace (the
// calling process's unless SweepIn), named namespaces with a podnet record
// and the links inside every named namespace, iptables rules, and
// allocations in the pool stores given with SweepStore.
func List(ctx context.Context, opts ...SweepOption) ([]Object, error) {
	o := sweepOptions{}
	for _, f := range opts {
		f(&o)
	}
	return list(ctx, &o)
}

func list(ctx context.Context, o *sweepOptions) ([]Object, error) {
	var out []Object
	var errs []error
	root, err := resolveNS(o.in)
	if err != nil {
		return nil, err
	}
	objs, err := listNS(ctx, root, "")
	out = append(out, objs...)
	errs = append(errs, err)

	entries, err := os.ReadDir(NetnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, o.named) {
			continue
		}
		if rec, err := os.ReadFile(filepath.Join(RecordDir, name)); err == nil {
			if m, ok := ParseMark(strings.TrimSpace(string(rec))); ok {
				out = append(out, Object{Kind: "namespace", Name: name, Mark: m, Alive: m.Owner.Alive()})
			}
		}
		ns, err := OpenNamespace(name)
		if err != nil {
			continue // not a namespace mount, or gone meanwhile
		}
		objs, err := listNS(ctx, ns, name)
		out = append(out, objs...)
		errs = append(errs, err, ns.Close())
	}
	// Records whose mount is gone (a crash between the two).
	recs, _ := os.ReadDir(RecordDir)
	for _, r := range recs {
		if !strings.HasPrefix(r.Name(), o.named) {
			continue
		}
		if _, err := os.Stat(filepath.Join(NetnsDir, r.Name())); errors.Is(err, os.ErrNotExist) {
			if rec, err := os.ReadFile(filepath.Join(RecordDir, r.Name())); err == nil {
				if m, ok := ParseMark(strings.TrimSpace(string(rec))); ok {
					out = append(out, Object{Kind: "record", Name: r.Name(), Mark: m, Alive: m.Owner.Alive()})
				}
			}
		}
	}
	for _, s := range o.stores {
		objs, err := s.list()
		out = append(out, objs...)
		errs = append(errs, err)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Namespace < out[j].Namespace })
	return out, errors.Join(errs...)
}

// listNS lists the marked links and iptables rules in ns.
func listNS(ctx context.Context, ns *Namespace, where string) ([]Object, error) {
	var out []Object
	links, err := ns.Links(ctx)
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if m, ok := ParseMark(l.Attrs().Alias); ok {
			out = append(out, Object{Kind: "link", Name: l.Attrs().Name, Namespace: where, Mark: m, Alive: m.Owner.Alive()})
		}
	}
	rules, err := listMarkedRules(ns, where)
	out = append(out, rules...)
	return out, err
}

// Sweep removes the objects of podnet processes that are gone (see List)
// and returns what it removed (with DryRun: what it would remove). It
// never touches an object whose owner is alive or that carries no podnet
// mark. It runs every removal and returns every error joined.
func Sweep(ctx context.Context, opts ...SweepOption) ([]Object, error) {
	o := sweepOptions{}
	for _, f := range opts {
		f(&o)
	}
	objs, err := list(ctx, &o)
	errs := []error{err}
	root, rerr := resolveNS(o.in)
	if rerr != nil {
		return nil, rerr
	}
	var removed []Object
	deadNS := map[string]bool{}
	for _, ob := range objs {
		if !ob.Alive && (ob.Kind == "namespace" || ob.Kind == "record") {
			deadNS[ob.Name] = true
		}
	}
	for _, ob := range objs {
		if ob.Alive {
			continue
		}
		if ob.Namespace != "" && deadNS[ob.Namespace] {
			// Goes with its namespace.
			removed = append(removed, ob)
			continue
		}
		if o.dryRun {
			removed = append(removed, ob)
			continue
		}
		var err error
		switch ob.Kind {
		case "namespace", "record":
			err = removeNamedNamespace(ob.Name)
		case "link":
			err = inNamespace(root, ob.Namespace, func(ns *Namespace) error {
				l, err := ns.h.LinkByName(ob.Name)
				if err != nil {
					if isGone(err) {
						return nil
					}
					return err
				}
				if l.Attrs().Alias != ob.Mark.String() {
					return nil // changed hands meanwhile
				}
				if err := ns.h.LinkDel(l); err != nil && !isGone(err) {
					return err
				}
				return nil
			})
		case "iptables-rule":
			err = inNamespace(root, ob.Namespace, func(ns *Namespace) error { return deleteMarkedRule(ns, ob) })
		case "sysctl-record", "nft-record":
			continue // after the rules, below
		default:
			for _, s := range o.stores {
				if e := s.release(ob); e != nil {
					err = errors.Join(err, e)
				}
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", ob, err))
			continue
		}
		removed = append(removed, ob)
	}
	// Records last: a table can only go once the rules in it are gone.
	for _, ob := range objs {
		if ob.Alive || ob.rec == nil || (ob.Namespace != "" && deadNS[ob.Namespace]) || o.dryRun {
			continue
		}
		if err := inNamespace(root, ob.Namespace, func(ns *Namespace) error { return undoRecord(ns, ob) }); err != nil {
			errs = append(errs, fmt.Errorf("undo %s: %w", ob, err))
			continue
		}
		removed = append(removed, ob)
	}
	return removed, errors.Join(errs...)
}

func inNamespace(root *Namespace, name string, fn func(*Namespace) error) error {
	if name == "" {
		release, err := root.acquire()
		if err != nil {
			return err
		}
		defer release()
		return fn(root)
	}
	ns, err := OpenNamespace(name)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	}
	defer ns.Close()
	release, err := ns.acquire()
	if err != nil {
		return err
	}
	defer release()
	return fn(ns)
}

// removeNamedNamespace unmounts and removes /run/netns/NAME and its record.
func removeNamedNamespace(name string) error {
	if err := ValidateNamespaceName(name); err != nil {
		return err
	}
	path := filepath.Join(NetnsDir, name)
	var errs []error
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := os.Remove(filepath.Join(RecordDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
