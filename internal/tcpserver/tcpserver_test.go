package tcpserver

import (
	"io"
	"net"
	"testing"
	"time"
)

// TestCloseEndsConnections: Close closes held connections, waits for their
// handlers and counts what it served.
func TestCloseEndsConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan struct{}, 2)
	s := Serve(ln, func(c net.Conn) {
		io.Copy(io.Discard, c) // until the client or Close ends it
		ended <- struct{}{}
	})
	var clients []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Active() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("active %d, want 2", s.Active())
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.Close()
	if len(ended) != 2 || s.Active() != 0 || s.Total() != 2 {
		t.Fatalf("after Close: %d handlers ended, active %d, total %d", len(ended), s.Active(), s.Total())
	}
	clients[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := clients[0].Read(make([]byte, 1)); err == nil {
		t.Fatal("client connection still open after Close")
	}
	if _, err := net.Dial("tcp", s.Addr()); err == nil {
		t.Fatal("still accepting after Close")
	}
}
