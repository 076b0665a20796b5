package relay

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// FuzzFrames feeds arbitrary bytes to the frame reader and payload parsers:
// they must not panic, and whatever parses must re-encode to the same bytes.
func FuzzFrames(f *testing.F) {
	for _, s := range frameSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReader(bytes.NewReader(data))
		buf := make([]byte, MaxFrame)
		for range 64 {
			typ, p, err := readFrame(br, buf)
			if err != nil {
				return
			}
			var re bytes.Buffer
			bw := bufio.NewWriter(&re)
			want := p
			switch typ {
			case frameServerHello:
				h, err := parseServerHello(p)
				if err != nil {
					continue
				}
				want = p[:helloLen]
				writeFrame(bw, typ, h.marshal())
			case frameClientAuth:
				a, err := parseClientAuth(p)
				if err != nil {
					continue
				}
				want = p[:authLen]
				a.verify(authKey(testClusterKey), &[nonceLen]byte{})
				writeFrame(bw, typ, a.marshal())
			case frameSend, frameRecv:
				k, pkt, err := parseKeyPayload(p)
				if err != nil {
					continue
				}
				writeKeyFrame(bw, typ, &k, pkt)
			case framePing, framePong:
				v, err := parseU64(p)
				if err != nil {
					continue
				}
				want = p[:8]
				writeU64Frame(bw, typ, v)
			default:
				continue
			}
			bw.Flush()
			got := re.Bytes()
			if len(got) < frameHeaderLen || frameType(got[0]) != typ || !bytes.Equal(got[frameHeaderLen:], want) {
				t.Fatalf("%s: re-encoded %x, want payload %x", typ, got, want)
			}
		}
	})
}

// FuzzServerConn runs the server's whole connection handler (handshake,
// then frames) on a connection that sends the fuzz input. The nonce is
// all zeros so that seeds can carry a valid clientAuth and reach the
// post-handshake code. The handler must not panic or hang, and must leave
// no client behind.
func FuzzServerConn(f *testing.F) {
	for _, s := range connSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := NewServer(ServerConfig{ClusterKey: testClusterKey, QueueLen: 8})
		if err != nil {
			t.Fatal(err)
		}
		s.rand = zeroReader{}
		sc := newSconn(s, &feedConn{r: bytes.NewReader(data)})
		s.mu.Lock()
		s.conns[sc] = true
		s.mu.Unlock()
		s.serveConn(sc)
		if st := s.Stats(); st.Clients != 0 || len(s.conns) != 0 {
			t.Fatalf("connection left behind: %+v", st)
		}
	})
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// feedConn is a net.Conn that reads from r and discards writes.
type feedConn struct {
	r      *bytes.Reader
	closed atomic.Bool
}

func (c *feedConn) Read(p []byte) (int, error) {
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	return c.r.Read(p)
}

func (c *feedConn) Write(p []byte) (int, error) {
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	return len(p), nil
}

func (c *feedConn) Close() error                     { c.closed.Store(true); return nil }
func (c *feedConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }
func (c *feedConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2} }
func (c *feedConn) SetDeadline(time.Time) error      { return nil }
func (c *feedConn) SetReadDeadline(time.Time) error  { return nil }
func (c *feedConn) SetWriteDeadline(time.Time) error { return nil }

// encode builds a byte stream of frames with fn.
func encode(fn func(bw *bufio.Writer)) []byte {
	var b bytes.Buffer
	bw := bufio.NewWriter(&b)
	fn(bw)
	bw.Flush()
	return b.Bytes()
}

func frameSeeds() [][]byte {
	k := testKey(1)
	return [][]byte{
		encode(func(bw *bufio.Writer) {
			h := serverHello{version: ProtocolVersion}
			writeFrame(bw, frameServerHello, h.marshal())
			writeFrame(bw, frameServerOK, nil)
			writeKeyFrame(bw, frameRecv, &k, []byte("ciphertext"))
			writeU64Frame(bw, framePong, 7)
		}),
		encode(func(bw *bufio.Writer) {
			a := clientAuth{version: ProtocolVersion, pub: k}
			writeFrame(bw, frameClientAuth, a.marshal())
			writeKeyFrame(bw, frameSend, &k, bytes.Repeat([]byte{0xAA}, 1400))
			writeU64Frame(bw, framePing, 1<<40)
		}),
		{byte(frameSend), 0xFF, 0xFF, 0xFF, 0xFF},
		{byte(framePing), 0, 0, 0, 3, 1, 2, 3},
	}
}

func connSeeds() [][]byte {
	self, other := testKey(1), testKey(2)
	var zero [nonceLen]byte
	auth := clientAuth{version: ProtocolVersion, pub: self, mac: authMAC(authKey(testClusterKey), &zero, self)}
	return [][]byte{
		encode(func(bw *bufio.Writer) {
			writeFrame(bw, frameClientAuth, auth.marshal())
			writeKeyFrame(bw, frameSend, &self, []byte("to myself"))
			writeKeyFrame(bw, frameSend, &other, []byte("no route"))
			writeU64Frame(bw, framePing, 99)
			writeFrame(bw, 0x7f, []byte("unknown"))
		}),
		encode(func(bw *bufio.Writer) {
			writeFrame(bw, frameClientAuth, auth.marshal())
			writeFrameHeader(bw, frameSend, MaxFrame+1)
		}),
		encode(func(bw *bufio.Writer) {
			bad := auth
			bad.mac[0] ^= 1
			writeFrame(bw, frameClientAuth, bad.marshal())
		}),
		[]byte("GET / HTTP/1.1\r\n\r\n"),
	}
}

// TestWriteFuzzCorpus regenerates the committed seed corpus under
// testdata/fuzz when RELAY_WRITE_CORPUS=1.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("RELAY_WRITE_CORPUS") != "1" {
		t.Skip("set RELAY_WRITE_CORPUS=1 to rewrite testdata/fuzz")
	}
	for name, seeds := range map[string][][]byte{"FuzzFrames": frameSeeds(), "FuzzServerConn": connSeeds()} {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, s := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%+q)\n", s)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestFuzzSeedReachesForwarding guards the first FuzzServerConn seed: it
// must authenticate so that fuzzing covers the post-handshake code.
func TestFuzzSeedReachesForwarding(t *testing.T) {
	s, err := NewServer(ServerConfig{ClusterKey: testClusterKey})
	if err != nil {
		t.Fatal(err)
	}
	s.rand = zeroReader{}
	s.serveConn(newSconn(s, &feedConn{r: bytes.NewReader(connSeeds()[0])}))
	if st := s.Stats(); st.Accepted != 1 || st.Received != 2 || st.NoRoute != 1 {
		t.Fatalf("seed did not reach forwarding: %+v", st)
	}
}
