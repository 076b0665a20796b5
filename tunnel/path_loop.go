package tunnel

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/meshd/meshd/internal/key"
)

// The probe loop: every probeEvery it judges each active peer that is due
// (peerPath.judge) and sends it its next ping.

// probeLoop pings every peer's direct address and re-judges its path.
func (b *PathBind) probeLoop(c *net.UDPConn, done chan struct{}) {
	defer b.wg.Done()
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	type out struct {
		to         netip.AddrPort
		pub        key.PublicKey
		seq, stamp uint64
	}
	var sends []out
	for {
		select {
		case <-done:
			return
		case <-tick.C:
		}
		sends = sends[:0]
		now := time.Now()
		b.mu.Lock()
		for pub, p := range b.active {
			if now.Before(p.next) {
				continue
			}
			b.judgeLocked(pub, p, now)
			if !p.direct.IsValid() || b.blocked(pub) {
				continue
			}
			p.next = now.Add(p.every - probeEvery/4) // due at the tick nearest every
			st := b.stamp.Add(1)
			sends = append(sends, out{p.direct, pub, p.startProbe(st), st})
		}
		b.mu.Unlock()
		for _, s := range sends {
			c.WriteToUDPAddrPort(b.probe(probePing, s.pub, s.seq, s.stamp), s.to)
		}
	}
}

// judgeLocked moves a peer between relay and direct by its probe record
// (see peerPath.judge) and logs the move.
func (b *PathBind) judgeLocked(pub key.PublicKey, p *peerPath, now time.Time) {
	moved, answered := p.judge(now)
	relayBy := b.relayName()
	switch {
	case !moved:
	case !p.useRelay:
		b.log.Info("path: direct path confirmed", "peer", b.peerName(pub))
	case relayBy == "":
		b.log.Warn("path: direct path lost or lossy; no relay to fall back to", "peer", b.peerName(pub),
			"answered", fmt.Sprintf("%d/%d", answered, probeWindow))
	default:
		b.log.Warn("path: direct path lost or lossy; using the relay", "peer", b.peerName(pub),
			"answered", fmt.Sprintf("%d/%d", answered, probeWindow), "relay", relayBy)
	}
}
