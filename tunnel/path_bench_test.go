package tunnel_test

import (
	"io"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/tunnel"
)

type countRelay struct{ n atomic.Uint64 }

func (r *countRelay) Send(key.PublicKey, []byte) error { r.n.Add(1); return nil }

// BenchmarkPathSendParallel: the bind's send path alone (to a relay that
// only counts), from one goroutine per peer as wireguard-go sends, to see
// what choosing the path costs when many peers send at once.
func BenchmarkPathSendParallel(b *testing.B) {
	pb := tunnel.NewPathBind(netip.MustParseAddrPort("127.0.0.1:0"), key.PublicKey{1}, []byte("0123456789abcdef"),
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if _, _, err := pb.Open(0); err != nil {
		b.Fatal(err)
	}
	defer pb.Close()
	r := &countRelay{}
	pb.SetRelay(r, "count")
	const peers = 64
	for i := range peers {
		pb.SetPeer(key.PublicKey{2, byte(i)}, netip.AddrPort{})
	}
	var next atomic.Uint32
	bufs := [][]byte{make([]byte, 1420)}
	b.SetParallelism(peers / 2)
	b.ReportAllocs()
	b.RunParallel(func(p *testing.PB) {
		ep := &tunnel.Endpoint{Peer: key.PublicKey{2, byte(next.Add(1) % peers)}}
		for p.Next() {
			if err := pb.Send(bufs, ep); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
