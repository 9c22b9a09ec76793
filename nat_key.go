package podnet

import (
	"context"
	"errors"
	"fmt"
)

// Keyed rules.
//
// An ordinary rule carries the ownership mark of the process that made it
// and lives as long as its Go object: Close removes it, and once the
// process is gone Sweep may. A program that runs once per request, such
// as a CNI plugin, needs rules that outlive it and that a later process
// can find and remove. Such a rule is installed under a key of the
// caller's choosing and carries "podnet-key:KEY" as its comment instead of
// a mark: it belongs to no process and to no Go object. Sweep never
// touches it, Create is idempotent across processes, Close of the
// Masquerade only releases the Go object, and Remove takes the rule away
// from any process.

// keyPrefix starts the comment of a keyed rule. It is not a mark prefix
// ("podnet:"), so ParseMark, List and Sweep pass keyed rules by.
const keyPrefix = "podnet-key:"

// maxKey bounds a key; the comment match holds at most 255 bytes.
const maxKey = 200

var errKeyInstalled = errors.New("a rule is installed under the key")

// Key installs the rule under key (letters, digits, '-', '_' and '.', at
// most 200 bytes) instead of under this process's ownership mark, so that
// it outlives the process and the Masquerade: see Create, Installed and
// Remove. Key and Label exclude each other.
//
// Equivalent to: `iptables -t nat -A PODNET-POSTROUTING ... -m comment --comment podnet-key:KEY -j MASQUERADE`
func (s *MasqueradeSpec) Key(key string) *MasqueradeSpec { s.key = key; return s }

func validateKey(key string) error {
	if len(key) > maxKey {
		return invalid(ErrInvalidOption, "key is %d bytes, longer than %d", len(key), maxKey)
	}
	if !validName(key) {
		return invalid(ErrInvalidOption, "key %q has characters other than letters, digits, '-', '_' and '.'", key)
	}
	return nil
}

func keyComment(key string) string { return keyPrefix + key }

// hasKeyedRule reports whether chain of the nat table holds a rule
// carrying comment.
func hasKeyedRule(ts iptTables, chain, comment string) bool {
	for _, r := range ts.table("nat").rules {
		if r.chain == chain && r.comment() == comment {
			return true
		}
	}
	return false
}

func (s *MasqueradeSpec) validateKeyed() error {
	if err := s.validate(); err != nil {
		return err
	}
	if s.key == "" {
		return invalid(ErrInvalidOption, "the rule has no Key")
	}
	return nil
}

// Installed reports whether a rule is installed under the spec's key in
// the spec's family. Only the key and the source prefix's family matter.
//
// Equivalent to: `iptables-save -t nat | grep -- '--comment "podnet-key:KEY"'`
func (s *MasqueradeSpec) Installed(ctx context.Context) (bool, error) {
	if err := s.validateKeyed(); err != nil {
		return false, opErr("look up", "masquerade", s.src.String(), err)
	}
	var found bool
	err := withIptables(ctx, s.in, s.backend, func(ns *Namespace, st *nsState, b IptablesBackend) error {
		ts, err := st.save(ctx, ns, b, familyOf(s.src.Addr()))
		found = err == nil && hasKeyedRule(ts, chainPostrouting, keyComment(s.key))
		return err
	})
	return found, opErr("look up", "masquerade", s.src.String(), err)
}

// Remove removes the rules installed under the spec's key in the spec's
// family, whichever process installed them, and podnet's chains if nothing
// else of podnet's is left in them. A key with no rule is not an error.
//
// Equivalent to: `iptables -t nat -D PODNET-POSTROUTING ... -m comment --comment podnet-key:KEY -j MASQUERADE`
func (s *MasqueradeSpec) Remove(ctx context.Context) error {
	if err := s.validateKeyed(); err != nil {
		return opErr("remove", "masquerade", s.src.String(), err)
	}
	err := withIptables(ctx, s.in, s.backend, func(ns *Namespace, st *nsState, b IptablesBackend) error {
		return st.removeLocked(ctx, ns, b, familyOf(s.src.Addr()),
			removal{mark: keyComment(s.key), units: []*chainUnit{unitPostrouting}})
	})
	return opErr("remove", "masquerade", s.src.String(), err)
}

// withIptables runs fn with in (nil: the caller's namespace) held and its
// state locked, for work that creates no object.
func withIptables(ctx context.Context, in *Namespace, want IptablesBackend, fn func(ns *Namespace, st *nsState, b IptablesBackend) error) error {
	ns, err := resolveNS(in)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	release, err := ns.acquire()
	if err != nil {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	defer release()
	st, err := pinState(ns)
	if err != nil {
		return err
	}
	defer unpinState(st)
	st.mu.Lock()
	defer st.mu.Unlock()
	b, err := st.resolveBackendLocked(ns, want)
	if err != nil {
		return err
	}
	return fn(ns, st, b)
}
