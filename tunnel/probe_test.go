package tunnel

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/meshd/meshd/internal/key"
)

func newKey(t *testing.T) key.PrivateKey {
	t.Helper()
	k, err := key.NewPrivate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func learnedOf(b *PathBind, pub key.PublicKey) netip.AddrPort {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.paths[pub].learned
}

// recvProbe returns the next probe read on c within d, or nil.
func recvProbe(t *testing.T, c *net.UDPConn, d time.Duration) []byte {
	t.Helper()
	buf := make([]byte, 256)
	c.SetReadDeadline(time.Now().Add(d))
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

func udpSock(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestProbeReplay: a captured ping replayed from another socket gets no
// answer and does not move the peer's learned address; a ping addressed to
// another node is worthless here; a pong counts once, for the ping in
// flight only.
func TestProbeReplay(t *testing.T) {
	ck := []byte("0123456789abcdef")
	lg := slog.New(slog.NewTextHandler(io.Discard, nil))
	ka, kb, kc := newKey(t), newKey(t), newKey(t)
	pa, pb, pc := ka.Public(), kb.Public(), kc.Public()
	a := NewPathBind(netip.MustParseAddrPort("127.0.0.1:0"), pa, ck, lg) // only builds and checks probes
	b := NewPathBind(netip.MustParseAddrPort("127.0.0.1:0"), pb, ck, lg)
	cb := NewPathBind(netip.MustParseAddrPort("127.0.0.1:0"), pc, ck, lg) // a cluster-key holder
	a.SetPrivateKey(ka)
	b.SetPrivateKey(kb)
	cb.SetPrivateKey(kc)
	fns, _, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	recvDone := make(chan struct{})
	go func() { // the receive path, as wireguard-go runs it
		defer close(recvDone)
		bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
		eps := make([]conn.Endpoint, 1)
		for {
			if _, err := fns[0](bufs, sizes, eps); err != nil {
				return
			}
		}
	}()
	defer func() { b.Close(); <-recvDone }()
	bAddr := net.UDPAddrFromAddrPort(b.LocalAddr())
	b.SetPeer(pa, netip.MustParseAddrPort("127.0.0.1:9")) // advertised; A's probes come from elsewhere (NAT)

	real, attacker := udpSock(t), udpSock(t)
	realAddr := real.LocalAddr().(*net.UDPAddr).AddrPort()

	ping := a.probe(probePing, pb, 1, 0)
	real.WriteToUDP(ping, bAddr)
	pong := recvProbe(t, real, 2*time.Second)
	if pong == nil || pong[1] != probePong {
		t.Fatalf("fresh ping not answered: %x", pong)
	}
	if got := learnedOf(b, pa); got != realAddr {
		t.Fatalf("learned %v, want %v", got, realAddr)
	}

	// The same ping again, from the attacker and from the real address.
	attacker.WriteToUDP(ping, bAddr)
	real.WriteToUDP(ping, bAddr)
	if p := recvProbe(t, attacker, 300*time.Millisecond); p != nil {
		t.Fatalf("replayed ping answered to the replayer: %x", p)
	}
	if p := recvProbe(t, real, 100*time.Millisecond); p != nil {
		t.Fatalf("replayed ping answered: %x", p)
	}
	if got := learnedOf(b, pa); got != realAddr {
		t.Fatalf("replay moved the learned address to %v", got)
	}

	// A fresh ping for node C, delivered to B: the MAC names the recipient.
	attacker.WriteToUDP(a.probe(probePing, pc, 2, 0), bAddr)
	if p := recvProbe(t, attacker, 300*time.Millisecond); p != nil {
		t.Fatalf("ping addressed to another node answered: %x", p)
	}

	// A holder of the cluster key (node C) speaking for A: the cluster MAC
	// is right, the pair MAC can only be C's, so B neither answers nor
	// moves A's learned address.
	forged := cb.probe(probePing, pb, 9, a.stamp.Load()+1000)
	copy(forged[2:2+key.Len], pa[:])
	copy(forged[probeHdrLen:], probeMAC(probeKeyOf(ck), forged, pb))
	attacker.WriteToUDP(forged, bAddr)
	if p := recvProbe(t, attacker, 300*time.Millisecond); p != nil {
		t.Fatalf("ping forged for A by another key holder answered: %x", p)
	}
	if got := learnedOf(b, pa); got != realAddr {
		t.Fatalf("forged ping moved the learned address to %v", got)
	}

	// The next real ping is answered as before.
	real.WriteToUDP(a.probe(probePing, pb, 3, 0), bAddr)
	if recvProbe(t, real, 2*time.Second) == nil {
		t.Fatal("next fresh ping not answered")
	}

	// Pongs, on the pinging side: B pings A (seq 7, in flight); A's pong
	// counts once, a replay of it from elsewhere changes nothing, and a
	// pong for a ping not in flight is ignored.
	b.mu.Lock()
	p := b.paths[pa]
	p.seq = 7
	st := b.stamp.Add(1)
	p.sent[7%probeRing], p.stamps[7%probeRing], p.acked[7%probeRing] = 7, st, false
	b.mu.Unlock()
	aPong := a.probe(probePong, pb, 7, st)
	b.handleProbe(aPong, realAddr)
	b.mu.Lock()
	acked := p.acked[7%probeRing]
	b.mu.Unlock()
	if !acked {
		t.Fatal("pong for the ping in flight not taken")
	}
	other := netip.MustParseAddrPort("127.0.0.1:4444")
	b.handleProbe(aPong, other)
	b.handleProbe(a.probe(probePong, pb, 7, st-1), other) // wrong stamp
	b.handleProbe(a.probe(probePong, pb, 6, st), other)   // not in flight
	if got := learnedOf(b, pa); got != realAddr {
		t.Fatalf("replayed or stale pong moved the learned address to %v", got)
	}
}

// TestProbeStampsGrowAcrossRestarts: a new bind's stamps start above any an
// earlier bind of the same node sent, so its peers take them.
func TestProbeStampsGrowAcrossRestarts(t *testing.T) {
	lg := slog.New(slog.NewTextHandler(io.Discard, nil))
	ck := []byte("0123456789abcdef")
	first := NewPathBind(netip.MustParseAddrPort("127.0.0.1:0"), key.PublicKey{1}, ck, lg)
	for range 1000 {
		first.probe(probePing, key.PublicKey{2}, 1, 0)
	}
	last := first.stamp.Load()
	time.Sleep(time.Millisecond)
	again := NewPathBind(netip.MustParseAddrPort("127.0.0.1:0"), key.PublicKey{1}, ck, lg)
	if again.stamp.Load() <= last {
		t.Fatalf("restarted bind's stamps start at %d, not above %d", again.stamp.Load(), last)
	}
}
