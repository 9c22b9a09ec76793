package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strings"

	"github.com/podnet/podnet"
)

// The "internet": a namespace at 203.0.113.0/24 (TEST-NET-3) linked to the
// sandbox, which holds the other end of the uplink. The internet has no
// route back to the pods' subnet, so a pod reaches it only through
// masquerading.
var (
	uplinkAddr = netip.MustParsePrefix("203.0.113.1/24")
	inetAddr   = netip.MustParsePrefix("203.0.113.2/24")
)

const uplinkName = "uplink"

// sandbox is a throwaway namespace that stands in for the host, with an
// uplink to an "internet" namespace. Every implementation builds its
// network inside a sandbox of its own; closing it removes all of it.
type sandbox struct {
	host *podnet.Namespace
	inet *podnet.Namespace
}

func newSandbox(ctx context.Context) (_ *sandbox, err error) {
	sb := &sandbox{}
	defer func() {
		if err != nil {
			err = errors.Join(err, sb.Close())
		}
	}()
	if sb.host, err = podnet.NewAnonymousNamespace().Label("podnet-bench").Create(ctx); err != nil {
		return sb, err
	}
	if sb.inet, err = podnet.NewAnonymousNamespace().Label("podnet-bench-internet").Create(ctx); err != nil {
		return sb, err
	}
	// The pair lives and dies with the two namespaces.
	_, err = podnet.NewVethPair(uplinkName).In(sb.host).Peer("eth0", sb.inet).
		Address(uplinkAddr).PeerAddress(inetAddr).Create(ctx)
	return sb, err
}

// Close deletes the sandbox and the internet namespace, and with them
// everything built inside. It is idempotent.
func (sb *sandbox) Close() error {
	var errs []error
	if sb.inet != nil {
		errs = append(errs, sb.inet.Close())
	}
	if sb.host != nil {
		errs = append(errs, sb.host.Close())
	}
	return errors.Join(errs...)
}

// checkClean reports anything a teardown left in the sandbox: links other
// than lo and the uplink, iptables rules (either backend), and named
// namespaces in the bench's private /run/netns. It keeps an
// implementation from winning a teardown by leaving work undone.
func (sb *sandbox) checkClean(ctx context.Context) error {
	var errs []error
	links, err := sb.host.Links(ctx)
	if err != nil {
		return err
	}
	var extra []string
	for _, l := range links {
		if n := l.Attrs().Name; n != "lo" && n != uplinkName {
			extra = append(extra, n)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		if len(extra) > 5 {
			extra = append(extra[:5], fmt.Sprintf("and %d more", len(extra)-5))
		}
		errs = append(errs, fmt.Errorf("links left in the sandbox: %s", strings.Join(extra, ", ")))
	}
	for _, prog := range []string{"iptables-save", "iptables-legacy-save"} {
		if _, err := exec.LookPath(prog); err != nil {
			continue
		}
		out, err := sb.host.CommandContext(ctx, prog).Output()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s in the sandbox: %w", prog, err))
			continue
		}
		var rules []string
		for _, line := range bytes.Split(out, []byte("\n")) {
			if bytes.HasPrefix(line, []byte("-A ")) {
				rules = append(rules, string(line))
			}
		}
		if len(rules) > 0 {
			errs = append(errs, fmt.Errorf("%d iptables rules left in the sandbox (%s), first: %s", len(rules), prog, rules[0]))
		}
	}
	if ents, err := os.ReadDir("/run/netns"); err == nil && len(ents) > 0 {
		errs = append(errs, fmt.Errorf("%d named namespaces left in /run/netns, first: %s", len(ents), ents[0].Name()))
	}
	return errors.Join(errs...)
}
