package failover

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Probe is one drill probe of a service: a new stream opened through the
// import's selection and failover path, as a client connection would be.
type Probe struct {
	At      time.Time     // when the probe started
	OK      bool          // the exporter reached the backend
	Node    string        // the node that served it (OK probes)
	Site    string        // that node's site
	Latency time.Duration // how long it took
	Err     string        // why it failed (failed probes)
}

// Report is the outcome of a failover drill (docs/formats.md).
type Report struct {
	Site       string          `json:"site"`        // the site that was cut off
	DurationMS int64           `json:"duration_ms"` // restore - start
	Services   []ServiceReport `json:"services"`    // sorted by name; [] rather than null
}

// ServiceReport is what the drill's probes of one service saw. Times are
// milliseconds; the start is when the black-hole began, the restore when
// it ended.
type ServiceReport struct {
	Name   string `json:"name"`
	Probes int    `json:"probes"` // probes sent, at any time
	Failed int    `json:"failed"` // probes that failed, at any time
	// RTOMS is the time from the start to the completion (At+Latency) of
	// the first OK probe served from another site, within the drill: when
	// a client first got through, not when it asked. It is 0 when the service was already
	// served from another site before the start and the first probe after
	// the start still was, and -1 if no probe during the drill was served
	// from another site.
	RTOMS int64 `json:"rto_ms"`
	// FailbackMS is the time from the restore to the completion of the
	// first OK probe served from the drilled site again, or -1 if there was none (including
	// services the site never served).
	FailbackMS int64 `json:"failback_ms"`

	Before string `json:"before"` // node of the last OK probe before the start; "" if none
	During string `json:"during"` // node that served the most OK probes during the drill (ties: first by name)
	After  string `json:"after"`  // node of the last OK probe after the restore

	// Extra fields, beyond docs/formats.md.
	Timeline     []TimelineEvent `json:"timeline,omitempty"` // runs of failures and of service from one site
	LatencyP50MS float64         `json:"latency_p50_ms"`     // median latency of OK probes
	LatencyMaxMS float64         `json:"latency_max_ms"`     // highest latency of an OK probe
}

// TimelineEvent kinds.
const (
	EventServed    = "served"    // a run of consecutive OK probes served from one site
	EventFailed    = "failed"    // a run of consecutive failed probes
	EventTruncated = "truncated" // the timeline was cut at maxTimeline events
)

// maxTimeline bounds a service's timeline; a flapping service would
// otherwise add an event every probe.
const maxTimeline = 1000

// TimelineEvent is one line of a service's timeline: a run of consecutive
// probes with the same outcome. Runs of OK probes are split where the
// serving site changes, not the node, since balancing within a site may
// change the node every probe; Nodes shows such spreading.
type TimelineEvent struct {
	AtMS  int64    `json:"at_ms"`           // offset of the run's first probe from the start; negative before it
	EndMS int64    `json:"end_ms"`          // offset of the completion (At+Latency) of the run's last probe; 0 for EventTruncated
	Kind  string   `json:"kind"`            // EventServed, EventFailed or EventTruncated (last, no other field)
	Count int      `json:"count,omitempty"` // probes in the run
	Node  string   `json:"node,omitempty"`  // served: the node that served the run's first probe
	Nodes []string `json:"nodes,omitempty"` // served: every node of the run in order of first appearance, if more than one
	Site  string   `json:"site,omitempty"`  // served: their site
	Err   string   `json:"err,omitempty"`   // failed: the run's first error
}

// Summarize builds the report of a drill of site that began at start and
// was lifted at restore, from the probes of each service (keyed by service
// name, in any order). A restore before start counts as start. RTOMS and
// FailbackMS are -1 when what they measure never happened (see
// ServiceReport).
func Summarize(site string, start, restore time.Time, probes map[string][]Probe) Report {
	if restore.Before(start) {
		restore = start
	}
	r := Report{
		Site:       site,
		DurationMS: restore.Sub(start).Milliseconds(),
		Services:   make([]ServiceReport, 0, len(probes)),
	}
	for name, ps := range probes {
		r.Services = append(r.Services, summarizeService(name, site, start, restore, ps))
	}
	slices.SortFunc(r.Services, func(a, b ServiceReport) int { return strings.Compare(a.Name, b.Name) })
	return r
}

func summarizeService(name, site string, start, restore time.Time, probes []Probe) ServiceReport {
	ps := slices.Clone(probes)
	// A probe belongs to the phase in which it completed: that is when its
	// client got (or failed to get) through.
	done := func(p Probe) time.Time { return p.At.Add(p.Latency) }
	slices.SortStableFunc(ps, func(a, b Probe) int { return done(a).Compare(done(b)) })
	sr := ServiceReport{Name: name, Probes: len(ps), RTOMS: -1, FailbackMS: -1}

	var (
		beforeSite  string
		firstDuring = true // next probe is the first at or after start
		served      = map[string]int{}
		lat         []time.Duration
	)
	for _, p := range ps {
		if !p.OK {
			sr.Failed++
		} else {
			lat = append(lat, p.Latency)
		}
		switch {
		case done(p).Before(start):
			if p.OK {
				sr.Before, beforeSite = p.Node, p.Site
			}
		case done(p).Before(restore):
			if firstDuring && p.OK && sr.Before != "" && beforeSite != site && p.Site != site {
				sr.RTOMS = 0
			}
			firstDuring = false
			if !p.OK {
				continue
			}
			served[p.Node]++
			if p.Site != site && sr.RTOMS < 0 {
				sr.RTOMS = done(p).Sub(start).Milliseconds() // when a client first got through, not when it asked
			}
		default:
			if !p.OK {
				continue
			}
			sr.After = p.Node
			if p.Site == site && sr.FailbackMS < 0 {
				sr.FailbackMS = done(p).Sub(restore).Milliseconds()
			}
		}
	}
	for node, n := range served {
		if best := served[sr.During]; n > best || n == best && node < sr.During {
			sr.During = node
		}
	}
	sr.Timeline = timeline(ps, start)
	if len(lat) > 0 {
		slices.Sort(lat)
		sr.LatencyP50MS = ms(lat[(len(lat)-1)/2])
		sr.LatencyMaxMS = ms(lat[len(lat)-1])
	}
	return sr
}

// timeline collapses probes sorted by time into runs.
func timeline(ps []Probe, start time.Time) []TimelineEvent {
	var evs []TimelineEvent
	for i, p := range ps {
		at := p.At.Sub(start).Milliseconds()
		end := p.At.Add(p.Latency).Sub(start).Milliseconds()
		if i > 0 && p.OK == ps[i-1].OK && (!p.OK || p.Site == ps[i-1].Site) {
			e := &evs[len(evs)-1]
			e.Count++
			e.EndMS = max(e.EndMS, end)
			if p.OK && !slices.Contains(e.Nodes, p.Node) {
				e.Nodes = append(e.Nodes, p.Node)
			}
			continue
		}
		if len(evs) == maxTimeline {
			return append(evs, TimelineEvent{AtMS: at, Kind: EventTruncated})
		}
		if p.OK {
			evs = append(evs, TimelineEvent{AtMS: at, EndMS: end, Kind: EventServed, Count: 1, Node: p.Node, Nodes: []string{p.Node}, Site: p.Site})
		} else {
			evs = append(evs, TimelineEvent{AtMS: at, EndMS: end, Kind: EventFailed, Count: 1, Err: p.Err})
		}
	}
	for i := range evs {
		if len(evs[i].Nodes) < 2 {
			evs[i].Nodes = nil
		}
	}
	return evs
}

func ms(d time.Duration) float64 {
	return float64(d) / float64(time.Millisecond)
}

// WriteText writes the report as a short table, one line per service,
// followed by each service's timeline. Write errors are ignored.
func (r Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "drill of site %s for %s\n\n", r.Site, fmtMS(r.DurationMS))
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tPROBES\tFAILED\tRTO\tFAILBACK\tBEFORE → DURING → AFTER\tP50\tMAX")
	for _, s := range r.Services {
		p50, pmax := "-", "-"
		if s.LatencyMaxMS > 0 {
			p50, pmax = fmt.Sprintf("%.1fms", s.LatencyP50MS), fmt.Sprintf("%.1fms", s.LatencyMaxMS)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s → %s → %s\t%s\t%s\n",
			s.Name, s.Probes, s.Failed, fmtOutcome(s.RTOMS), fmtOutcome(s.FailbackMS),
			orDash(s.Before), orDash(s.During), orDash(s.After), p50, pmax)
	}
	tw.Flush()
	for _, s := range r.Services {
		fmt.Fprintf(w, "\n%s:\n", s.Name)
		writeTimeline(w, s.Timeline, r.DurationMS)
	}
}

// writeTimeline prints events with the drill's start and restore marked.
func writeTimeline(w io.Writer, evs []TimelineEvent, restoreMS int64) {
	type line struct {
		at   int64
		rank int // markers sort before events at the same offset
		text string
	}
	lines := []line{
		{0, 0, "black-hole started"},
		{restoreMS, 0, "restored"},
	}
	for _, e := range evs {
		var text string
		switch e.Kind {
		case EventServed:
			nodes := e.Node
			if len(e.Nodes) > 0 {
				nodes = strings.Join(e.Nodes, ", ")
			}
			text = fmt.Sprintf("served ×%d by %s (%s)", e.Count, nodes, orDash(e.Site))
		case EventFailed:
			text = fmt.Sprintf("failed ×%d: %s", e.Count, orDash(e.Err))
		default:
			text = "(timeline truncated)"
		}
		lines = append(lines, line{e.AtMS, 1, text})
	}
	slices.SortStableFunc(lines, func(a, b line) int {
		return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.rank, b.rank))
	})
	for _, l := range lines {
		sign := "+"
		if l.at < 0 {
			sign = "-"
		}
		fmt.Fprintf(w, "  %s%-9s %s\n", sign, fmtMS(abs(l.at)), l.text)
	}
}

// fmtOutcome formats an RTO or failback: -1 is "never".
func fmtOutcome(v int64) string {
	if v < 0 {
		return "never"
	}
	return fmtMS(v)
}

func fmtMS(v int64) string {
	return (time.Duration(v) * time.Millisecond).String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}
