package tunnel

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/meshd/meshd/internal/key"
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
	b.ecdhPriv, _ = ecdh.X25519().NewPrivateKey(k[:]) // 32 bytes: never fails
}

// x25519 returns the X25519 of priv (this node's key, as an ecdh key made
// once: golang.org/x/crypto/curve25519.X25519 makes one per call, and
// making one computes its public key, a second scalar multiplication) and
// pub.
func x25519(priv *ecdh.PrivateKey, pub key.PublicKey) ([]byte, error) {
	pk, err := ecdh.X25519().NewPublicKey(pub[:])
	if err != nil {
		return nil, err
	}
	return priv.ECDH(pk)
}

// pairKeyLocked returns the pairmac key shared with peer pub, cached in p
// (may be nil: then computed and not kept).
func (b *PathBind) pairKeyLocked(pub key.PublicKey, p *peerPath) []byte {
	if p != nil && p.pairKey != nil {
		return p.pairKey
	}
	secret := make([]byte, 32)
	if p != nil && p.secret.Load() != nil {
		secret = *p.secret.Load()
	} else if b.ecdhPriv != nil {
		if s, err := x25519(b.ecdhPriv, pub); err == nil {
			secret = s
			if p != nil {
				p.secret.Store(&s)
			}
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

// sharedSecret returns the X25519 of this node's private key and pub's
// public key, computed once per peer: the probes' pair key and the
// session proof (authSession) are both derived from it, and X25519 is the
// dearest step of both. nil if the bind has no private key or pub is not
// a peer.
func (b *PathBind) sharedSecret(pub key.PublicKey) []byte {
	pp := b.peer(pub)
	if pp == nil {
		return nil
	}
	if s := pp.secret.Load(); s != nil {
		return *s
	}
	b.mu.Lock()
	priv := b.ecdhPriv
	b.mu.Unlock()
	if priv == nil {
		return nil
	}
	s, err := x25519(priv, pub)
	if err != nil {
		return nil
	}
	pp.secret.Store(&s)
	return s
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
		if p.answered(seq, time.Now()) {
			b.kickLoop()
		}
		p.pongAt.Store(time.Now().UnixNano())
	}
	if !blocked && pkt[1] == probePing && p != nil {
		p.heardAt.Store(time.Now().UnixNano())
		// A peer probes only while it holds or dials a session with us: one
		// that is not a WireGuard peer yet is dialling, and its handshake
		// follows. Made a WireGuard peer now, WireGuard answers that at once.
		if !p.wg.Load() && p.wantWG.CompareAndSwap(false, true) {
			select {
			case b.stale <- pub:
			default:
				p.wantWG.Store(false)
			}
		}
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

// noteHandshake looks at a WireGuard message pkt from the peer (from: its
// source address), received at now (unix ns), before WireGuard does, and
// reports whether it must be dropped. It makes sure that one WireGuard handshake sets a session up:
//
//   - An initiation from a peer that is not a WireGuard peer of the device
//     yet (WireGuard would drop it and the peer retry only after 5 s) is
//     held: the tunnel makes the peer a WireGuard peer and hands it back
//     (TakeHeld, Reinject), and WireGuard answers it. (Answering with an
//     initiation of our own instead cost a second handshake.)
//   - Two initiations crossing (both sides dial at once) overwrite each
//     other's handshake state and cost WireGuard's 5 s retry. The smaller
//     key's wins: within initPending of sending its own initiation, a node
//     with the smaller key drops the larger's (and sends its own again if
//     it stays unanswered: see resendInitiation), which the larger key's
//     node answers. The larger key's node
//     lets the smaller's through, and WireGuard answers it (and an
//     initiation the smaller's WireGuard makes right after letting the
//     larger's through is withheld: see noteSent).
//   - Transport data from a peer with no handshake seen since this node
//     started (this node restarted: the peer still uses a keypair of our
//     previous run) queues a poke, a handshake of ours (see
//     stalePokeEvery); from a peer that is not a WireGuard peer yet it is
//     dropped and poked likewise.
func (b *PathBind) noteHandshake(pp *peerPath, pub key.PublicKey, pkt []byte, from netip.AddrPort, now int64) (drop bool) {
	if len(pkt) == 0 {
		return false
	}
	typ := pkt[0]
	if typ <= wgResponseType {
		trace(b.self, pub, wgStep("received", typ))
	}
	if !pp.wg.Load() {
		switch typ {
		case wgInitiationType:
			if len(pkt) == wgInitiationLen {
				b.hold(pp, pub, pkt, from, now)
			}
			return true
		case wgTransportType:
			b.wake(pp, pub)
			return true
		}
		return false
	}
	switch typ {
	case wgInitiationType:
		pp.hs.Lock() // against noteSent: one of the two sees the other
		if b.self.Less(pub) && pp.initSent(now) {
			pp.hs.Unlock()
			b.resendInitiation(pp, pub)
			return true
		}
		pp.peerInitAt.Store(now)
		pp.hs.Unlock()
		pp.handshook.Store(true)
	case wgResponseType:
		// An answer to our pending initiation names it (its receiver
		// index is our initiation's sender index); a late answer to an
		// older one does not count.
		if ip := pp.initPkt.Load(); ip != nil && len(pkt) >= 12 && bytes.Equal(pkt[8:12], (*ip)[4:8]) {
			pp.respAt.Store(now)
		}
		pp.handshook.Store(true)
	case wgTransportType:
		if !pp.handshook.Load() {
			b.wake(pp, pub)
		}
	}
	return false
}

// noteSent looks at a WireGuard handshake message pkt WireGuard sends the
// peer at now (unix ns) and reports whether it must be dropped: an
// initiation the smaller key's node makes within initPending of letting
// the larger key's through, before WireGuard answered that or less than
// answerGrace after. (It was let through because this node had none
// pending; WireGuard made one of its own before or while it answered it:
// its handshake goroutines run at once. After an answer WireGuard starts
// no initiation for 5 s, unless the peer is made anew.) Sent, it would
// cross the larger's (see noteHandshake); WireGuard answers the larger's,
// and the larger's first packet on the new keypair sends what waits here.
func (b *PathBind) noteSent(pp *peerPath, pub key.PublicKey, pkt []byte, now int64) (drop bool) {
	switch pkt[0] {
	case wgInitiationType:
		pp.hs.Lock()
		if at, resp := pp.peerInitAt.Load(), pp.respSentAt.Load(); b.self.Less(pub) && at != 0 &&
			now-at < int64(initPending) && (resp < at || now-resp < int64(answerGrace)) {
			pp.hs.Unlock()
			trace(b.self, pub, "wg initiation withheld")
			return true
		}
		if len(pkt) == wgInitiationLen {
			pp.sentInitiation(pkt, now)
		}
		pp.hs.Unlock()
	case wgResponseType:
		pp.respSentAt.Store(now)
	}
	pp.handshook.Store(true)
	trace(b.self, pub, wgStep("sent", pkt[0]))
	return false
}

// sentInitiation records an initiation sent to the peer at now (not the
// same one resent: see resendInitiation).
func (pp *peerPath) sentInitiation(pkt []byte, now int64) {
	if old := pp.initPkt.Load(); old != nil && bytes.Equal(*old, pkt) {
		return
	}
	cp := bytes.Clone(pkt)
	pp.initPkt.Store(&cp)
	pp.initAt.Store(now)
}

// initSent reports whether this node sent the peer an initiation within
// initPending of now (unix ns) that is unanswered, or answered less than
// answerGrace ago: the answer may still wait in WireGuard's handshake
// queue, which runs on several goroutines, and the peer's initiation let
// through now could be taken first and spoil it.
func (pp *peerPath) initSent(now int64) bool {
	at := pp.initAt.Load()
	if at == 0 || now-at >= int64(initPending) {
		return false
	}
	resp := pp.respAt.Load()
	return resp < at || now-resp < int64(answerGrace)
}

// forgetHandshakes clears what the bind knows of the handshakes with a peer
// that stops being a WireGuard peer: made anew, its WireGuard state starts
// afresh.
func (pp *peerPath) forgetHandshakes() {
	pp.hs.Lock()
	defer pp.hs.Unlock()
	pp.initPkt.Store(nil)
	pp.initAt.Store(0)
	pp.resentAt.Store(0)
	pp.respAt.Store(0)
	pp.peerInitAt.Store(0)
	pp.respSentAt.Store(0)
}

// resendInitiation sends the peer this node's pending initiation again
// if it is still unanswered resendAfter from now, once per initiation. A
// peer of an earlier version drops an initiation from a node that is not
// its WireGuard peer yet and answers with one of its own, which this node
// drops (see noteHandshake): without the resend, WireGuard's 5 s retry.
// Not at once: a peer that got the first one answers it within a round
// trip, and wireguard-go may take two copies of one initiation in flight
// at once for two handshakes (its replay check and its update are not one
// step), which spoils the first.
func (b *PathBind) resendInitiation(pp *peerPath, pub key.PublicKey) {
	at := pp.initAt.Load()
	if pp.initPkt.Load() == nil || pp.resentAt.Swap(at) == at {
		return
	}
	trace(b.self, pub, "wg initiation resend scheduled")
	time.AfterFunc(resendAfter, func() {
		pkt := pp.initPkt.Load()
		if pp.initAt.Load() != at || pp.respAt.Load() >= at || pkt == nil {
			return // answered, or WireGuard made a new one
		}
		trace(b.self, pub, "wg initiation resent")
		b.Send([][]byte{*pkt}, &Endpoint{Peer: pub}) // closed: ErrClosed, nothing sent
	})
}

// hold keeps an initiation from a peer that is not a WireGuard peer yet
// (the newest one) and queues the peer for the tunnel (see Stale).
func (b *PathBind) hold(pp *peerPath, pub key.PublicKey, pkt []byte, from netip.AddrPort, now int64) {
	h := &heldInit{pkt: bytes.Clone(pkt), from: from, at: now}
	if pp.held.Swap(h) != nil {
		return // queued already
	}
	select {
	case b.stale <- pub:
	default:
		pp.held.CompareAndSwap(h, nil)
	}
}

// TakeHeld returns the initiation held for pub (see noteHandshake), if
// one came within heldInitTTL, and forgets it.
func (b *PathBind) TakeHeld(pub key.PublicKey) (pkt []byte, from netip.AddrPort, ok bool) {
	pp := b.peer(pub)
	if pp == nil {
		return nil, netip.AddrPort{}, false
	}
	h := pp.held.Swap(nil)
	if h == nil || time.Now().UnixNano()-h.at >= int64(heldInitTTL) {
		return nil, netip.AddrPort{}, false
	}
	return h.pkt, h.from, true
}

// TakeWantWG reports whether pub probed this node while it was not a
// WireGuard peer of the device (it is dialling a session), and forgets it.
func (b *PathBind) TakeWantWG(pub key.PublicKey) bool {
	pp := b.peer(pub)
	return pp != nil && pp.wantWG.Swap(false)
}

// Reinject hands WireGuard a packet from pub that the bind held back
// (TakeHeld), as if it had just come from from. It never blocks.
func (b *PathBind) Reinject(pub key.PublicKey, pkt []byte, from netip.AddrPort) {
	select {
	case b.relayIn <- relayPacket{from: pub, pkt: pkt, addr: from}:
	default:
	}
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
		} else {
			p.forgetHandshakes()
		}
	}
}

// Stale delivers peers the tunnel must make WireGuard peers of the device:
// one whose initiation the bind holds (TakeHeld), that probed us
// (TakeWantWG), or whose packets show a keypair from before this node
// started (answered with a handshake).
func (b *PathBind) Stale() <-chan key.PublicKey { return b.stale }

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
