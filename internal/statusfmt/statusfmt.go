// Package statusfmt renders a node's control-socket answers — status,
// ping, reload and maintenance — as the text `meshd` prints (the JSON
// forms are the node package's types, documented in docs/formats.md).
// It only formats: no I/O beyond the writer it is given.
package statusfmt

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/meshd/meshd/node"
)

// Status writes the human-readable form of st: the node, then tables of
// its peers, the service catalog and (when there are any) its imports.
func Status(w io.Writer, st node.Status) {
	n := st.Node
	fmt.Fprintf(w, "node %s  site %s  mesh %s  mode %s\n", n.Name, n.Site, n.MeshIP, n.Mode)
	fmt.Fprintf(w, "gossip %s  tunnel %s  relay %v\n", n.Gossip, n.Tunnel, n.Relay)
	if n.Maintenance {
		fmt.Fprintf(w, "maintenance on%s since %s: exports withdrawn, new streams refused\n", Reason(n.MaintenanceReason), n.MaintenanceSince)
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tSITE\tSTATE\tUP\tPATH\tENDPOINT\tRTT\tSTREAMS\tTX\tRX\tHANDSHAKE")
	for _, p := range st.Peers {
		ep := p.Endpoint
		if p.RelayVia != "" {
			ep += " via " + p.RelayVia
		}
		hs := p.LastHandshake
		if hs == "" {
			hs = "never"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", p.Name, p.Site, p.State, p.Up, p.Path,
			Dash(ep), RTT(p), p.Streams, Bytes(p.TxBytes), Bytes(p.RxBytes), hs)
	}
	tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tNODE\tSITE\tHEALTHY\tACTIVE")
	for _, s := range st.Services {
		for _, e := range s.Endpoints {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%d\n", s.Name, e.Node, e.Site, e.Healthy, e.Active)
		}
	}
	tw.Flush()

	if len(st.Imports) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "IMPORT\tLISTEN\tACTIVE\tTOTAL\tFAILED")
		for _, im := range st.Imports {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\n", im.Name, im.Listen, im.Active, im.Total, im.Failed)
		}
		tw.Flush()
	}
}

// Ping writes meshd ping's report: a header, a line per round trip and
// the summary with loss and min/avg/max RTT.
func Ping(w io.Writer, res node.PingResult) {
	fmt.Fprintf(w, "PING %s (site %s) through the tunnel\n", res.Peer, res.Site)
	for _, r := range res.Replies {
		path := r.Path
		if r.RelayVia != "" {
			path += " via " + r.RelayVia
		}
		if !r.OK {
			fmt.Fprintf(w, "seq=%d failed: %s (path %s)\n", r.Seq, r.Error, path)
			continue
		}
		fmt.Fprintf(w, "seq=%d rtt=%.3fms path=%s endpoint=%s\n", r.Seq, r.RTTMs, path, Dash(r.Endpoint))
	}
	loss := 100 * float64(res.Sent-res.Received) / float64(max(res.Sent, 1))
	fmt.Fprintf(w, "%d sent, %d received, %.0f%% loss; rtt min/avg/max %.3f/%.3f/%.3f ms\n",
		res.Sent, res.Received, loss, res.MinMs, res.AvgMs, res.MaxMs)
}

// Reload writes the one line of a reload the node applied.
func Reload(w io.Writer, res node.ReloadResult) {
	what := "nothing to change in exports or imports"
	if len(res.Changes) > 0 {
		what = strings.Join(res.Changes, "; ")
	}
	fmt.Fprintf(w, "reloaded %s: %s\n", res.File, what)
}

// Maint writes the one line of the maintenance state the node answered.
func Maint(w io.Writer, res node.MaintRequest) {
	if res.On {
		fmt.Fprintf(w, "maintenance on%s: exports withdrawn, new streams refused\n", Reason(res.Reason))
	} else {
		fmt.Fprintln(w, "maintenance off: exports published")
	}
}

// Reason is " (r)", or "" when r is empty.
func Reason(r string) string {
	if r == "" {
		return ""
	}
	return fmt.Sprintf(" (%s)", r)
}

// RTT is the peer's RTT as "1.23ms", or "-" when nothing was measured.
func RTT(p node.PeerStatus) string {
	if p.RTTMs == nil || *p.RTTMs <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fms", *p.RTTMs)
}

// Dash is s, or "-" when s is empty.
func Dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Bytes is b in binary units: 512B, 1.5KiB, 3.0MiB, ...
func Bytes(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%dB", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(b)/float64(div), "KMGTPE"[exp])
}
