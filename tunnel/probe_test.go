package tunnel

import (
	"encoding/binary"
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

// senderOf sends a non-probe datagram (not a WireGuard handshake or
// transport message) from c to the bind at to and returns the peer the
// bind's receive function attributes it to (zero: an address no peer is
// known at), as handed to WireGuard on got.
func senderOf(t *testing.T, c *net.UDPConn, to *net.UDPAddr, got <-chan *Endpoint) key.PublicKey {
	t.Helper()
	if _, err := c.WriteToUDP([]byte{3, 'x'}, to); err != nil {
		t.Fatal(err)
	}
	select {
	case ep := <-got:
		if want := c.LocalAddr().(*net.UDPAddr).AddrPort(); ep.Addr != want {
			t.Fatalf("packet from %v handed out as from %v", want, ep.Addr)
		}
		return ep.Peer
	case <-time.After(2 * time.Second):
		t.Fatal("datagram not received")
	}
	return key.PublicKey{}
}

// nopRelay is a relay that loses everything: with one set, Path tells the
// relay from the direct path.
type nopRelay struct{}

func (nopRelay) Send(key.PublicKey, []byte) error { return nil }

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
	got := make(chan *Endpoint, 16)
	go func() { // the receive path, as wireguard-go runs it
		defer close(recvDone)
		bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
		eps := make([]conn.Endpoint, 1)
		for {
			n, err := fns[0](bufs, sizes, eps)
			if err != nil {
				return
			}
			for i := range n {
				got <- eps[i].(*Endpoint)
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
	if from := senderOf(t, real, bAddr, got); from != pa {
		t.Fatalf("packets from A's probe address attributed to %v, want A", from)
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
	if from := senderOf(t, real, bAddr, got); from != pa {
		t.Fatalf("replay moved the learned address: A's address attributed to %v", from)
	}
	if from := senderOf(t, attacker, bAddr, got); !from.IsZero() {
		t.Fatalf("replay moved the learned address: the attacker attributed to %v", from)
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
	if from := senderOf(t, real, bAddr, got); from != pa {
		t.Fatalf("forged ping moved the learned address: A's address attributed to %v", from)
	}
	if from := senderOf(t, attacker, bAddr, got); !from.IsZero() {
		t.Fatalf("forged ping moved the learned address: the attacker attributed to %v", from)
	}

	// The next real ping is answered as before.
	real.WriteToUDP(a.probe(probePing, pb, 3, 0), bAddr)
	if recvProbe(t, real, 2*time.Second) == nil {
		t.Fatal("next fresh ping not answered")
	}

	// Pongs, on the pinging side: B probes A at its address; A's pongs to
	// the pings in flight are taken (three in a row move B to the direct
	// path); a replay of one from elsewhere, one with the wrong stamp and
	// one for a ping not in flight change nothing.
	b.SetRelay(nopRelay{}, "nop")
	b.SetPeer(pa, realAddr)
	b.SetActive(pa, true)
	if path, _ := b.Path(pa); path != "relay" {
		t.Fatalf("path before any pong: %s, want relay", path)
	}
	var aPong []byte
	var seq, st uint64
	deadline := time.Now().Add(10 * time.Second)
	for path, _ := b.Path(pa); path != "direct"; path, _ = b.Path(pa) {
		if time.Now().After(deadline) {
			t.Fatal("pongs to B's pings in flight not taken: B stays on the relay")
		}
		ping := recvProbe(t, real, time.Second)
		if len(ping) != probeLen || ping[1] != probePing {
			continue
		}
		seq, st = binary.BigEndian.Uint64(ping[2+key.Len:]), binary.BigEndian.Uint64(ping[2+key.Len+8:])
		aPong = a.probe(probePong, pb, seq, st)
		real.WriteToUDP(aPong, bAddr)
	}
	b.SetActive(pa, false)
	attacker.WriteToUDP(aPong, bAddr)
	attacker.WriteToUDP(a.probe(probePong, pb, seq, st-1), bAddr) // wrong stamp
	attacker.WriteToUDP(a.probe(probePong, pb, seq+5, st), bAddr) // not in flight
	if from := senderOf(t, attacker, bAddr, got); !from.IsZero() {
		t.Fatalf("replayed or stale pong moved the learned address: the attacker attributed to %v", from)
	}
	if from := senderOf(t, real, bAddr, got); from != pa {
		t.Fatalf("A's address attributed to %v after replayed pongs, want A", from)
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
