package podnet

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The iptables layer shared by Masquerade, PortForward and BridgeFirewall.
//
// Every rule podnet adds lives in podnet's own chains, which built-in chains
// jump to:
//
//	nat    PREROUTING  -m addrtype --dst-type LOCAL -j PODNET-DNAT   (appended)
//	nat    OUTPUT      -m addrtype --dst-type LOCAL -j PODNET-DNAT   (appended)
//	nat    POSTROUTING -j PODNET-POSTROUTING                         (appended)
//	filter FORWARD     -j PODNET-FORWARD                             (inserted first)
//	filter INPUT       -j PODNET-INPUT                               (inserted first)
//	filter PODNET-FORWARD -j PODNET-ISOLATION                        (its first rule)
//
// These jump rules carry the comment "podnet": they belong to no single
// object and are removed, with the chains, by whichever podnet call finds
// the chains otherwise empty. Every other rule carries the ownership mark of
// the object that added it ("podnet:PID:START:KIND.ID[.LABEL]", see Mark) as
// its comment, and Close removes exactly the rules bearing its mark. A
// PortForward keeps its DNAT rules in a chain of its own, PODNET-PF-ID,
// jumped to from PODNET-DNAT by a rule bearing its mark; Close flushes and
// deletes that chain. Rules are read with iptables-save and written with
// one iptables-restore --noflush --wait per call, so each Create or Close
// is a single atomic batch per table, whatever the number of rules.

// IptablesBackend selects which iptables implementation podnet drives in a
// namespace. Both program the same kernel hooks; what matters is that podnet
// uses the one the namespace's other users use, so that iptables-save shows
// all the rules in one place.
type IptablesBackend int

const (
	// IptablesAuto picks per namespace: legacy when the namespace's legacy
	// (x_tables) tables already hold rules or a policy other than ACCEPT,
	// nf_tables otherwise. The choice is kept while podnet objects live in
	// the namespace.
	IptablesAuto IptablesBackend = iota
	// IptablesNFT drives iptables-nft (the nf_tables backend).
	IptablesNFT
	// IptablesLegacy drives iptables-legacy (the x_tables backend).
	IptablesLegacy
)

func (b IptablesBackend) String() string {
	switch b {
	case IptablesAuto:
		return "auto"
	case IptablesNFT:
		return "nf_tables"
	case IptablesLegacy:
		return "legacy"
	}
	return fmt.Sprintf("IptablesBackend(%d)", int(b))
}

func (b IptablesBackend) validate() error {
	if b < IptablesAuto || b > IptablesLegacy {
		return invalid(ErrInvalidOption, "unknown iptables backend %d", int(b))
	}
	return nil
}

// ErrNotInstalled reports that a program podnet needs, such as
// iptables-nft-restore, is not installed. The message says what to install.
var ErrNotInstalled = errors.New("required program not installed")

// podnet's chains.
const (
	chainDNAT        = "PODNET-DNAT"
	chainPostrouting = "PODNET-POSTROUTING"
	chainForward     = "PODNET-FORWARD"
	chainIsolation   = "PODNET-ISOLATION"
	chainIsolation2  = "PODNET-ISOLATION2"
	chainInput       = "PODNET-INPUT"

	// chainPortForwardPrefix names a PortForward's own chain of DNAT rules:
	// PODNET-PF-ID, ID being the 12 hex digits of its mark.
	chainPortForwardPrefix = "PODNET-PF-"

	// infraComment marks the jump rules shared by all of podnet's objects.
	infraComment = "podnet"

	// iptablesTimeout bounds the iptables work of one Close (which takes no
	// context) and of backend detection.
	iptablesTimeout = 30 * time.Second
)

// infraRule is a jump into one of podnet's chains that belongs to the chain
// layout itself rather than to one object.
type infraRule struct {
	chain  string // chain holding the rule
	match  string // matches before the comment, may be empty
	target string // the podnet chain it jumps to
	insert bool   // inserted first rather than appended
}

func (r infraRule) spec() string {
	s := "-m comment --comment " + infraComment + " -j " + r.target
	if r.match != "" {
		s = r.match + " " + s
	}
	return s
}

// chainUnit is a group of podnet chains created and removed together with
// the rules that jump into them.
type chainUnit struct {
	table  string
	chains []string    // created in this order, deleted in reverse
	rules  []infraRule // jumps from built-in chains, then between the unit's chains
}

var (
	unitDNAT = &chainUnit{table: "nat", chains: []string{chainDNAT}, rules: []infraRule{
		{chain: "PREROUTING", match: "-m addrtype --dst-type LOCAL", target: chainDNAT},
		{chain: "OUTPUT", match: "-m addrtype --dst-type LOCAL", target: chainDNAT},
	}}
	unitPostrouting = &chainUnit{table: "nat", chains: []string{chainPostrouting}, rules: []infraRule{
		{chain: "POSTROUTING", target: chainPostrouting},
	}}
	unitForward = &chainUnit{table: "filter", chains: []string{chainForward, chainIsolation, chainIsolation2}, rules: []infraRule{
		{chain: "FORWARD", target: chainForward, insert: true},
		{chain: chainForward, target: chainIsolation, insert: true},
	}}
	unitInput = &chainUnit{table: "filter", chains: []string{chainInput}, rules: []infraRule{
		{chain: "INPUT", target: chainInput, insert: true},
	}}
)

func (u *chainUnit) has(chain string) bool {
	for _, c := range u.chains {
		if c == chain {
			return true
		}
	}
	return false
}

// isInfra reports whether r is one of u's jump rules.
func (u *chainUnit) isInfra(r *iptRule) bool {
	if r.comment() != infraComment {
		return false
	}
	for _, ir := range u.rules {
		if ir.chain == r.chain && ir.target == r.target() {
			return true
		}
	}
	return false
}

func isPodnetChain(c string) bool { return strings.HasPrefix(c, "PODNET-") }

// ruleLine is one object rule to add.
type ruleLine struct {
	table, chain, spec string
	insert             bool
}

func (r ruleLine) line() string {
	if r.insert {
		return "-I " + r.chain + " 1 " + r.spec
	}
	return "-A " + r.chain + " " + r.spec
}

// commentArg returns the -m comment match naming mark. Marks and labels are
// restricted to characters that need no escaping.
func commentArg(mark string) string { return `-m comment --comment "` + mark + `"` }

// ---- finding and running the programs ----

var (
	lookPath = exec.LookPath
	sbinDirs = []string{"/usr/sbin", "/sbin"}
)

// findProgram looks name up in $PATH, then in /usr/sbin and /sbin (which a
// non-login root shell may lack in $PATH).
func findProgram(name string) (string, error) {
	if p, err := lookPath(name); err == nil {
		return p, nil
	}
	for _, d := range sbinDirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %s is not in $PATH, /usr/sbin or /sbin (install it with: apt-get install -y iptables)", ErrNotInstalled, name)
}

// iptablesProgram returns the path of the iptables program for backend b
// and family fam (4 or 6); suffix is "", "-save" or "-restore".
func iptablesProgram(b IptablesBackend, fam int, suffix string) (string, error) {
	name := "iptables"
	if fam == 6 {
		name = "ip6tables"
	}
	if b == IptablesLegacy {
		name += "-legacy"
	} else {
		name += "-nft"
	}
	return findProgram(name + suffix)
}

// runIn runs the program path with args inside ns and returns its standard
// output. The caller holds ns (acquire). The process is started on a fresh
// thread switched into the namespace (onThreadIn, the same audited path as
// Namespace.Do), so it and everything it touches live there; arguments go
// to the program as argv, never through a shell.
func runIn(ctx context.Context, ns *Namespace, path string, args []string, stdin []byte) ([]byte, error) {
	cmd := exec.CommandContext(ctx, path, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = []string{"LC_ALL=C", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	base := filepath.Base(path)
	if err := onThreadIn(ns.fd, cmd.Start); err != nil {
		return nil, fmt.Errorf("start %s: %w", base, err)
	}
	if err := cmd.Wait(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", base, ctx.Err())
		}
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 2000 {
			msg = msg[:2000] + "..."
		}
		return nil, fmt.Errorf("%s: %w: %s", base, err, msg)
	}
	return stdout.Bytes(), nil
}

// ---- reading iptables-save ----

// iptRule is one rule of iptables-save output.
type iptRule struct {
	table, chain string
	spec         string   // the rule after "-A CHAIN ", as printed
	args         []string // spec split into arguments
}

// arg returns the value following the argument name.
func (r *iptRule) arg(name string) string {
	for i := 0; i+1 < len(r.args); i++ {
		if r.args[i] == name {
			return r.args[i+1]
		}
	}
	return ""
}

func (r *iptRule) comment() string { return r.arg("--comment") }
func (r *iptRule) target() string  { return r.arg("-j") }

// iptTable is one table of iptables-save output.
type iptTable struct {
	policies map[string]string // chain -> policy; "-" for user-defined chains
	rules    []*iptRule
}

func (t *iptTable) hasChain(c string) bool { _, ok := t.policies[c]; return ok }

// iptTables is the parsed iptables-save output of one family, by table
// name. A table absent from the map did not exist (nf_tables) or had not
// been instantiated (legacy).
type iptTables map[string]*iptTable

func (ts iptTables) table(name string) *iptTable {
	if t := ts[name]; t != nil {
		return t
	}
	return &iptTable{policies: map[string]string{}}
}

func parseSave(out []byte) (iptTables, error) {
	ts := iptTables{}
	var cur *iptTable
	var curName string
	for i, line := range strings.Split(string(out), "\n") {
		line = strings.TrimRight(line, "\r")
		switch {
		case line == "" || line[0] == '#':
		case line[0] == '*':
			curName = line[1:]
			cur = &iptTable{policies: map[string]string{}}
			ts[curName] = cur
		case line == "COMMIT":
			cur = nil
		case cur == nil:
			return nil, fmt.Errorf("iptables-save line %d outside a table: %q", i+1, line)
		case line[0] == ':':
			f := strings.Fields(line[1:])
			if len(f) < 2 {
				return nil, fmt.Errorf("iptables-save line %d: malformed chain %q", i+1, line)
			}
			cur.policies[f[0]] = f[1]
		case strings.HasPrefix(line, "-A "):
			args, err := splitArgs(line[3:])
			if err != nil || len(args) == 0 {
				return nil, fmt.Errorf("iptables-save line %d: %q: %v", i+1, line, err)
			}
			spec := strings.TrimSpace(strings.TrimPrefix(line[3:], args[0]))
			cur.rules = append(cur.rules, &iptRule{table: curName, chain: args[0], spec: spec, args: args[1:]})
		}
	}
	return ts, nil
}

// splitArgs splits a rule as iptables-restore does: on blanks, with double
// quotes grouping and backslash escaping inside them.
func splitArgs(s string) ([]string, error) {
	var out []string
	var b strings.Builder
	in, quoted, esc := false, false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case esc:
			b.WriteByte(c)
			esc = false
		case quoted && c == '\\':
			esc = true
		case c == '"':
			quoted = !quoted
			in = true
		case !quoted && (c == ' ' || c == '\t'):
			if in {
				out = append(out, b.String())
				b.Reset()
				in = false
			}
		default:
			b.WriteByte(c)
			in = true
		}
	}
	if quoted {
		return nil, errors.New("unterminated quote")
	}
	if in {
		out = append(out, b.String())
	}
	return out, nil
}

// ---- writing iptables-restore input ----

type batch struct {
	order []string
	lines map[string][]string
}

func (b *batch) add(table, line string) {
	if b.lines == nil {
		b.lines = map[string][]string{}
	}
	if _, ok := b.lines[table]; !ok {
		b.order = append(b.order, table)
	}
	b.lines[table] = append(b.lines[table], line)
}

func (b *batch) empty() bool { return len(b.order) == 0 }

func (b *batch) bytes() []byte {
	var buf bytes.Buffer
	for _, t := range b.order {
		buf.WriteString("*" + t + "\n")
		for _, l := range b.lines[t] {
			buf.WriteString(l + "\n")
		}
		buf.WriteString("COMMIT\n")
	}
	return buf.Bytes()
}

// ensureUnit adds to b what is missing of u in t: chains, then jumps.
func ensureUnit(b *batch, t *iptTable, u *chainUnit) {
	for _, c := range u.chains {
		if !t.hasChain(c) {
			b.add(u.table, "-N "+c)
		}
	}
	for _, ir := range u.rules {
		found := false
		for _, r := range t.rules {
			if r.chain == ir.chain && r.target() == ir.target && r.comment() == infraComment {
				found = true
				break
			}
		}
		if !found {
			if ir.insert {
				b.add(u.table, "-I "+ir.chain+" 1 "+ir.spec())
			} else {
				b.add(u.table, "-A "+ir.chain+" "+ir.spec())
			}
		}
	}
}

// unitIdle reports whether, once the rules in gone are deleted, u's chains
// hold nothing but u's own jumps and nothing but those jumps refers to them.
func unitIdle(t *iptTable, u *chainUnit, gone map[*iptRule]bool) bool {
	present := false
	for _, c := range u.chains {
		if t.hasChain(c) {
			present = true
		}
	}
	if !present {
		return false
	}
	for _, r := range t.rules {
		if gone[r] {
			continue
		}
		if u.has(r.chain) || u.has(r.target()) {
			if !u.isInfra(r) {
				return false
			}
		}
	}
	return true
}

// removeUnit adds to b the deletion of u's jumps and chains, marking the
// deleted rules in gone.
func removeUnit(b *batch, t *iptTable, u *chainUnit, gone map[*iptRule]bool) {
	for _, r := range t.rules {
		if !gone[r] && u.isInfra(r) {
			b.add(u.table, "-D "+r.chain+" "+r.spec)
			gone[r] = true
		}
	}
	for i := len(u.chains) - 1; i >= 0; i-- {
		if t.hasChain(u.chains[i]) {
			b.add(u.table, "-X "+u.chains[i])
		}
	}
}

// ---- the per-namespace operations ----

// ownChain is a chain that belongs to one object (named after its mark's
// id): created with the object's rules, flushed and deleted by its Close.
type ownChain struct{ table, name string }

// iptPlan is what one object adds in one family.
type iptPlan struct {
	fam    int
	mark   string // the mark the rules carry
	units  []*chainUnit
	chains []ownChain // created after the units, before the rules
	rules  []ruleLine
	// check, if set, looks at the current rules before anything is added
	// (for conflicts); its error aborts the plan.
	check func(iptTables) error
	// keyed rules belong to no process (nat_key.go): the nf_tables tables
	// they need are left in place, with no crash record for a sweep.
	keyed bool
}

func (st *nsState) save(ctx context.Context, ns *Namespace, b IptablesBackend, fam int) (iptTables, error) {
	path, err := iptablesProgram(b, fam, "-save")
	if err != nil {
		return nil, err
	}
	out, err := runIn(ctx, ns, path, nil, nil)
	if err != nil {
		return nil, err
	}
	return parseSave(out)
}

func (st *nsState) restore(ctx context.Context, ns *Namespace, b IptablesBackend, fam int, in []byte) error {
	path, err := iptablesProgram(b, fam, "-restore")
	if err != nil {
		return err
	}
	_, err = runIn(ctx, ns, path, []string{"--noflush", "--wait"}, in)
	return err
}

// partlyApplied reports whether any of p's rules or chains are in ts.
func (p iptPlan) partlyApplied(ts iptTables) bool {
	for _, c := range p.chains {
		if ts.table(c.table).hasChain(c.name) {
			return true
		}
	}
	for _, r := range p.rules {
		for _, have := range ts.table(r.table).rules {
			if have.chain == r.chain && have.comment() == p.mark {
				return true
			}
		}
	}
	return false
}

// restoreAttempts bounds the read-modify-write retries when another process
// changes the same tables between podnet's read and its write.
const restoreAttempts = 3

// applyLocked adds p's rules (and whatever is missing of its units) in one
// iptables-restore. The caller holds st.mu and ns.
func (st *nsState) applyLocked(ctx context.Context, ns *Namespace, b IptablesBackend, p iptPlan) error {
	var lastErr error
	tables := 0 // tables the last failed write touched
	for attempt := 0; attempt < restoreAttempts; attempt++ {
		ts, err := st.save(ctx, ns, b, p.fam)
		if err != nil {
			return err
		}
		if tables > 1 && p.partlyApplied(ts) {
			// iptables-restore commits table by table: the failed write
			// may have left some of p behind. The caller's undo removes it.
			return lastErr
		}
		if p.check != nil {
			if err := p.check(ts); err != nil {
				return err
			}
		}
		var bt batch
		for _, u := range p.units {
			ensureUnit(&bt, ts.table(u.table), u)
		}
		for _, c := range p.chains {
			bt.add(c.table, "-N "+c.name)
		}
		for _, r := range p.rules {
			bt.add(r.table, r.line())
		}
		if bt.empty() {
			return nil
		}
		tables = len(bt.order)
		if b == IptablesNFT && !p.keyed {
			// Tables this batch creates are recorded first, so that a
			// sweep can delete them if this process dies.
			for _, t := range bt.order {
				if _, ok := ts[t]; !ok {
					if err := putRecord(st.key, "nft", nftKey(p.fam, t)); err != nil {
						return err
					}
				}
			}
		}
		if lastErr = st.restore(ctx, ns, b, p.fam, bt.bytes()); lastErr == nil {
			if b == IptablesNFT && !p.keyed {
				for _, t := range bt.order {
					if _, ok := ts[t]; !ok {
						st.nftNew[nftKey(p.fam, t)] = true
					}
				}
			}
			return faultPoint("iptables:applied")
		}
		if ctx.Err() != nil {
			break
		}
	}
	return lastErr
}

// removal selects what removeLocked takes away: the rules in podnet's
// chains that carry mark as their comment and for which match (if set)
// holds, the object's own chains (flushed and deleted whole), and then any
// of units left idle.
type removal struct {
	mark   string
	match  func(*iptRule) bool
	chains []ownChain
	units  []*chainUnit
}

// removeLocked applies rm in one iptables-restore. Rules and chains already
// gone count as removed. The caller holds st.mu and ns.
func (st *nsState) removeLocked(ctx context.Context, ns *Namespace, b IptablesBackend, fam int, rm removal) error {
	var lastErr error
	for attempt := 0; attempt < restoreAttempts; attempt++ {
		ts, err := st.save(ctx, ns, b, fam)
		if err != nil {
			return err
		}
		var bt batch
		gone := map[*iptRule]bool{}
		own := map[string]bool{}
		for _, c := range rm.chains {
			own[c.table+"/"+c.name] = true
		}
		for _, tn := range []string{"nat", "filter"} {
			t := ts[tn]
			if t == nil {
				continue
			}
			for _, r := range t.rules {
				switch {
				case own[tn+"/"+r.chain]:
					gone[r] = true // flushed with its chain below
				case isPodnetChain(r.chain) && r.comment() == rm.mark && (rm.match == nil || rm.match(r)):
					bt.add(tn, "-D "+r.chain+" "+r.spec)
					gone[r] = true
				}
			}
		}
		for _, c := range rm.chains {
			if t := ts[c.table]; t != nil && t.hasChain(c.name) {
				bt.add(c.table, "-F "+c.name)
				bt.add(c.table, "-X "+c.name)
			}
		}
		// On the last attempt only remove the object's own rules: a chain
		// that cannot be deleted must not keep them in place.
		if attempt < restoreAttempts-1 {
			for _, u := range rm.units {
				if t := ts[u.table]; t != nil && unitIdle(t, u, gone) {
					removeUnit(&bt, t, u, gone)
				}
			}
		}
		if bt.empty() {
			return nil
		}
		if lastErr = st.restore(ctx, ns, b, fam, bt.bytes()); lastErr == nil {
			if b == IptablesNFT {
				st.dropNFTTablesLocked(ns, fam, ts, gone, bt.order)
			}
			return nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return lastErr
}

// dropNFTTablesLocked deletes the nf_tables tables that podnet created in
// this namespace and that the last removal left empty, so that the
// namespace's iptables-save output is what it was before podnet came.
func (st *nsState) dropNFTTablesLocked(ns *Namespace, fam int, ts iptTables, gone map[*iptRule]bool, touched []string) {
	for _, tn := range touched {
		key := nftKey(fam, tn)
		if !st.nftNew[key] {
			continue
		}
		t := ts[tn]
		empty := t != nil
		if t != nil {
			for _, r := range t.rules {
				if !gone[r] {
					empty = false
				}
			}
			for c, pol := range t.policies {
				if pol == "-" && !isPodnetChain(c) || pol != "-" && pol != "ACCEPT" {
					empty = false
				}
			}
		}
		if !empty {
			continue
		}
		delete(st.nftNew, key)
		// Best effort: the kernel refuses (and nothing changes) if anything
		// was added to the table meanwhile.
		if nftDeleteTableIfEmpty(ns, fam, tn, builtinChains[tn]) == nil {
			dropRecord(st.key, "nft", key)
		}
	}
}

var builtinChains = map[string][]string{
	"nat":    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
	"filter": {"INPUT", "FORWARD", "OUTPUT"},
}

func nftKey(fam int, table string) string { return fmt.Sprintf("%d/%s", fam, table) }

// ---- backend detection ----

// resolveBackendLocked returns the backend to use in ns for an object that
// asked for want. The caller holds st.mu.
func (st *nsState) resolveBackendLocked(ns *Namespace, want IptablesBackend) (IptablesBackend, error) {
	if want != IptablesAuto {
		return want, nil
	}
	if st.backend != IptablesAuto && st.users > 0 {
		return st.backend, nil
	}
	b, err := detectBackend(ns)
	if err != nil {
		return IptablesAuto, err
	}
	st.backend = b
	return b, nil
}

// detectBackend returns IptablesLegacy if the legacy tables of ns hold any
// rule or a policy other than ACCEPT, IptablesNFT otherwise. Reading
// /proc/net/ip{,6}_tables_names does not instantiate legacy tables.
func detectBackend(ns *Namespace) (IptablesBackend, error) {
	names := map[int]string{}
	err := onThreadIn(ns.fd, func() error {
		for fam, f := range map[int]string{4: "ip_tables_names", 6: "ip6_tables_names"} {
			b, err := os.ReadFile("/proc/thread-self/net/" + f)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			names[fam] = strings.TrimSpace(string(b))
		}
		return nil
	})
	if err != nil {
		return IptablesAuto, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), iptablesTimeout)
	defer cancel()
	for _, fam := range []int{4, 6} {
		if names[fam] == "" {
			continue
		}
		path, err := iptablesProgram(IptablesLegacy, fam, "-save")
		if err != nil {
			return IptablesAuto, fmt.Errorf("legacy iptables tables exist in namespace %s: %w", ns, err)
		}
		out, err := runIn(ctx, ns, path, nil, nil)
		if err != nil {
			return IptablesAuto, err
		}
		ts, err := parseSave(out)
		if err != nil {
			return IptablesAuto, err
		}
		for _, t := range ts {
			if len(t.rules) > 0 {
				return IptablesLegacy, nil
			}
			for _, pol := range t.policies {
				if pol != "-" && pol != "ACCEPT" {
					return IptablesLegacy, nil
				}
			}
		}
	}
	return IptablesNFT, nil
}

// ---- labels and marks ----

func validateObjectLabel(l string) error {
	if len(l) > 64 {
		return invalid(ErrInvalidOption, "label is %d bytes, longer than 64", len(l))
	}
	if !validName(l) {
		return invalid(ErrInvalidOption, "label %q has characters other than letters, digits, '-', '_' and '.'", l)
	}
	return nil
}

// objectMark returns a fresh ownership mark for an object of kind, unique
// to it, "podnet:PID:START:KIND.ID[.LABEL]", and its ID (12 hex digits).
func objectMark(kind, label string) (mark, id string) {
	var b [6]byte
	_, _ = rand.Read(b[:])
	id = hex.EncodeToString(b[:])
	l := kind + "." + id
	if label != "" {
		l += "." + label
	}
	return selfMark(l), id
}

func familyOf(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}
