package tunnel

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	echoserver "github.com/meshd/meshd/internal/echo"
	"github.com/meshd/meshd/internal/key"
)

// BenchmarkRoundTrip64 splits a 64-byte request/response between two
// tunnels over loopback into layers: plain loopback TCP (the floor), TCP
// in the netstack straight over WireGuard, a yamux stream on the session,
// and a stream with a proxy and a loopback TCP leg at each end (an import
// without its failover logic; node's BenchmarkRoundTripImport is the
// whole import). ns/op is one round trip.
//
//	go test -run XXX -bench RoundTrip64 -benchtime 3s ./tunnel
func BenchmarkRoundTrip64(b *testing.B) {
	echoSrv, err := echoserver.Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer echoSrv.Close()
	// Streams whose first byte is 'p' are proxied to the TCP echo (as an
	// export would); others are echoed by the stream handler.
	handle := func(pub key.PublicKey, s net.Conn) {
		var first [1]byte
		if _, err := io.ReadFull(s, first[:]); err != nil {
			s.Close()
			return
		}
		if first[0] != 'p' {
			s.Write(first[:])
			echo(pub, s)
			return
		}
		c, err := net.Dial("tcp", echoSrv.Addr())
		if err != nil {
			s.Close()
			return
		}
		Proxy(context.Background(), c, s)
	}
	ta := newTestTunnel(b, handle)
	tb := newTestTunnel(b, handle)
	defer ta.Close()
	defer tb.Close()
	link(b, ta, tb)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // bounds setup and each dial
	defer cancel()
	// Bring the session (and WireGuard's handshake) up first.
	if s, err := ta.OpenStream(ctx, tb.PublicKey()); err != nil {
		b.Fatal(err)
	} else {
		s.Close()
	}

	b.Run("loopback-tcp", func(b *testing.B) { dialRoundTrips(b, echoSrv.Addr()) }) // the floor: no tunnel at all
	b.Run("netstack-tcp", func(b *testing.B) {
		ln, err := tb.net.ListenTCP(netip.AddrPortFrom(tb.ip, 7001))
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.Copy(c, c)
			c.Close()
		}()
		c, err := ta.net.DialTCP(ctx, netip.AddrPortFrom(tb.ip, 7001))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		roundTrips(b, c)
	})
	b.Run("yamux-stream", func(b *testing.B) {
		s, err := ta.OpenStream(ctx, tb.PublicKey())
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		roundTrips(b, s)
	})
	b.Run("proxied", func(b *testing.B) {
		// client -TCP- StartProxy -stream- StartProxy -TCP- echo: an
		// import without the failover logic.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := ta.OpenStream(ctx, tb.PublicKey())
			if err != nil {
				c.Close()
				return
			}
			s.Write([]byte{'p'})
			StartProxy(context.Background(), c, s, nil)
		}()
		dialRoundTrips(b, ln.Addr().String())
	})
}

// dialRoundTrips runs roundTrips on a new TCP connection to addr.
func dialRoundTrips(b *testing.B, addr string) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	roundTrips(b, c)
}

func roundTrips(b *testing.B, c net.Conn) {
	msg := make([]byte, 64)
	buf := make([]byte, 64)
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}
