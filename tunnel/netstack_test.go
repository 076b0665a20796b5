package tunnel

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net/netip"
	"testing"
	"time"
)

// TestNetstackOffloadPair connects two netstacks by passing batches of
// packets straight between them (no WireGuard) and moves 8 MiB one way:
// segmentation offload out and GRO in must deliver it intact, with no
// checksum errors and far fewer segments than MTU-sized packets.
func TestNetstackOffloadPair(t *testing.T) {
	a1 := netip.MustParseAddr("fd7a:6d65:7368::1")
	a2 := netip.MustParseAddr("fd7a:6d65:7368::2")
	n1, err := newNetTUN(a1, 1420, readKnobs())
	if err != nil {
		t.Fatal(err)
	}
	defer n1.Close()
	n2, err := newNetTUN(a2, 1420, readKnobs())
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	pump := func(from, to *netTUN) {
		bufs := make([][]byte, from.BatchSize())
		for i := range bufs {
			bufs[i] = make([]byte, 1<<16)
		}
		sizes := make([]int, len(bufs))
		for {
			n, err := from.Read(bufs, sizes, 0)
			if err != nil {
				return
			}
			out := make([][]byte, n)
			for i := range out {
				out[i] = bufs[i][:sizes[i]]
			}
			to.Write(out, 0)
		}
	}
	go pump(n1, n2)
	go pump(n2, n1)

	ln, err := n2.ListenTCP(netip.AddrPortFrom(a2, 80))
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.err = n, err
		got <- r
	}()
	c, err := n1.DialTCP(t.Context(), netip.AddrPortFrom(a2, 80))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	data := make([]byte, 8<<20)
	rand.Read(data)
	if _, err := c.Write(data); err != nil {
		t.Fatalf("write: %v", err)
	}
	c.Close()
	r := <-got
	if r.err != nil {
		t.Fatalf("read: %v after %d bytes", r.err, r.n)
	}
	if want := sha256.Sum256(data); r.n != int64(len(data)) || !bytes.Equal(r.sum[:], want[:]) {
		t.Fatalf("received %d bytes, checksum mismatch=%v", r.n, !bytes.Equal(r.sum[:], want[:]))
	}
	st := n2.stack.Stats().TCP
	if e := st.ChecksumErrors.Value(); e != 0 {
		t.Errorf("%d TCP checksum errors", e)
	}
	mtuPackets := uint64(len(data) / 1340)
	if segs := st.ValidSegmentsReceived.Value(); segs >= mtuPackets {
		t.Errorf("receiver processed %d segments for %d MTU-sized packets: GRO merged nothing", segs, mtuPackets)
	} else {
		t.Logf("receiver processed %d segments for ~%d packets", segs, mtuPackets)
	}
}
