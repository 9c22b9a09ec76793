package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coreos/go-iptables/iptables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/podnet/podnet/podnettest"
)

// rawLab builds the raw floor's topology with two pods in a fresh sandbox,
// torn down when the test ends.
func rawLab(t *testing.T, ctx context.Context) (*sandbox, *rawAttacher, *attachEnv) {
	t.Helper()
	podnettest.RequirePrivilege(t)
	env := defaultAttachEnv()
	sb, err := newSandbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sb.Close() })
	r, err := newRawAttacher(sb, env, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.close() })
	if err := r.up(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := r.attach(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	return sb, r, env
}

// TestCheckReach shows that the reachability check passes on an intact
// topology and fails, naming the broken probe, when any part of it is
// missing.
func TestCheckReach(t *testing.T) {
	cases := []struct {
		name     string
		sabotage func(t *testing.T, sb *sandbox, r *rawAttacher, env *attachEnv) error
		want     string // substring of the error; "" for success
	}{
		{"intact", nil, ""},
		{"gateway address removed", func(t *testing.T, sb *sandbox, r *rawAttacher, env *attachEnv) error {
			return r.hh.AddrDel(r.br, &netlink.Addr{IPNet: ipNet(env.gwPrefix())})
		}, "first pod (10.88.0.2) cannot ping the gateway"},
		{"last pod's link down", func(t *testing.T, sb *sandbox, r *rawAttacher, env *attachEnv) error {
			return inPod(r, 1, func(h *netlink.Handle) error {
				l, err := h.LinkByName("eth0")
				if err != nil {
					return err
				}
				return h.LinkSetDown(l)
			})
		}, "last pod (10.88.0.3) cannot ping the gateway"},
		{"bridge ports isolated", func(t *testing.T, sb *sandbox, r *rawAttacher, env *attachEnv) error {
			for _, v := range r.veths {
				if err := r.hh.LinkSetIsolated(v, true); err != nil {
					return err
				}
			}
			return nil
		}, "cannot ping the last pod"},
		{"TCP refused in the last pod", func(t *testing.T, sb *sandbox, r *rawAttacher, env *attachEnv) error {
			return rawDo(r.nss[1], func() error {
				ipt, err := iptables.New()
				if err != nil {
					return err
				}
				return ipt.Append("filter", "INPUT", "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset")
			})
		}, "cannot connect to the last pod"},
		{"no default route", func(t *testing.T, sb *sandbox, r *rawAttacher, env *attachEnv) error {
			return inPod(r, 0, func(h *netlink.Handle) error {
				return h.RouteDel(&netlink.Route{Gw: env.gw.AsSlice()})
			})
		}, "cannot ping the internet"},
		{"no masquerade", func(t *testing.T, sb *sandbox, r *rawAttacher, env *attachEnv) error {
			return rawDo(r.host, func() error {
				ipt, err := iptables.New()
				if err != nil {
					return err
				}
				return ipt.Delete("nat", "POSTROUTING", r.masq...)
			})
		}, "cannot ping the internet"},
		{"forwarding off", func(t *testing.T, sb *sandbox, r *rawAttacher, env *attachEnv) error {
			return rawDo(r.host, func() error { return writeProc(ipForward, "0") })
		}, "cannot ping the internet"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			sb, r, env := rawLab(t, ctx)
			if tc.sabotage != nil {
				if err := tc.sabotage(t, sb, r, env); err != nil {
					t.Fatalf("sabotage: %v", err)
				}
			}
			err := checkReach(ctx, r.pods(), reachTarget{gateway: env.gw, internet: sb.inet, inetAddr: inetAddr.Addr()})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("check failed on an intact topology: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("check passed, want a failure mentioning %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("check failed with %q, want it to mention %q", err, tc.want)
			}
		})
	}
}

func inPod(r *rawAttacher, i int, fn func(h *netlink.Handle) error) error {
	h, err := netlink.NewHandleAt(r.nss[i], unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer h.Close()
	return fn(h)
}

// TestCheckClean shows that the teardown check catches leftover links and
// rules, and passes once the raw floor has torn everything down.
func TestCheckClean(t *testing.T) {
	ctx := testCtx(t)
	sb, r, _ := rawLab(t, ctx)
	err := sb.checkClean(ctx)
	if err == nil || !strings.Contains(err.Error(), "links left") || !strings.Contains(err.Error(), "iptables rules left") {
		t.Fatalf("checkClean with the topology up = %v, want leftover links and rules", err)
	}
	for i := 0; i < 2; i++ {
		if err := r.detach(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.down(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sb.checkClean(ctx); err != nil {
		t.Fatalf("checkClean after teardown: %v", err)
	}
}

// TestShellArgsAreData runs the shell script with parameters that would
// run commands if the script interpolated them: they must reach ip as
// plain (invalid) names and run nothing.
func TestShellArgsAreData(t *testing.T) {
	ctx := testCtx(t)
	podnettest.RequirePrivilege(t)
	sb, err := newSandbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	marker := filepath.Join(t.TempDir(), "pwned")
	s := newShellAttacher(sb, defaultAttachEnv())
	evil := []string{"$(touch " + marker + ")", "`touch " + marker + "`", "x; touch " + marker}
	for _, e := range evil {
		if err := s.run(ctx, "attach", e, e, e, e, e); err == nil {
			t.Errorf("attach with %q succeeded", e)
		}
		if err := s.run(ctx, e); err == nil {
			t.Errorf("operation %q succeeded", e)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a parameter was executed as a command")
	}
	if err := sb.checkClean(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestQuietIPv6 checks that the implementations that claim podnet's work
// leave no IPv6 link-local address on the bridge or the veth ends, and that
// raw-ipv6 does get one: the floor and the shell do neither more nor less
// than podnet.
func TestQuietIPv6(t *testing.T) {
	podnettest.RequirePrivilege(t)
	ctx := testCtx(t)
	env := defaultAttachEnv()
	env.tmp = t.TempDir()
	for _, kind := range attachKinds(env) {
		if kind.teardownOp != "teardown" {
			continue
		}
		t.Run(kind.impl, func(t *testing.T) {
			sb, err := newSandbox(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer sb.Close()
			a, err := kind.make(sb, env)
			if err != nil {
				t.Fatal(err)
			}
			defer a.close()
			if err := a.up(ctx); err != nil {
				t.Fatal(err)
			}
			if err := a.attach(ctx, 0); err != nil {
				t.Fatal(err)
			}
			pns, release, err := a.pods()[0].open()
			if err != nil {
				t.Fatal(err)
			}
			defer release()
			var v6 []string
			for _, h := range []*netlink.Handle{sb.host.Handle(), pns.Handle()} {
				addrs, err := h.AddrList(nil, netlink.FAMILY_V6)
				if err != nil {
					t.Fatal(err)
				}
				for _, ad := range addrs {
					l, err := h.LinkByIndex(ad.LinkIndex)
					if err != nil {
						t.Fatal(err)
					}
					if n := l.Attrs().Name; n != "lo" && n != uplinkName {
						v6 = append(v6, n+" "+ad.IPNet.String())
					}
				}
			}
			if want := kind.impl == "raw-ipv6"; (len(v6) > 0) != want {
				t.Errorf("IPv6 addresses %v; want some: %v", v6, want)
			}
		})
	}
}
