package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"

	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/internal/netns"
)

// Addresses of the namespace lab: namespace A at VethA, B at VethB on the
// veth pair; the wireguard-go reference tunnel at WGA and WGB.
const (
	VethA  = "10.213.0.2"
	VethB  = "10.213.0.1"
	WGA    = "10.214.0.2"
	WGB    = "10.214.0.1"
	WGPort = 51900   // the reference tunnel's UDP port, in both namespaces
	WGDev  = "mbwg0" // its TUN device, in both namespaces
)

// Netns is a network-namespace lab: namespaces A and B joined by a veth
// pair (veth0 in each), and, after StartWireGuard, plain wireguard-go on a
// kernel TUN device in each, peered over the veth. Only these private
// addresses, inside namespaces made here, carry traffic. Close removes
// everything, namespaces left by a killed earlier run are removed by
// NewNetns.
type Netns struct {
	A, B string
	// Progress reports cleanup problems and what was skipped.
	Progress func(format string, args ...any)

	topo   Topo // the namespaces, deleted by Close
	wgrefs []*WGRefProc
}

// NetnsPossible says why a namespace lab cannot run here ("" if it can).
func NetnsPossible() string {
	if os.Geteuid() != 0 {
		return "--netns needs root (network namespaces, veth, TUN devices); run it as root or drop --netns"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "--netns needs the ip command (iproute2): " + err.Error()
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return "--netns needs /dev/net/tun for the kernel-TUN reference and meshd kernel mode: " + err.Error()
	}
	return ""
}

// staleNetns matches the namespaces of a lab with names starting prefix;
// the submatch is the owner's pid.
func staleNetns(prefix string) *regexp.Regexp {
	return regexp.MustCompile(`^` + regexp.QuoteMeta(prefix) + `([0-9]+)-(a|b)$`)
}

// NewNetns makes the namespaces prefix<pid>-a and prefix<pid>-b, joined by
// a veth pair, after removing those of dead earlier runs. Inside each it
// sets two namespaced sysctls: TIME_WAIT reuse for new outgoing
// connections and a wide ephemeral port range, so connection-rate runs
// do not run out of ports. On error nothing is left.
func NewNetns(ctx context.Context, prefix string, progress func(string, ...any)) (*Netns, error) {
	if progress == nil {
		progress = func(string, ...any) {}
	}
	for _, ns := range netns.RemoveStale(ctx, staleNetns(prefix)) {
		progress("netns: removed stale namespace %s of a dead earlier run", ns)
	}
	pid := os.Getpid()
	n := &Netns{A: fmt.Sprintf("%s%d-a", prefix, pid), B: fmt.Sprintf("%s%d-b", prefix, pid), Progress: progress}
	if err := n.setup(ctx); err != nil {
		n.Close()
		return nil, fmt.Errorf("netns: %w", err)
	}
	return n, nil
}

func (n *Netns) setup(ctx context.Context) error {
	n.topo.Progress = n.Progress
	for _, ns := range []string{n.A, n.B} {
		if err := n.topo.Add(ctx, ns); err != nil {
			return err
		}
	}
	if err := n.topo.Veth(ctx, n.B, "veth0", VethB+"/24", n.A, "veth0", VethA+"/24"); err != nil {
		return err
	}
	for _, ns := range []string{n.A, n.B} {
		for _, kv := range [][2]string{{"net.ipv4.tcp_tw_reuse", "1"}, {"net.ipv4.ip_local_port_range", "1024 65000"}} {
			if err := n.topo.Sysctl(ctx, ns, kv[0], kv[1]); err != nil {
				n.Progress("netns: %v (continuing)", err)
			}
		}
	}
	return nil
}

// Exec is the command line that runs argv inside namespace ns.
func (n *Netns) Exec(ns string, argv ...string) []string { return netns.Exec(ns, argv...) }

// WireGuardEnds are the two ends of the reference tunnel, with fresh keys:
// A at WGA, B at WGB, each reaching the other over the veth.
func WireGuardEnds() (a, b WGRef, err error) {
	privA, err := key.NewPrivate()
	if err != nil {
		return a, b, err
	}
	privB, err := key.NewPrivate()
	if err != nil {
		return a, b, err
	}
	end := func(priv key.PrivateKey, peer key.PublicKey, peerVeth, addr, allowed string) WGRef {
		return WGRef{Dev: WGDev, Private: priv, Port: WGPort, Peer: peer,
			Endpoint: netip.AddrPortFrom(netip.MustParseAddr(peerVeth), WGPort),
			Addr:     netip.PrefixFrom(netip.MustParseAddr(addr), 24),
			Allowed:  netip.PrefixFrom(netip.MustParseAddr(allowed), 32)}
	}
	return end(privA, privB.Public(), VethB, WGA, WGB), end(privB, privA.Public(), VethA, WGB, WGA), nil
}

// StartWireGuard runs plain wireguard-go on a kernel TUN device in each
// namespace (`exe bench-wgref`), peered over the veth, and waits until
// both are configured. Close stops them.
func (n *Netns) StartWireGuard(ctx context.Context, exe string, verbose bool) error {
	a, b, err := WireGuardEnds()
	if err != nil {
		return fmt.Errorf("netns wireguard: %w", err)
	}
	for _, e := range []struct {
		ns  string
		cfg WGRef
	}{{n.A, a}, {n.B, b}} {
		e.cfg.Verbose = verbose
		w, err := StartWGRef(ctx, n.Exec(e.ns, append([]string{exe, "bench-wgref"}, e.cfg.Flags()...)...))
		if err != nil {
			return fmt.Errorf("netns wireguard in %s: %w", e.ns, err)
		}
		n.wgrefs = append(n.wgrefs, w)
	}
	return nil
}

// DropUDP drops pct percent of the UDP packets leaving either namespace
// at random (iptables statistic): the tunnels lose packets, direct TCP
// does not. A GSO batch is one packet to the rule, so it is dropped
// whole, as a NIC queue overflow would.
func (n *Netns) DropUDP(ctx context.Context, pct float64) error {
	p := strconv.FormatFloat(pct/100, 'f', -1, 64)
	for _, ns := range []string{n.A, n.B} {
		if _, err := netns.Run(ctx, "ip", "netns", "exec", ns, "iptables", "-A", "OUTPUT", "-p", "udp",
			"-m", "statistic", "--mode", "random", "--probability", p, "-j", "DROP"); err != nil {
			return fmt.Errorf("netns loss: %w", err)
		}
	}
	return nil
}

// Close stops the wireguard-go processes and deletes the namespaces with
// their veth and TUN devices and whatever still runs inside. Safe on a
// partial lab and after Ctrl-C (it does not take a context).
func (n *Netns) Close() {
	for _, w := range n.wgrefs {
		w.Close()
	}
	n.wgrefs = nil
	n.topo.Progress = n.Progress
	if err := n.topo.Close(); err != nil {
		n.Progress("%v", err)
	}
}
