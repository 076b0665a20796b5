// Package benchrun runs the measurements of `meshd bench` on meshes that
// package lab starts, each next to its baseline in the same run, and
// records them as flat result keys (internal/bench.Results; the keys are
// documented in `meshd bench --help` and README "Performance"):
//
//   - loopback: an exporter and an importer on 127.0.0.1; throughput,
//     latency and connection rate through the import and directly
//     against the target (loopback.go);
//   - idle: many connections held through importer/exporter pairs of
//     their own, with every node's RSS growth per connection (idle.go);
//   - netns: the same three figures between two network namespaces for
//     four paths: direct, plain wireguard-go, meshd userspace and kernel
//     mode (netns.go).
//
// cmd/meshd maps its flags to Options (Quick, ParseFormat) and prints the
// Report; Help is its --help.
package benchrun

import (
	"fmt"
	"strings"
	"time"
)

// Measurements are the names --only accepts and runs by default, in run
// order; Optional ones run only when --only names them.
var (
	Measurements = []string{"throughput", "latency", "connrate", "idle"}
	Optional     = []string{"scale"}
)

// Options are the settings of one bench run.
type Options struct {
	Duration    time.Duration // each throughput run; latency and connrate runs take half
	Idle        int           // idle connections
	IdleNodes   int           // importer/exporter pairs carrying them
	IdleHold    time.Duration // how long they are held before the second verification
	ConnWorkers int           // concurrent clients of the connection rate
	NetnsLoss   float64       // percent of UDP packets dropped leaving each namespace
	Nodes       int           // scale: meshd processes
	ScaleIdle   time.Duration // scale: the idle window CPU and gossip are measured over
	Only        map[string]bool
	Netns       bool // also measure between two network namespaces
	Loopback    bool // run the loopback measurements
	Verbose     bool // the nodes' logs on stderr

	// Scale's failover phases after the idle ones (scalefo.go): a drill
	// of s1, a SIGSTOP of s2's exporter, a partition and its heal (root,
	// nft). --scale-drill, --scale-sigstop, --scale-partition.
	ScaleDrill, ScaleSigstop, ScalePartition bool
}

// ParseOnly reads a comma-separated list of Measurements.
func ParseOnly(s string) (map[string]bool, error) {
	only := map[string]bool{}
	for _, m := range strings.Split(s, ",") {
		m = strings.TrimSpace(m)
		if m == "" {
			continue
		}
		all := append(append([]string(nil), Measurements...), Optional...)
		ok := false
		for _, k := range all {
			ok = ok || k == m
		}
		if !ok {
			return nil, fmt.Errorf("--only: unknown measurement %q (allowed: %s)", m, strings.Join(all, ","))
		}
		only[m] = true
	}
	if len(only) == 0 {
		return nil, fmt.Errorf("--only: no measurement selected")
	}
	return only, nil
}

// Validate says what is wrong with o, in the terms of meshd bench's flags.
func (o Options) Validate() error {
	switch {
	case o.Duration <= 0 || o.Duration > time.Hour:
		return fmt.Errorf("--duration %v: must be between 0 and 1h", o.Duration)
	case o.Idle < 1 || o.Idle > 1_000_000:
		return fmt.Errorf("--idle %d: must be between 1 and 1000000", o.Idle)
	case o.IdleNodes < 1 || o.IdleNodes > 32:
		return fmt.Errorf("--idle-nodes %d: must be between 1 and 32", o.IdleNodes)
	case o.Idle < o.IdleNodes:
		return fmt.Errorf("--idle %d: fewer connections than --idle-nodes %d", o.Idle, o.IdleNodes)
	case o.NetnsLoss < 0 || o.NetnsLoss > 50:
		return fmt.Errorf("--netns-loss %v: must be between 0 and 50 (percent)", o.NetnsLoss)
	case o.NetnsLoss > 0 && !o.Netns:
		return fmt.Errorf("--netns-loss needs --netns")
	case o.ConnWorkers < 1 || o.ConnWorkers > 256:
		return fmt.Errorf("--conn-workers %d: must be between 1 and 256", o.ConnWorkers)
	case o.IdleHold < 0 || o.IdleHold > time.Hour:
		return fmt.Errorf("--idle-hold %v: must be between 0 and 1h", o.IdleHold)
	case len(o.Only) == 0:
		return fmt.Errorf("--only: no measurement selected")
	case !o.Loopback && !o.Netns:
		return fmt.Errorf("--loopback=false: nothing to run without --netns")
	case o.Only["scale"] && (o.Nodes < scaleSites || o.Nodes > maxScaleNodes):
		return fmt.Errorf("--nodes %d: must be between %d and %d", o.Nodes, scaleSites, maxScaleNodes)
	case o.Only["scale"] && (o.ScaleIdle < time.Second || o.ScaleIdle > time.Hour):
		return fmt.Errorf("--scale-idle %v: must be between 1s and 1h", o.ScaleIdle)
	case !o.Loopback && !o.streams():
		return fmt.Errorf("--netns measures throughput, latency and connrate; --only selects none of them")
	}
	return nil
}

// maxScaleNodes bounds --nodes: each node is a process with a few hundred
// file descriptors and 30-40 MB.
const maxScaleNodes = 300

// streams reports whether o selects any of throughput, latency, connrate.
func (o Options) streams() bool {
	return o.Only["throughput"] || o.Only["latency"] || o.Only["connrate"]
}

// idleLoopback reports whether the idle measurement runs.
func (o Options) idleLoopback() bool { return o.Loopback && o.Only["idle"] }

// checkNoFile says whether each idle node's share of connections fits
// under the descriptor limit nofile (0: unknown, not checked). Each node
// carries its share (the importer one accepted socket each, the exporter
// one backend socket each) plus slack for imbalance and its own
// descriptors.
func (o Options) checkNoFile(nofile uint64) error {
	perNode := (o.Idle + o.IdleNodes - 1) / o.IdleNodes
	if o.idleLoopback() && nofile > 0 && uint64(perNode+1000) > nofile {
		return fmt.Errorf("--idle %d over --idle-nodes %d is %d connections per node, which needs RLIMIT_NOFILE >= %d; the hard limit is %d: add nodes, lower --idle or raise the limit",
			o.Idle, o.IdleNodes, perNode, perNode+1000, nofile)
	}
	return nil
}
