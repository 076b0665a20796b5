package tunnel

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/meshd/meshd/internal/key"
	"golang.org/x/crypto/curve25519"
)

// Path probes: their wire format (built and checked here), the pair keys
// that authenticate them, and what a received probe or handshake changes.

// probe builds a probe packet for peer to (see the probe format): magic,
// kind, our key, seq, stamp, truncated MAC. stamp 0 takes the next one.
func (b *PathBind) probe(kind byte, to key.PublicKey, seq, stamp uint64) []byte {
	if stamp == 0 {
		stamp = b.stamp.Add(1)
	}
	pkt := make([]byte, 0, probeLen+key.Len)
	pkt = append(pkt, probeMagic, kind)
	pkt = append(pkt, b.self[:]...)
	pkt = binary.BigEndian.AppendUint64(pkt, seq)
	pkt = binary.BigEndian.AppendUint64(pkt, stamp)
	pkt = append(pkt, probeMAC((*b.probeKeys.Load())[0], pkt, to)...)
	b.mu.Lock()
	pk := b.pairKeyLocked(to, b.paths[to])
	b.mu.Unlock()
	return append(pkt, probeMAC(pk, pkt, to)...)
}

// SetPrivateKey gives the bind this node's private key, for probes' pair
// MACs; call it before Open. Without it pairmac is keyed by zeros (tests).
func (b *PathBind) SetPrivateKey(k key.PrivateKey) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.priv = &k
}

// pairKeyLocked returns the pairmac key shared with peer pub, cached in p
// (may be nil: then computed and not kept).
func (b *PathBind) pairKeyLocked(pub key.PublicKey, p *peerPath) []byte {
	if p != nil && p.pairKey != nil {
		return p.pairKey
	}
	secret := make([]byte, 32)
	if b.priv != nil {
		if s, err := curve25519.X25519(b.priv[:], pub[:]); err == nil {
			secret = s
		}
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("meshd path probe pair v3"))
	k := m.Sum(nil)
	if p != nil {
		p.pairKey = k
	}
	return k
}

// probeMAC is the 16-byte MAC of a probe header addressed to to.
func probeMAC(k, hdr []byte, to key.PublicKey) []byte {
	m := hmac.New(sha256.New, k)
	m.Write(hdr[:probeHdrLen])
	m.Write(to[:])
	return m.Sum(nil)[:16]
}

// handleProbe answers fresh pings and records pongs to pings in flight;
// unauthentic, stale and replayed probes are dropped silently and change
// nothing.
func (b *PathBind) handleProbe(pkt []byte, from netip.AddrPort) {
	if b.probeKey == nil || len(pkt) != probeLen {
		return
	}
	authentic := false
	for _, k := range *b.probeKeys.Load() {
		authentic = authentic || hmac.Equal(probeMAC(k, pkt, b.self), pkt[probeHdrLen:probeHdrLen+16])
	}
	if !authentic {
		return
	}
	var pub key.PublicKey
	copy(pub[:], pkt[2:2+key.Len])
	seq := binary.BigEndian.Uint64(pkt[2+key.Len:])
	stamp := binary.BigEndian.Uint64(pkt[2+key.Len+8:])
	b.mu.Lock()
	c := b.conn
	blocked := b.blocked(pub)
	p := b.paths[pub]
	if p != nil && (!hmac.Equal(probeMAC(b.pairKeyLocked(pub, p), pkt, b.self), pkt[probeHdrLen+16:]) ||
		!b.freshLocked(p, pkt[1], seq, stamp)) {
		b.mu.Unlock()
		return
	}
	if p != nil {
		// A fresh authenticated probe names its sender: learn where its
		// packets come from (behind NAT that may not be its advertised
		// address). One learned address per peer: a peer whose port keeps
		// changing cannot grow the map.
		if from != p.direct && from != p.learned {
			if at, _ := b.addrPeer(p.learned); p.learned.IsValid() && at == pub {
				b.byAddr.Delete(p.learned)
			}
			p.learned = from
			b.byAddr.Store(from, pub)
		}
	}
	if !blocked && pkt[1] == probePong && p != nil {
		p.ack(seq)
		p.pongAt.Store(time.Now().UnixNano())
	}
	if !blocked && pkt[1] == probePing && p != nil {
		p.heardAt.Store(time.Now().UnixNano())
	}
	if p == nil && pkt[1] == probeCall {
		b.noteStrangerLocked(from, time.Now()) // answered by a handshake once we learn of it
	}
	b.mu.Unlock()
	if !blocked && pkt[1] == probeCall && p != nil && b.onCall != nil {
		b.onCall(pub)
	}
	if !blocked && pkt[1] == probePing && c != nil && p != nil {
		c.WriteToUDPAddrPort(b.probe(probePong, pub, seq, stamp), from)
	}
}

// noteHandshake records a received WireGuard handshake message from the
// peer, or queues a poke when it sends transport data with no handshake
// seen since this node started (see stalePokeEvery). It reports whether
// the packets must be dropped: a handshake initiation from a peer that is
// not a WireGuard peer yet is dropped here, not left to race the tunnel
// adding the peer — WireGuard would answer it if the peer were added in
// time, crossing the handshake the tunnel starts, and both would fail
// until WireGuard's 5 s retry.
func (b *PathBind) noteHandshake(pp *peerPath, pub key.PublicKey, typ byte) (drop bool) {
	if !pp.wg.Load() && (typ == wgInitiationType || typ == wgTransportType) {
		// WireGuard does not know the peer yet: make it a WireGuard peer
		// and answer with a handshake of ours.
		b.wake(pp, pub)
		return true
	}
	switch typ {
	case wgInitiationType, wgResponseType:
		pp.handshook.Store(true)
	case wgTransportType:
		if !pp.handshook.Load() {
			b.wake(pp, pub)
		}
	}
	return false
}

// wake queues pub for the tunnel to handshake with, at most once per
// stalePokeEvery per peer.
func (b *PathBind) wake(pp *peerPath, pub key.PublicKey) {
	now := time.Now().UnixNano()
	if last := pp.pokedAt.Load(); now-last < int64(stalePokeEvery) || !pp.pokedAt.CompareAndSwap(last, now) {
		return
	}
	select {
	case b.stale <- pub:
	default:
	}
}

// SetWG records whether pub is a WireGuard peer of the device: packets
// from a peer that is not make the tunnel add it (see Stale).
func (b *PathBind) SetWG(pub key.PublicKey, on bool) {
	b.mu.Lock()
	p := b.paths[pub]
	b.mu.Unlock()
	if p != nil {
		p.wg.Store(on)
		if on {
			p.pokedAt.Store(0)
		}
	}
}

// Stale delivers peers whose packets show a keypair from before this node
// started: the tunnel answers each with a handshake.
func (b *PathBind) Stale() <-chan key.PublicKey { return b.stale }

// Call asks peer, by an authenticated probe to its direct address, to dial a
// session to this node. Of two peers that both want a session, only the
// one with the smaller key initiates WireGuard's handshake: two
// initiations crossing on the wire each overwrite the other's handshake
// state and cost WireGuard's 5 s retry.
func (b *PathBind) Call(pub key.PublicKey) {
	if b.probeKey == nil {
		return
	}
	b.mu.Lock()
	c := b.conn
	var to netip.AddrPort
	if p := b.paths[pub]; p != nil && !b.blocked(pub) {
		to = p.direct
	}
	b.mu.Unlock()
	if c != nil && to.IsValid() {
		c.WriteToUDPAddrPort(b.probe(probeCall, pub, 0, 0), to)
	}
}

// freshLocked reports whether an authentic probe from peer p is new, and
// if so records it: a pong must answer the ping in flight with its seq and
// stamp, not yet answered; any other kind must carry a stamp newer than the
// last one taken from p.
func (b *PathBind) freshLocked(p *peerPath, kind byte, seq, stamp uint64) bool {
	if kind == probePong {
		i := seq % probeRing
		return p.sent[i] == seq && p.stamps[i] == stamp && !p.acked[i]
	}
	if stamp <= p.lastStamp {
		return false
	}
	p.lastStamp = stamp
	return true
}
