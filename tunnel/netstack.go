package tunnel

// The userspace network stack under the WireGuard device: a gVisor netstack
// exposed to wireguard-go as a tun.Device. Adapted from wireguard-go's
// tun/netstack (MIT, Copyright (C) 2017-2025 WireGuard LLC), keeping only
// TCP and owning the stack so it can be tuned for one long-lived TCP
// connection per peer (the yamux session): a low maximum RTO
// so a session recovers within a second of its link returning, and large
// buffers.

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// Netstack TCP tuning.
const (
	// maxRTO caps TCP's retransmission backoff: after an outage (a cut
	// link, a frozen peer) the session resumes within maxRTO of the path
	// returning instead of after a doubling backoff of tens of seconds.
	// One session per peer makes the extra retransmissions negligible.
	maxRTO = time.Second
	// minRTO is the floor of the retransmission timeout. Without SACK
	// (see below) a lost segment that fast retransmit does not repair
	// waits for the RTO; at gVisor's default floor of 200 ms, 1 % loss
	// between two namespaces cut one stream from ~250 to 2-8 MB/s, with
	// a 10 ms floor it moves 15-53 MB/s (README, "Under loss"). Over a
	// WAN the RTO is srtt+4*rttvar, above this floor anyway.
	minRTO = 10 * time.Millisecond
	// maxRetries is how many retransmissions of a segment TCP makes before
	// it gives up on the connection: at the RTO bounds above, about ten
	// minutes. The session's own ping watchdog (session_timeout) decides
	// when a silent peer is gone; TCP must not give up before it (gVisor's
	// default, 15, is only ~9 s at these bounds). Longer session timeouts
	// raise it (retriesFor).
	maxRetries    = 600
	tcpBufDefault = 1 << 20
	// defaultCongestionControl is gVisor's default.
	defaultCongestionControl = "reno"
	tcpBufMax                = 8 << 20
	nicID                    = 1
)

// netTUN is a tun.Device backed by a gVisor stack.
type netTUN struct {
	ep       *linkEndpoint
	stack    *stack.Stack
	events   chan tun.Event
	incoming chan *buffer.View
	mtu      int
	done     chan struct{}
	notify   *channel.NotificationHandle
	batch    bool // Read hands out up to len(bufs) packets

	closeOnce sync.Once
}

var _ tun.Device = (*netTUN)(nil)

// newNetTUN creates a stack with addr as its only address.
func newNetTUN(addr netip.Addr, mtu int, kn knobs) (*netTUN, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol},
		HandleLocal:        true,
	})
	t := &netTUN{
		ep:       newLinkEndpoint(mtu, kn.netstackOffload),
		batch:    kn.tunBatch,
		stack:    s,
		events:   make(chan tun.Event, 10),
		incoming: make(chan *buffer.View, 256),
		mtu:      mtu,
		done:     make(chan struct{}),
	}
	opts := []tcpip.SettableTransportProtocolOption{
		// SACK (and RACK, which needs it) stay off: after an RTO, this
		// gVisor's SACK recovery loops (an RTO, a fast retransmit, again)
		// and a session took 4-11 s to recover from a 4 s cut instead of
		// 0.4 s (tunnel/recover_test.go). Over one session per peer on
		// low-loss paths NewReno loses little.
		ptr(tcpip.TCPSACKEnabled(kn.sack)),
		ptr(tcpip.TCPMaxRTOOption(time.Duration(kn.maxRTO) * time.Millisecond)),
		ptr(tcpip.TCPMinRTOOption(time.Duration(kn.minRTO) * time.Millisecond)),
		ptr(tcpip.TCPMaxRetriesOption(kn.maxRetries)),
		ptr(kn.recovery()),
		ptr(tcpip.TCPModerateReceiveBufferOption(true)),
		ptr(tcpip.CongestionControlOption(kn.congestionControl())),
		&tcpip.TCPSendBufferSizeRangeOption{Min: 4 << 10, Default: kn.tcpBuf, Max: max(tcpBufMax, 8*kn.tcpBuf)},
		&tcpip.TCPReceiveBufferSizeRangeOption{Min: 4 << 10, Default: kn.tcpBuf, Max: max(tcpBufMax, 8*kn.tcpBuf)},
	}
	for _, o := range opts {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, o); err != nil {
			s.Close()
			return nil, fmt.Errorf("tunnel: netstack option %T: %v", o, err)
		}
	}
	t.notify = t.ep.AddNotify(t)
	if err := s.CreateNIC(nicID, t.ep); err != nil {
		s.Close()
		return nil, fmt.Errorf("tunnel: netstack NIC: %v", err)
	}
	proto := ipv6.ProtocolNumber
	if addr.Is4() {
		proto = ipv4.ProtocolNumber
	}
	pa := tcpip.ProtocolAddress{Protocol: proto, AddressWithPrefix: tcpip.AddrFromSlice(addr.AsSlice()).WithPrefix()}
	if err := s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
		s.Close()
		return nil, fmt.Errorf("tunnel: netstack address %v: %v", addr, err)
	}
	s.AddRoute(tcpip.Route{Destination: header.IPv6EmptySubnet, NIC: nicID})
	s.AddRoute(tcpip.Route{Destination: header.IPv4EmptySubnet, NIC: nicID})
	t.events <- tun.EventUp
	return t, nil
}

func ptr[T any](v T) *T { return &v }

func (t *netTUN) Name() (string, error)    { return "meshd-netstack", nil }
func (t *netTUN) File() *os.File           { return nil }
func (t *netTUN) Events() <-chan tun.Event { return t.events }
func (t *netTUN) MTU() (int, error)        { return t.mtu, nil }
func (t *netTUN) BatchSize() int           { return batchSize }

// Read hands wireguard-go the packets the stack sends: it waits for one,
// then takes what else is queued, up to len(bufs), so WireGuard encrypts
// and sends them as one batch (one GSO send on the wire).
func (t *netTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	var v *buffer.View
	select {
	case v = <-t.incoming:
	case <-t.done:
		return 0, os.ErrClosed
	}
	n := 0
	for {
		k, err := v.Read(bufs[n][offset:])
		v.Release()
		if err != nil {
			return n, err
		}
		sizes[n] = k
		n++
		if n == len(bufs) || !t.batch {
			return n, nil
		}
		select {
		case v = <-t.incoming:
		default:
			return n, nil
		}
	}
}

// Write injects decrypted packets into the stack, a batch at a time:
// consecutive segments of one TCP flow are coalesced (GRO) before the
// stack sees them. WireGuard authenticated every packet, so the stack
// need not verify transport checksums.
func (t *netTUN) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		pkt := b[offset:]
		if len(pkt) == 0 {
			continue
		}
		pkb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(pkt)})
		switch pkt[0] >> 4 {
		case 4:
			pkb.NetworkProtocolNumber = header.IPv4ProtocolNumber
		case 6:
			pkb.NetworkProtocolNumber = header.IPv6ProtocolNumber
		default:
			pkb.DecRef()
			t.ep.flush()
			return 0, syscall.EAFNOSUPPORT
		}
		pkb.RXChecksumValidated = true
		t.ep.enqueue(pkb)
		pkb.DecRef()
	}
	t.ep.flush()
	return len(bufs), nil
}

// WriteNotify is called by the channel endpoint when the stack has a
// packet to send.
func (t *netTUN) WriteNotify() {
	pkt := t.ep.Read()
	if pkt == nil {
		return
	}
	v := pkt.ToView()
	pkt.DecRef()
	select {
	case t.incoming <- v:
	case <-t.done:
		v.Release()
	}
}

// Close tears the stack down; safe to call twice.
func (t *netTUN) Close() error {
	t.closeOnce.Do(func() {
		close(t.done)
		t.stack.RemoveNIC(nicID)
		t.stack.Close()
		t.ep.RemoveNotify(t.notify)
		t.ep.Close()
		t.stack.Wait()
		close(t.events)
	})
	return nil
}

func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	proto := ipv6.ProtocolNumber
	if ap.Addr().Is4() {
		proto = ipv4.ProtocolNumber
	}
	return tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}, proto
}

// DialTCP opens a TCP connection through the tunnel.
func (t *netTUN) DialTCP(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
	fa, proto := fullAddr(ap)
	c, err := gonet.DialContextTCP(ctx, t.stack, fa, proto)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// ListenTCP listens inside the tunnel.
func (t *netTUN) ListenTCP(ap netip.AddrPort) (net.Listener, error) {
	fa, proto := fullAddr(ap)
	ln, err := gonet.ListenTCP(t.stack, fa, proto)
	if err != nil {
		return nil, err
	}
	return ln, nil
}

// retriesFor is the netstack's retransmission limit for a session
// timeout: TCP keeps retrying, at maxRTO apart, for twice the timeout.
func retriesFor(sessionTimeout, maxRTO time.Duration) uint64 {
	return max(maxRetries, uint64(2*sessionTimeout/maxRTO)+16)
}
