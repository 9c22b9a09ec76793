package podnet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Sweeping iptables rules, nf_tables tables and sysctls left by dead
// processes. Rules are found by the ownership mark in their comment;
// tables and sysctls by the crash records podnet writes before changing
// them (record.go).

var allUnits = []*chainUnit{unitDNAT, unitPostrouting, unitForward, unitInput}

// sweepBackends returns the iptables backends that have state in ns: nft
// when its binaries exist, legacy when the namespace has legacy tables
// (never instantiating them by looking).
func sweepBackends(ns *Namespace) []IptablesBackend {
	var out []IptablesBackend
	if _, err := iptablesProgram(IptablesNFT, 4, "-save"); err == nil {
		out = append(out, IptablesNFT)
	}
	if _, err := iptablesProgram(IptablesLegacy, 4, "-save"); err == nil {
		has := false
		_ = onThreadIn(ns.fd, func() error {
			for _, f := range []string{"/proc/thread-self/net/ip_tables_names", "/proc/thread-self/net/ip6_tables_names"} {
				if b, err := os.ReadFile(f); err == nil && len(strings.TrimSpace(string(b))) > 0 {
					has = true
				}
			}
			return nil
		})
		if has {
			out = append(out, IptablesLegacy)
		}
	}
	return out
}

// listMarkedRules lists the rules in podnet's chains of ns that carry an
// ownership mark, and the crash records of ns.
func listMarkedRules(ns *Namespace, where string) ([]Object, error) {
	if _, err := iptablesProgram(IptablesNFT, 4, "-save"); err != nil {
		if _, err := iptablesProgram(IptablesLegacy, 4, "-save"); err != nil {
			return listRecords(ns, where) // no iptables on this machine: no rules
		}
	}
	st, err := pinState(ns)
	if err != nil {
		return nil, err
	}
	defer unpinState(st)
	ctx, cancel := context.WithTimeout(context.Background(), iptablesTimeout)
	defer cancel()
	var out []Object
	var errs []error
	for _, b := range sweepBackends(ns) {
		for _, fam := range []int{4, 6} {
			ts, err := st.save(ctx, ns, b, fam)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for tn, t := range ts {
				for _, r := range t.rules {
					m, ok := ParseMark(r.comment())
					if !ok || !isPodnetChain(r.chain) {
						continue
					}
					out = append(out, Object{Kind: "iptables-rule", Name: fmt.Sprintf("%s IPv%d %s: -A %s %s", b, fam, tn, r.chain, r.spec),
						Namespace: where, Mark: m, Alive: m.Owner.Alive(), backend: b, fam: fam})
				}
			}
		}
	}
	recs, err := listRecords(ns, where)
	return append(out, recs...), errors.Join(append(errs, err)...)
}

func listRecords(ns *Namespace, where string) ([]Object, error) {
	key, err := namespaceKey(ns)
	if err != nil {
		return nil, err
	}
	recs, err := readRecords(key)
	var out []Object
	for _, r := range recs {
		out = append(out, Object{Kind: r.kind + "-record", Name: r.id, Namespace: where, Mark: r.mark, Alive: r.mark.Owner.Alive(), rec: &r})
	}
	return out, err
}

// deleteMarkedRule removes every rule of o's owner object (all rules that
// carry o's mark, and the object's own chains) in one batch, then podnet's
// chains and jumps if nothing else uses them.
func deleteMarkedRule(ns *Namespace, o Object) error {
	st, err := pinState(ns)
	if err != nil {
		return err
	}
	defer unpinState(st)
	st.mu.Lock()
	defer st.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), iptablesTimeout)
	defer cancel()
	mark := o.Mark.String()
	ts, err := st.save(ctx, ns, o.backend, o.fam)
	if err != nil {
		return err
	}
	var chains []ownChain
	for tn, t := range ts {
		for _, r := range t.rules {
			if r.comment() == mark && strings.HasPrefix(r.target(), "PODNET-PF-") {
				chains = append(chains, ownChain{table: tn, name: r.target()})
			}
		}
	}
	return st.removeLocked(ctx, ns, o.backend, o.fam, removal{mark: mark, chains: chains, units: allUnits})
}

// undoRecord undoes what a dead owner's crash record says it changed: puts
// a sysctl back (if nobody changed it since) or deletes an nf_tables table
// it created (if the table is empty).
func undoRecord(ns *Namespace, o Object) error {
	key, err := namespaceKey(ns)
	if err != nil {
		return err
	}
	r := o.rec
	switch r.kind {
	case "sysctl":
		if len(r.lines) >= 2 {
			orig, value := r.lines[0], r.lines[1]
			err = onThreadIn(ns.fd, func() error {
				cur, err := readSysctl(r.id)
				if err != nil {
					if errors.Is(err, os.ErrNotExist) {
						return nil // its interface is gone
					}
					return err
				}
				if cur != value {
					return nil // changed by someone else since: theirs stays
				}
				return writeSysctl(r.id, orig)
			})
		}
	case "nft":
		var fam int
		var table string
		if _, perr := fmt.Sscanf(strings.Replace(r.id, "/", " ", 1), "%d %s", &fam, &table); perr != nil {
			break
		}
		if chains, ok := builtinChains[table]; ok {
			// Refused by the kernel (and kept) unless the table is empty.
			if derr := nftDeleteTableIfEmpty(ns, fam, table, chains); derr != nil && !isGone(derr) {
				return nil // still in use: keep the record for a later sweep
			}
		}
	}
	if err == nil {
		dropRecord(key, r.kind, r.id)
	}
	return err
}
