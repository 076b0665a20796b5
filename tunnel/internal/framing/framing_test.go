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

// scriptConn returns the reads of its script in order (a nil data with an
// error is a failed read) and fails the write numbered failWrite (from 1)
// after writing half of it, recording everything written.
type scriptConn struct {
	net.Conn
	reads     []scriptRead
	failWrite int
	writes    int
	written   bytes.Buffer
}

type scriptRead struct {
	data []byte
	err  error
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if len(c.reads) == 0 {
		return 0, io.ErrClosedPipe
	}
	r := c.reads[0]
	c.reads = c.reads[1:]
	return copy(p, r.data), r.err
}

func (c *scriptConn) Write(p []byte) (int, error) {
	c.writes++
	if c.writes == c.failWrite {
		c.written.Write(p[:len(p)/2])
		return len(p) / 2, io.ErrClosedPipe
	}
	return c.written.Write(p)
}

func (c *scriptConn) Close() error { return nil }

// TestReadErrorSticks: once a Read has failed (io.EOF included), no later
// Read returns data, even if the connection would: gVisor's endpoint
// returns what the peer sent after the EOF of a local Close, and yamux
// would parse it out of place.
func TestReadErrorSticks(t *testing.T) {
	c := framing.NewConn(&scriptConn{reads: []scriptRead{
		{data: []byte("first")},
		{err: io.EOF},
		{data: []byte("after the end")},
	}})
	buf := make([]byte, 64)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "first" {
		t.Fatalf("first read: %q, %v", buf[:n], err)
	}
	for i := range 3 {
		if n, err := c.Read(buf); n != 0 || err != io.EOF {
			t.Fatalf("read %d after the EOF: %q, %v (want nothing, io.EOF)", i+1, buf[:n], err)
		}
	}
	if got := c.Received(); got != 5 {
		t.Errorf("Received() = %d, want 5", got)
	}
}

// TestWriteErrorSticks: after a failed (short) write nothing more is
// written to the connection, held frames included: the peer has part of
// a frame, and what followed would be read out of place.
func TestWriteErrorSticks(t *testing.T) {
	sc := &scriptConn{failWrite: 1}
	c := framing.NewConn(sc)
	hdr := make([]byte, headerSize)
	hdr[1] = typeData
	hdr[11] = 8 // length 8
	if n, err := c.Write(hdr); err != nil || n != headerSize {
		t.Fatalf("data header: %d, %v (want it held)", n, err)
	}
	if _, err := c.Write([]byte("12345678")); err == nil {
		t.Fatal("the failed write of the frame reported no error")
	}
	cut := sc.written.Len()
	if cut != (headerSize+8)/2 {
		t.Fatalf("%d bytes reached the connection, want %d (half the frame)", cut, (headerSize+8)/2)
	}
	// A ping (written at once), a data frame, and a held handshake message
	// (Hold, flushed by the timer): all must fail and write nothing.
	ping := []byte{0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7}
	if _, err := c.Write(ping); err == nil {
		t.Error("a write after the failed one succeeded")
	}
	if _, err := c.Write(hdr); err == nil {
		if _, err := c.Write([]byte("abcdefgh")); err == nil {
			t.Error("a data frame after the failed write succeeded")
		}
	}
	c.Hold([]byte("hello"))
	time.Sleep(20 * time.Millisecond) // the hold's timer (1 ms) has fired
	if sc.written.Len() != cut {
		t.Errorf("%d bytes written after the failed write: %q", sc.written.Len()-cut, sc.written.Bytes()[cut:])
	}
}
