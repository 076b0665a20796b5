package node

import (
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/echo"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// benchMesh starts an exporter and an importer node in-process and returns
// the import's address and the backend's address (for the direct baseline).
func benchMesh(b *testing.B, target string) (importAddr string, stop func()) {
	b.Helper()
	dir, err := os.MkdirTemp("", "meshd-bench")
	if err != nil {
		b.Fatal(err)
	}
	ck := make([]byte, 32)
	rand.Read(ck)
	t := &testing.T{}
	exp := testConfig(t, dir, "exp", "cloud", ck)
	exp.Exports = []config.Export{{Name: "svc", Target: target, Weight: 1}}
	imp := testConfig(t, dir, "imp", "onprem", ck)
	imp.Imports = []config.Import{{Name: "svc", Listen: loop}}
	en, _ := New(exp, quiet)
	if err := en.Start(); err != nil {
		b.Fatal(err)
	}
	imp.Cluster.Join = []string{en.GossipAddr().String()}
	in, _ := New(imp, quiet)
	if err := in.Start(); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := in.Status()
		if len(st.Peers) == 1 && st.Peers[0].Path == PathDirect && st.Peers[0].RTT() > 0 && len(st.Services) == 1 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("mesh did not converge")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return in.ImportAddr("svc"), func() { in.Close(); en.Close(); os.RemoveAll(dir) }
}

// sinkServer accepts connections and discards what they send, then closes.
func sinkServer(b *testing.B) (string, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	return ln.Addr().String(), func() { ln.Close() }
}

// benchThroughput sends b.N chunks of 1 MiB on one connection to addr.
func benchThroughput(b *testing.B, addr string) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, c) // wait until the far end has everything
	b.StopTimer()
}

// BenchmarkThroughputImport: one stream through an import (MB/s).
func BenchmarkThroughputImport(b *testing.B) {
	sink, stopSink := sinkServer(b)
	defer stopSink()
	addr, stop := benchMesh(b, sink)
	defer stop()
	benchThroughput(b, addr)
}

// BenchmarkThroughputRelay: one stream through an import whose exporter is
// reachable only through a relay (compare with BenchmarkThroughputImport).
func BenchmarkThroughputRelay(b *testing.B) {
	sink, stopSink := sinkServer(b)
	defer stopSink()
	a, stop := relayMesh(b, sink, quiet)
	defer stop()
	benchThroughput(b, a.ImportAddr("echo"))
}

// BenchmarkThroughputDirect: the same transfer straight to the sink.
func BenchmarkThroughputDirect(b *testing.B) {
	sink, stopSink := sinkServer(b)
	defer stopSink()
	benchThroughput(b, sink)
}

// echoMesh starts an echo server and a mesh whose import reaches it;
// stop ends both.
func echoMesh(b *testing.B) (importAddr string, stop func()) {
	e, err := echo.Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr, stopMesh := benchMesh(b, e.Addr())
	return addr, func() { stopMesh(); e.Close() }
}

// exchange64 sends msg on c and reads as many bytes back into got.
func exchange64(c net.Conn, msg, got []byte) error {
	if _, err := c.Write(msg); err != nil {
		return err
	}
	_, err := io.ReadFull(c, got)
	return err
}

// benchConnect measures connect + one 64-byte round trip + close, and
// reports p50/p99 in µs.
func benchConnect(b *testing.B, addr string) {
	msg := make([]byte, 64)
	got := make([]byte, 64)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		if err := exchange64(c, msg, got); err != nil {
			b.Fatal(err)
		}
		c.Close()
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkConnectImport: new connection + first round trip through an import.
func BenchmarkConnectImport(b *testing.B) {
	addr, stop := echoMesh(b)
	defer stop()
	benchConnect(b, addr)
}

// BenchmarkConnectDirect: the same straight to the echo server.
func BenchmarkConnectDirect(b *testing.B) {
	e, err := echo.Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	benchConnect(b, e.Addr())
}

// benchRoundTrip measures 64-byte request/response round trips on one
// connection to addr (ns/op is one round trip).
func benchRoundTrip(b *testing.B, addr string) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 64)
	got := make([]byte, 64)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := exchange64(c, msg, got); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRoundTripImport: 64-byte round trips on one connection through
// an import (tunnel's BenchmarkRoundTrip64 has the layers below).
func BenchmarkRoundTripImport(b *testing.B) {
	addr, stop := echoMesh(b)
	defer stop()
	benchRoundTrip(b, addr)
}

// BenchmarkConnectImportParallel: new connections through an import from
// 32 concurrent clients (ns/op is per connection: 1e9/ns is conn/s).
func BenchmarkConnectImportParallel(b *testing.B) {
	addr, stop := echoMesh(b)
	defer stop()
	b.SetParallelism(16) // × GOMAXPROCS
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		msg := make([]byte, 64)
		got := make([]byte, 64)
		for pb.Next() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Error(err)
				return
			}
			if err := exchange64(c, msg, got); err != nil {
				b.Error(err)
			}
			c.Close()
		}
	})
}

// BenchmarkJoinToAlive: seconds from a new node's Start until an existing
// node lists it alive with a tunnel session.
func BenchmarkJoinToAlive(b *testing.B) {
	dir, err := os.MkdirTemp("", "meshd-bench")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ck := make([]byte, 32)
	rand.Read(ck)
	t := &testing.T{}
	first, _ := New(testConfig(t, dir, "first", "a", ck), quiet)
	if err := first.Start(); err != nil {
		b.Fatal(err)
	}
	defer first.Close()
	var total time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cfg := testConfig(t, dir, "new", "b", ck)
		cfg.Cluster.Join = []string{first.GossipAddr().String()}
		n, _ := New(cfg, quiet)
		t0 := time.Now()
		if err := n.Start(); err != nil {
			b.Fatal(err)
		}
		for {
			st := first.Status()
			ok := false
			for _, p := range st.Peers {
				if p.Name == "new" && p.State == "alive" && p.Path == PathDirect {
					ok = true
				}
			}
			if ok {
				break
			}
			time.Sleep(time.Millisecond)
		}
		total += time.Since(t0)
		b.StopTimer()
		n.Close()
		b.StartTimer()
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s-to-alive")
}

// BenchmarkThroughputTuning runs BenchmarkThroughputImport once per data
// path tuning step, in one run so the steps compare on the same machine
// state (see tunnel/knobs.go). Each variant switches one thing off (or
// on) relative to meshd's defaults:
//
//	go test -run XXX -bench ThroughputTuning -benchtime 3s -count 3 ./node
func BenchmarkThroughputTuning(b *testing.B) {
	variants := []struct {
		name string
		env  map[string]string
	}{
		{"defaults", nil},
		{"no-tun-batch", map[string]string{"MESHD_DEBUG_TUN_BATCH": "0"}},
		{"no-udp-gso-gro", map[string]string{"MESHD_DEBUG_UDP_OFFLOAD": "0"}},
		{"no-netstack-gso-gro", map[string]string{"MESHD_DEBUG_NETSTACK_OFFLOAD": "0"}},
		{"none-of-the-three", map[string]string{"MESHD_DEBUG_TUN_BATCH": "0", "MESHD_DEBUG_UDP_OFFLOAD": "0", "MESHD_DEBUG_NETSTACK_OFFLOAD": "0"}},
		{"sack-on", map[string]string{"MESHD_DEBUG_NETSTACK_SACK": "1"}},
		{"yamux-window-256k", map[string]string{"MESHD_DEBUG_YAMUX_WINDOW": "262144"}},
		{"yamux-window-1m", map[string]string{"MESHD_DEBUG_YAMUX_WINDOW": "1048576"}},
		{"tcp-buf-256k", map[string]string{"MESHD_DEBUG_TCP_BUF": "262144"}},
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			for k, val := range v.env {
				b.Setenv(k, val)
			}
			sink, stopSink := sinkServer(b)
			defer stopSink()
			addr, stop := benchMesh(b, sink)
			defer stop()
			benchThroughput(b, addr)
		})
	}
}
