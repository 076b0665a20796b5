package node

import (
	"os"
	"sort"
	"strconv"
	"time"

	"github.com/meshd/meshd/failover"
	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/internal/procs"
)

// Sessions on demand (README "Performance", fleet scale). The node keeps a tunnel session only with
// the warm sets of its imports (failover.WarmSet over the catalog) and with
// peers that need one with it; the tunnel opens any other on the first
// stream. A session this node owns (see tunnel.SessionInfo) that carries
// no stream and serves no warm set closes after the idle timeout.

// idleTimeoutEnv overrides the idle timeout (a Go duration) and
// warmLimitEnv the warm-set cap per import (1-64): knobs for tests, which
// set them small, not a stable interface.
const (
	idleTimeoutEnv = "MESHD_DEBUG_SESSION_IDLE_TIMEOUT"
	warmLimitEnv   = "MESHD_DEBUG_WARM_LIMIT"
)

// warmLimit is the warm-set cap per import: the environment knob if set
// and valid, else failover.DefaultWarmLimit.
func warmLimit() int {
	if v, err := strconv.Atoi(os.Getenv(warmLimitEnv)); err == nil && v >= 1 && v <= 64 {
		return v
	}
	return failover.DefaultWarmLimit
}

// sessionIdleTimeout is the idle timeout: the environment knob if set and
// valid (100ms-1h), else failover.DefaultIdleTimeout.
func sessionIdleTimeout() time.Duration {
	if d, err := time.ParseDuration(os.Getenv(idleTimeoutEnv)); err == nil && d >= 100*time.Millisecond && d <= time.Hour {
		return d
	}
	return failover.DefaultIdleTimeout
}

// warmSet computes the peers the imports keep sessions with from catalog c:
// per import, the healthy endpoints (by the catalog: export check passing,
// node alive in gossip) of the two most preferred sites that have one.
func (n *Node) warmSet(c *catalog) []key.PublicKey {
	seen := make(map[key.PublicKey]bool)
	var out []key.PublicKey
	for _, imp := range n.Config().Imports {
		eps := c.services[imp.Name]
		in := make([]failover.Endpoint, 0, len(eps))
		pubs := make(map[string]key.PublicKey, len(eps))
		for _, e := range eps {
			in = append(in, failover.Endpoint{Node: e.node, Site: e.site, Local: e.local, Weight: e.weight,
				Down: !e.healthy || !e.alive})
			pubs[e.node] = e.pub
		}
		for _, name := range failover.WarmSet(in, imp.Sites, n.warmLimit, n.cfg.Name) {
			if pub := pubs[name]; !pub.IsZero() && !seen[pub] {
				seen[pub] = true
				out = append(out, pub)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// updateWarm hands the tunnel the warm set of catalog c.
func (n *Node) updateWarm(c *catalog) {
	ws := n.warmSet(c)
	set := make(map[key.PublicKey]bool, len(ws))
	for _, pub := range ws {
		set[pub] = true
	}
	n.warm.Store(&set)
	if n.tun != nil {
		n.tun.SetWarm(ws)
	}
}

// isWarm tells whether pub is in some import's warm set.
func (n *Node) isWarm(pub key.PublicKey) bool {
	if w := n.warm.Load(); w != nil {
		return (*w)[pub]
	}
	return false
}

// watchSessions closes the sessions this node owns once they have carried
// no stream and served no warm set for the idle timeout, and a redundant
// one (both sides dialled) as soon as it carries nothing.
func (n *Node) watchSessions() {
	every := min(time.Second, n.idle.Timeout()/4)
	tick := n.pacer.NewTimer(every)
	defer tick.Stop()
	tracked := make(map[string]bool) // owned by this goroutine
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
			tick.Reset(every)
		}
		now := time.Now()
		procs.Tick(now) // narrows the scheduler of an idle node (meshd join enables it)
		seen := make(map[string]bool, len(tracked))
		for _, si := range n.tun.Sessions() {
			if !si.Owned {
				continue
			}
			k := si.PublicKey.String()
			if si.Redundant && si.SpareStreams == 0 && n.tun.CloseSpare(si.PublicKey) {
				continue
			}
			seen[k] = true
			busy := si.Streams > 0 || n.isWarm(si.PublicKey)
			if n.idle.Observe(k, busy, now) && n.tun.CloseIdle(si.PublicKey) {
				n.log.Debug("idle session closed", "peer", n.catalog.Load().byKey[si.PublicKey], "idle", n.idle.Timeout())
				n.idle.Forget(k)
				delete(seen, k)
			}
		}
		for k := range tracked {
			if !seen[k] {
				n.idle.Forget(k)
			}
		}
		tracked = seen
	}
}
