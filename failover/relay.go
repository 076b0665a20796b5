package failover

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	wgkey "github.com/meshd/meshd/internal/key"
)

// Relay client backoff bounds (node.relayLoop).
const (
	// RelayMinBackoff is the first wait after a round in which no relay
	// could be reached; a lost relay is also skipped for 4 times this.
	RelayMinBackoff = 200 * time.Millisecond
	// RelayMaxBackoff caps the wait between rounds and is how long a relay
	// that could not be dialled is skipped.
	RelayMaxBackoff = 5 * time.Second
)

// Relay is a relay server a node may use as its fallback path.
type Relay struct {
	Name string          // the node running it
	Addr netip.AddrPort  // where it listens
	Key  wgkey.PublicKey // the relay node's WireGuard key (from its signed record): it must prove it
}

// RelayChooser decides which relay a node connects to and how long it
// waits between attempts: every node tries the relays in the same order
// (by name), skips for a while those that just failed, and backs off
// exponentially while none can be reached. Its zero value uses
// RelayMinBackoff and RelayMaxBackoff. It is not safe for concurrent use:
// one relay loop owns it.
type RelayChooser struct {
	Min, Max time.Duration // 0: RelayMinBackoff, RelayMaxBackoff

	backoff time.Duration        // the next wait; 0: Min
	skip    map[string]time.Time // relays that just failed, until when
}

// Candidates returns the relays to try at now, in order: by name, so that
// every node picks the same one (a relay forwards only between its own
// clients), leaving out those skipped until after now. rs is not modified.
func (c *RelayChooser) Candidates(rs []Relay, now time.Time) []Relay {
	for name, until := range c.skip {
		if !now.Before(until) {
			delete(c.skip, name)
		}
	}
	out := make([]Relay, 0, len(rs))
	for _, r := range rs {
		if until, bad := c.skip[r.Name]; !bad || !now.Before(until) {
			out = append(out, r)
		}
	}
	slices.SortStableFunc(out, func(a, b Relay) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// DialFailed records that relay name could not be dialled in the round
// that began at now: it is skipped for Max.
func (c *RelayChooser) DialFailed(name string, now time.Time) { c.skipFor(name, now, c.max()) }

// Lost records that the connection to relay name ended at now: it is
// skipped for 4×Min, so the node moves on to the next relay.
func (c *RelayChooser) Lost(name string, now time.Time) { c.skipFor(name, now, 4*c.min()) }

// Connected records a connected relay: the backoff starts again from Min.
func (c *RelayChooser) Connected() { c.backoff = c.min() }

// Wait returns how long to wait after a round in which no relay could be
// reached: Min, then doubling up to Max until Connected.
func (c *RelayChooser) Wait() time.Duration {
	d := c.backoff
	if d <= 0 {
		d = c.min()
	}
	c.backoff = min(d*2, c.max())
	return d
}

func (c *RelayChooser) skipFor(name string, now time.Time, d time.Duration) {
	if c.skip == nil {
		c.skip = make(map[string]time.Time)
	}
	c.skip[name] = now.Add(d)
}

func (c *RelayChooser) min() time.Duration {
	if c.Min > 0 {
		return c.Min
	}
	return RelayMinBackoff
}

func (c *RelayChooser) max() time.Duration {
	if c.Max > 0 {
		return c.Max
	}
	return RelayMaxBackoff
}
