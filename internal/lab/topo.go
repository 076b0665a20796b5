package lab

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/meshd/meshd/internal/netns"
)

// ErrNoNamespace wraps the error of a Topo whose first namespace could not
// be made at all: no CAP_SYS_ADMIN, or a kernel without network
// namespaces. Tests skip on it; anything later is a failure.
var ErrNoNamespace = errors.New("cannot create a network namespace")

// Topo is a set of network namespaces made by this process and the veth
// pairs, routes and firewall rules between them: the building blocks of
// the two-namespace bench lab (Netns) and of the e2e topologies (a router
// namespace with hosts around it, Star). Close deletes every namespace it
// made, with what is inside; a Topo that failed half-way is closed the
// same way.
type Topo struct {
	// Progress reports what Close killed or could not remove.
	Progress func(format string, args ...any)

	names []string // made here, deleted by Close
}

// Namespaces returns the namespaces made so far, in order.
func (t *Topo) Namespaces() []string { return slices.Clone(t.names) }

// Add makes namespace name with its loopback up.
func (t *Topo) Add(ctx context.Context, name string) error {
	if err := netns.Add(ctx, name); err != nil {
		if len(t.names) == 0 {
			return fmt.Errorf("netns: %w: %w", ErrNoNamespace, err)
		}
		return fmt.Errorf("netns: %w", err)
	}
	t.names = append(t.names, name)
	return nil
}

// Veth joins namespaces a and b by a veth pair, interface ifA in a with
// address addrA (a prefix, like 10.0.0.1/24), ifB in b with addrB, both
// up.
func (t *Topo) Veth(ctx context.Context, a, ifA, addrA, b, ifB, addrB string) error {
	cmds := [][]string{
		{"-n", a, "link", "add", ifA, "type", "veth", "peer", "name", ifB, "netns", b},
		{"-n", a, "addr", "add", addrA, "dev", ifA},
		{"-n", a, "link", "set", ifA, "up"},
		{"-n", b, "addr", "add", addrB, "dev", ifB},
		{"-n", b, "link", "set", ifB, "up"},
	}
	for _, args := range cmds {
		if _, err := netns.Run(ctx, "ip", args...); err != nil {
			return fmt.Errorf("netns veth: %w", err)
		}
	}
	return nil
}

// Route adds a route to dst (a prefix) via gateway in namespace ns.
func (t *Topo) Route(ctx context.Context, ns, dst, via string) error {
	if _, err := netns.Run(ctx, "ip", "-n", ns, "route", "add", dst, "via", via); err != nil {
		return fmt.Errorf("netns route: %w", err)
	}
	return nil
}

// Forward makes namespace ns forward IPv4 between its interfaces.
func (t *Topo) Forward(ctx context.Context, ns string) error {
	return t.Sysctl(ctx, ns, "net.ipv4.ip_forward", "1")
}

// Sysctl sets a namespaced sysctl key (dotted, like net.ipv4.ip_forward)
// inside namespace ns, by writing its /proc/sys file there.
func (t *Topo) Sysctl(ctx context.Context, ns, key, value string) error {
	file := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	if _, err := netns.RunInput(ctx, value+"\n", "ip", "netns", "exec", ns, "tee", file); err != nil {
		return fmt.Errorf("netns sysctl %s=%s in %s: %w", key, value, ns, err)
	}
	return nil
}

// Exec is the command line that runs argv inside namespace ns.
func (t *Topo) Exec(ns string, argv ...string) []string { return netns.Exec(ns, argv...) }

// Run runs argv inside namespace ns and returns its output.
func (t *Topo) Run(ctx context.Context, ns string, argv ...string) (string, error) {
	a := netns.Exec(ns, argv...)
	return netns.Run(ctx, a[0], a[1:]...)
}

// Nft loads an nftables ruleset (nft -f syntax) in namespace ns.
func (t *Topo) Nft(ctx context.Context, ns, rules string) error {
	if _, err := netns.RunInput(ctx, rules, "ip", "netns", "exec", ns, "nft", "-f", "-"); err != nil {
		return fmt.Errorf("netns nft in %s: %w", ns, err)
	}
	return nil
}

// CheckNft checks a ruleset in namespace ns without loading it (nft -c):
// an error means nftables is not usable here, or the rules are wrong.
func (t *Topo) CheckNft(ctx context.Context, ns, rules string) error {
	if _, err := netns.RunInput(ctx, rules, "ip", "netns", "exec", ns, "nft", "-c", "-f", "-"); err != nil {
		return fmt.Errorf("netns nft check in %s: %w", ns, err)
	}
	return nil
}

// StarHost is one host namespace of a Star: its address on its eth0 and
// the router's address on the other end of its veth.
type StarHost struct {
	NS, IP, Gateway string
}

// Star makes a router namespace that forwards between host namespaces,
// each joined to it by a veth pair on its own /24: the i-th host (from 1)
// has eth0 at <net>.i.2, the router <net>.i.1 on veth h<i>, and a route to
// <net>.0.0/16 via the router. net is the first two octets of a private
// network, like "10.99".
func (t *Topo) Star(ctx context.Context, router, net string, hosts ...string) ([]StarHost, error) {
	if err := t.Add(ctx, router); err != nil {
		return nil, err
	}
	if err := t.Forward(ctx, router); err != nil {
		return nil, err
	}
	var out []StarHost
	for i, ns := range hosts {
		h := StarHost{NS: ns, IP: fmt.Sprintf("%s.%d.2", net, i+1), Gateway: fmt.Sprintf("%s.%d.1", net, i+1)}
		if err := t.Add(ctx, ns); err != nil {
			return nil, err
		}
		if err := t.Veth(ctx, router, fmt.Sprintf("h%d", i+1), h.Gateway+"/24", ns, "eth0", h.IP+"/24"); err != nil {
			return nil, err
		}
		if err := t.Route(ctx, ns, net+".0.0/16", h.Gateway); err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

// Close kills whatever runs in the namespaces made here and deletes them,
// last made first. It returns the namespaces it could not delete.
func (t *Topo) Close() error {
	var errs []error
	for i := len(t.names) - 1; i >= 0; i-- {
		ns := t.names[i]
		killed, err := netns.Delete(context.Background(), ns)
		if t.Progress != nil {
			for _, pid := range killed {
				t.Progress("netns: killed process %d left in namespace %s", pid, ns)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("netns cleanup: %w", err))
		}
	}
	t.names = nil
	return errors.Join(errs...)
}
