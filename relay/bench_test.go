package relay

import (
	"encoding/binary"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/key"
)

// BenchmarkRelayThroughput sends 1400-byte packets client → server →
// client over loopback, with at most window packets in flight so that no
// queue overflows, and reports packets/s and MB/s of packet payload.
func BenchmarkRelayThroughput(b *testing.B) {
	const size, window = 1400, 256
	srv, addr, _ := startServer(b, ServerConfig{})
	ka, kb := testKey(1), testKey(2)
	var recv atomic.Int64
	a := dial(b, addr, ka, nil)
	dial(b, addr, kb, nil, func(c *ClientConfig) {
		c.OnPacket = func(key.PublicKey, []byte) { recv.Add(1) }
	})
	pkt := make([]byte, size)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		for int64(i)-recv.Load() >= window {
			runtime.Gosched()
		}
		for a.Send(kb, pkt) != nil {
			runtime.Gosched()
		}
	}
	for recv.Load() < int64(b.N) {
		if srv.Stats().Dropped > 0 {
			b.Fatalf("server dropped packets: %+v", srv.Stats())
		}
		time.Sleep(10 * time.Microsecond)
	}
	el := time.Since(start).Seconds()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el, "pkts/s")
	b.ReportMetric(float64(b.N)*size/el/1e6, "MB/s")
}

// BenchmarkRelayMemoryPerClient connects 500 idle clients and reports heap
// growth per connected client, server and client side together (both live
// in this process), so it is an upper bound for the relay's share.
func BenchmarkRelayMemoryPerClient(b *testing.B) {
	const n = 500
	for range b.N {
		srv, addr, _ := startServer(b, ServerConfig{})
		heap := func() uint64 {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			return ms.HeapInuse
		}
		before := heap()
		for i := range n {
			var k key.PublicKey
			binary.BigEndian.PutUint32(k[:], uint32(i+1))
			dial(b, addr, k, nil)
		}
		for srv.Stats().Clients < n {
			time.Sleep(time.Millisecond)
		}
		after := heap()
		b.ReportMetric(float64(after-before)/n, "heap-B/client")
	}
}
