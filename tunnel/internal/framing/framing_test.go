package framing_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/meshd/meshd/tunnel/internal/framing"
)

// yamux's frame header (github.com/hashicorp/yamux const.go): version,
// type, flags (2), stream ID (4), length (4); type 0 is data.
const (
	headerSize = 12
	typeData   = 0
)

// countingConn counts writes and their sizes.
type countingConn struct {
	net.Conn
	mu        sync.Mutex
	writes    []int
	loneTypes []byte // frame types of writes that were a bare header
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, len(p))
	if len(p) == headerSize {
		c.loneTypes = append(c.loneTypes, p[1])
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// TestFrameConnOneWritePerDataFrame runs yamux over framing.Conn: small and
// large messages arrive intact, and every data frame leaves in one write
// (header and body together), never as a lone 12-byte header.
func TestFrameConnOneWritePerDataFrame(t *testing.T) {
	a, b := net.Pipe()
	ca := &countingConn{Conn: a}
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	cli, err := yamux.Client(framing.NewConn(ca), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	srv, err := yamux.Server(framing.NewConn(b), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	msgs := [][]byte{[]byte("hello"), make([]byte, 1000), make([]byte, 200<<10)}
	for _, m := range msgs[1:] {
		rand.Read(m)
	}
	var want bytes.Buffer
	for _, m := range msgs {
		want.Write(m)
	}
	got := make(chan []byte, 1)
	go func() {
		s, err := srv.AcceptStream()
		if err != nil {
			got <- nil
			return
		}
		data, _ := io.ReadAll(s)
		got <- data
	}()
	s, err := cli.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if _, err := s.Write(m); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	if data := <-got; !bytes.Equal(data, want.Bytes()) {
		t.Fatalf("received %d bytes, want %d (or different bytes)", len(data), want.Len())
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	for _, typ := range ca.loneTypes {
		if typ == typeData {
			t.Fatalf("a data frame header went out alone (writes: %v)", ca.writes)
		}
	}
	t.Logf("client writes: %v", ca.writes)
}

// TestHoldLeavesWithFirstFrame: bytes held (a session handshake's message)
// leave in the same write as the next data frame, header and body; held
// alone, they leave on their own within the hold.
func TestHoldLeavesWithFirstFrame(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	ca := &countingConn{Conn: a}
	f := framing.NewConn(ca)
	defer f.Close()
	got := make(chan []byte, 4)
	go func() {
		buf := make([]byte, 256)
		for {
			n, err := b.Read(buf)
			if err != nil {
				close(got)
				return
			}
			got <- append([]byte(nil), buf[:n]...)
		}
	}()
	hdr := []byte{0, typeData, 0, 0, 0, 0, 0, 1, 0, 0, 0, 4}
	f.Hold([]byte("HELLO"))
	f.Write(hdr)
	f.Write([]byte("body"))
	want := append(append([]byte("HELLO"), hdr...), "body"...)
	if w := <-got; !bytes.Equal(w, want) {
		t.Fatalf("first write %q, want %q (hello, header and body at once)", w, want)
	}
	f.Hold([]byte("ANSWER"))
	select {
	case w := <-got:
		if string(w) != "ANSWER" {
			t.Fatalf("held alone: wrote %q", w)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("held bytes not written without a frame after them")
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if len(ca.writes) != 2 {
		t.Fatalf("writes %v, want 2", ca.writes)
	}
}
