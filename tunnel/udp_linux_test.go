package tunnel

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestUDPBatchRoundTrip sends runs of equal-size packets with a shorter
// one in between through writeBatch (GSO) and reads them back (GRO): every
// packet must arrive whole and in order.
func TestUDPBatchRoundTrip(t *testing.T) {
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	tx, rx := newUDPConn(listen(), true), newUDPConn(listen(), true)
	if !tx.gso.Load() || !rx.gro {
		t.Logf("kernel without UDP GSO/GRO (gso=%v gro=%v): testing the fallback", tx.gso.Load(), rx.gro)
	}
	var sent [][]byte
	for i := range 100 {
		size := 1452
		if i%37 == 36 {
			size = 92 // an ACK-sized packet ends a run
		}
		p := bytes.Repeat([]byte{byte(i)}, size)
		sent = append(sent, p)
	}
	dst := rx.c.LocalAddr().(*net.UDPAddr).AddrPort()
	if err := tx.writeBatch(sent, dst); err != nil {
		t.Fatalf("writeBatch: %v", err)
	}
	buf, oob := make([]byte, 1<<16), make([]byte, oobSize)
	rx.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got [][]byte
	reads := 0
	for len(got) < len(sent) {
		n, seg, from, err := rx.read(buf, oob)
		if err != nil {
			t.Fatalf("read after %d packets: %v", len(got), err)
		}
		reads++
		if from != netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), tx.c.LocalAddr().(*net.UDPAddr).AddrPort().Port()) {
			t.Fatalf("from %v", from)
		}
		for rest := buf[:n]; len(rest) > 0; {
			p := rest[:min(seg, len(rest))]
			rest = rest[len(p):]
			got = append(got, append([]byte(nil), p...))
		}
	}
	for i := range sent {
		if !bytes.Equal(got[i], sent[i]) {
			t.Fatalf("packet %d: got %d bytes of %d, want %d of %d", i, len(got[i]), got[i][0], len(sent[i]), sent[i][0])
		}
	}
	t.Logf("%d packets in %d reads (gso=%v gro=%v)", len(sent), reads, tx.gso.Load(), rx.gro)
	if tx.gso.Load() && rx.gro && reads >= len(sent) {
		t.Errorf("GSO and GRO on but every packet took its own read")
	}
}
