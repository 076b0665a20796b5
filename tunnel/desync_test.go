package tunnel

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/meshd/meshd/tunnel/internal/framing"
)

// eofOnceConn is the receiving end of a session connection that returns
// io.EOF once, just before the first occurrence of marker in what it
// reads, and then goes on delivering the rest. gVisor's TCP endpoint does
// this after a local Close that found no unread data while its FIN still
// waits behind unsent data: the blocked reader gets EOF (the endpoint is
// closed for receive) and the endpoint, still ESTABLISHED until the FIN
// leaves, queues what the peer keeps sending, which the next Read returns.
type eofOnceConn struct {
	net.Conn
	marker []byte

	mu   sync.Mutex
	in   []byte // read from Conn
	off  int    // of in, delivered
	eof  int    // 0: looking for marker, 1: EOF next, 2: EOF given
	cut  int    // where the EOF was given
	rerr error
}

func (c *eofOnceConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.eof == 1 {
			c.eof, c.cut = 2, c.off
			return 0, io.EOF
		}
		avail := c.in[c.off:]
		if c.eof == 0 {
			// The marker is inside one write of the peer, which net.Pipe
			// delivers whole to a read this large.
			if i := bytes.Index(avail, c.marker); i >= 0 {
				c.eof = 1
				avail = avail[:i]
			}
		}
		if len(avail) > 0 {
			n := copy(p, avail)
			c.off += n
			return n, nil
		}
		if c.rerr != nil {
			return 0, c.rerr
		}
		buf := make([]byte, 64<<10)
		n, err := c.Conn.Read(buf)
		c.in = append(c.in, buf[:n]...)
		c.rerr = err
	}
}

// failOnceConn fails one Write after after bytes, having written half of
// it (a short write with an error), and accepts later writes as if nothing
// happened; written counts what reached the connection after the failure.
type failOnceConn struct {
	net.Conn
	after int

	mu           sync.Mutex
	total        int
	failed       bool
	writtenAfter int
}

func (c *failOnceConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.failed {
		c.writtenAfter += len(p)
		c.mu.Unlock()
		return c.Conn.Write(p)
	}
	if c.total+len(p) <= c.after {
		c.total += len(p)
		c.mu.Unlock()
		return c.Conn.Write(p)
	}
	c.failed = true
	c.mu.Unlock()
	n, _ := c.Conn.Write(p[:len(p)/2])
	return n, errors.New("injected write failure")
}

// quietYamux is a yamux config whose log lines are collected.
func quietYamux(lines *logLines) *yamux.Config {
	c := yamux.DefaultConfig()
	c.EnableKeepAlive = false
	c.LogOutput = nil
	c.Logger = log.New(lines, "", 0)
	return c
}

// sessionConnWraps: what a session runs on, yamux on the bare connection
// and through framing (as the tunnel runs it).
var sessionConnWraps = []struct {
	name string
	wrap func(net.Conn) io.ReadWriteCloser
}{
	{"yamux", func(c net.Conn) io.ReadWriteCloser { return c }},
	{"framing", func(c net.Conn) io.ReadWriteCloser { return framing.NewConn(c) }},
}

type logLines struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < 64<<10 {
		l.b.Write(p)
	}
	return len(p), nil
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestSessionEOFMidFrameEndsSession: a session connection that reports
// io.EOF in the middle of a frame's body is dead, even if bytes follow:
// the session must end with an error there. yamux read the body with
// io.Copy, which takes EOF for success, kept the short body and parsed
// whatever came next as frame headers: stream data read as headers (the
// "frame for missing stream: Vsn:0 Type:0 Flags:0 StreamID:0 Length:0"
// floods at the end of TestRecoverAfterCut), and a header found in the data
// delivered its bytes to the stream it named. Here the data after the EOF
// holds such a header for the stream itself: without the fix the stream
// reads "EVIL" where its data was cut. Deterministic: the EOF comes at a
// marker in the byte stream, not at a time.
func TestSessionEOFMidFrameEndsSession(t *testing.T) {
	for _, tc := range sessionConnWraps {
		t.Run(tc.name, func(t *testing.T) {
			var clientLog, serverLog logLines
			cc, sc := net.Pipe()
			// The body: 1000 bytes of 0xAB, a data frame header for this
			// stream (the client's first: 1) with 4 bytes "EVIL", then zeros.
			marker := make([]byte, 12) // version 0, typeData, no flags
			binary.BigEndian.PutUint32(marker[4:], 1)
			binary.BigEndian.PutUint32(marker[8:], 4)
			body := bytes.Repeat([]byte{0xAB}, 1000)
			body = append(body, marker...)
			body = append(body, "EVIL"...)
			body = append(body, make([]byte, 3000)...)

			fc := &eofOnceConn{Conn: sc, marker: marker}
			server, err := yamux.Server(tc.wrap(fc), quietYamux(&serverLog))
			if err != nil {
				t.Fatal(err)
			}
			defer server.Close()
			client, err := yamux.Client(cc, quietYamux(&clientLog))
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			s, err := client.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			if s.StreamID() != 1 {
				t.Fatalf("the client's first stream is %d, not 1", s.StreamID())
			}
			ss, err := server.AcceptStream() // the open (SYN) went out with OpenStream
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				s.Write(body)
				s.Close()
			}()
			ss.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, rerr := io.ReadAll(ss)
			if !bytes.HasPrefix(body, got) {
				i := 0
				for i < len(got) && got[i] == body[i] {
					i++
				}
				t.Errorf("the stream read bytes its peer never wrote there: %d bytes, the first wrong one at %d: %q",
					len(got), i, got[i:min(len(got), i+8)])
			}
			if rerr == nil {
				t.Errorf("the stream cut at the connection's EOF ended cleanly after %d of %d bytes (want an error)", len(got), len(body))
			}
			select {
			case <-server.CloseChan():
			case <-time.After(2 * time.Second):
				t.Errorf("the session is still open 2 s after its connection's EOF (in a frame body at %d)", fc.cut)
			}
			if l := serverLog.String(); strings.Contains(l, "missing stream") || strings.Contains(l, "Invalid protocol") {
				t.Errorf("the server parsed stream data as frame headers:\n%.600s", l)
			}
		})
	}
}

// TestSessionWriteFailureEndsSession: after a failed (short) write on the
// session's connection nothing more is written to it, and the session
// ends: a later write that succeeded would leave the peer parsing the rest
// of a cut frame as headers. Both with yamux alone and through framing.
func TestSessionWriteFailureEndsSession(t *testing.T) {
	for _, tc := range sessionConnWraps {
		t.Run(tc.name, func(t *testing.T) {
			var clientLog, serverLog logLines
			cc, sc := net.Pipe()
			fc := &failOnceConn{Conn: cc, after: 20 << 10}
			client, err := yamux.Client(tc.wrap(fc), quietYamux(&clientLog))
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			server, err := yamux.Server(sc, quietYamux(&serverLog))
			if err != nil {
				t.Fatal(err)
			}
			defer server.Close()
			go func() {
				for {
					ss, err := server.AcceptStream()
					if err != nil {
						return
					}
					go io.Copy(io.Discard, ss)
				}
			}()
			var wg sync.WaitGroup
			for range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s, err := client.OpenStream()
					if err != nil {
						return
					}
					buf := bytes.Repeat([]byte{0xCD}, 7000)
					for range 20 {
						s.SetWriteDeadline(time.Now().Add(2 * time.Second))
						if _, err := s.Write(buf); err != nil {
							return
						}
					}
				}()
			}
			wg.Wait()
			select {
			case <-client.CloseChan():
			case <-time.After(2 * time.Second):
				t.Fatal("the session is still open 2 s after a failed write on its connection")
			}
			fc.mu.Lock()
			failed, after := fc.failed, fc.writtenAfter
			fc.mu.Unlock()
			if !failed {
				t.Fatal("the injected write failure never happened")
			}
			if after > 0 {
				t.Errorf("%d bytes written to the connection after its write failed", after)
			}
		})
	}
}

// TestNetstackDataAfterCloseEOF: the gVisor behaviour the session's
// connection guards against. A TCP endpoint closed while its reader waits
// and while it has unsent data (its peer's window is full) returns io.EOF
// to the reader, and stays ESTABLISHED until its FIN leaves behind that
// data, so it still queues what the peer sends, and a later raw Read
// returns it. Through framing.Conn every Read after the EOF fails. (The
// test asserts framing's side; what the raw endpoint returned is logged,
// so a gVisor that stops doing this does not fail it.)
func TestNetstackDataAfterCloseEOF(t *testing.T) {
	addr := netip.MustParseAddr("fd7a:6d65:7368::1")
	n, err := newNetTUN(addr, 1420, readKnobs())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ap := netip.AddrPortFrom(addr, 7000)
	ln, err := n.ListenTCP(ap)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	raw, err := n.DialTCP(ctx, ap)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	defer peer.Close()
	c := framing.NewConn(raw)

	// Fill the peer's receive window and our send buffer: the peer does
	// not read, so our FIN will wait behind unsent data.
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		buf := make([]byte, 64<<10)
		for range 1000 { // bounded: at most 64 MiB
			raw.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
			if _, err := raw.Write(buf); err != nil {
				return
			}
		}
	}()
	<-wrote // the last write timed out: the buffers are full
	got := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 100))
		got <- err
	}()
	time.Sleep(50 * time.Millisecond) // the reader waits
	c.Close()
	select {
	case err := <-got:
		if err != io.EOF {
			t.Logf("the reader of the closed endpoint got %v (not io.EOF)", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the reader of the closed endpoint still waits 5 s after Close")
	}
	if _, err := peer.Write([]byte("after the end")); err != nil {
		t.Fatalf("the peer's write: %v", err)
	}
	time.Sleep(100 * time.Millisecond) // the segment arrives
	buf := make([]byte, 100)
	if k, err := c.Read(buf); k != 0 || err == nil {
		t.Errorf("framing.Conn read %q, %v after its EOF (want nothing and the error)", buf[:k], err)
	}
	raw.SetReadDeadline(time.Now().Add(time.Second))
	k, err := raw.Read(buf)
	t.Logf("the raw endpoint read %q, %v after its EOF", buf[:k], err)
}

// TestSessionEndsAtStreamZeroFrame: a data or window update frame for
// stream 0 (the session's own ID, never a stream's) is a header read out of
// place, twelve zero bytes of stream data for one: the session ends at the
// first, with one log line, where yamux logged "frame for missing stream"
// for each and read on.
func TestSessionEndsAtStreamZeroFrame(t *testing.T) {
	for _, typ := range []byte{0, 1} { // data, window update
		var serverLog logLines
		cc, sc := net.Pipe()
		server, err := yamux.Server(sc, quietYamux(&serverLog))
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			zeros := make([]byte, 12*100)
			zeros[1] = typ
			cc.SetWriteDeadline(time.Now().Add(2 * time.Second))
			cc.Write(zeros)
		}()
		select {
		case <-server.CloseChan():
		case <-time.After(2 * time.Second):
			t.Errorf("type %d: the session is still open 2 s after a frame for stream 0", typ)
		}
		if n := strings.Count(serverLog.String(), "\n"); n > 2 {
			t.Errorf("type %d: %d log lines, want at most 2:\n%.400s", typ, n, serverLog.String())
		}
		server.Close()
		cc.Close()
	}
}
