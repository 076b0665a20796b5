package tunnel

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/meshd/meshd/internal/key"
	"golang.zx2c4.com/wireguard/conn"
)

// PathBind's conn.Bind Open: the UDP socket and the two receive functions
// (direct UDP, relay) that WireGuard polls.

// Open binds the UDP socket and starts probing.
func (b *PathBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	addr := b.addr
	if addr.Port() == 0 {
		addr = netip.AddrPortFrom(addr.Addr(), port)
	}
	network := "udp4"
	if addr.Addr().Is6() && !addr.Addr().Is4In6() {
		network = "udp6"
	}
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return nil, 0, fmt.Errorf("tunnel: listen udp %s: %w", addr, err)
	}
	_ = c.SetReadBuffer(4 << 20)
	_ = c.SetWriteBuffer(4 << 20)
	b.conn = c
	done := make(chan struct{})
	b.done = done
	if b.probeKey != nil {
		b.wg.Add(1)
		go b.probeLoop(c, done)
	}
	u := newUDPConn(c, !b.noOffload)
	b.live.Store(u)
	// One goroutine calls recvUDP: the scratch buffer holds a received
	// (possibly GRO-coalesced) run of datagrams until all are handed out.
	var (
		scratch  = make([]byte, 1<<16)
		oob      = make([]byte, oobSize)
		pending  []byte // rest of the run, not yet handed out
		seg      int
		from     netip.AddrPort
		fromPeer key.PublicKey
		fromPath *peerPath // fromPeer's byte counters; nil if unknown
		lastEp   *Endpoint // immutable once handed out: reused while the sender stays the same
	)
	recvUDP := func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		for {
			if len(pending) == 0 {
				n, s, src, err := u.read(scratch, oob)
				if err != nil {
					return 0, err
				}
				if n == 0 {
					continue
				}
				pending, seg = scratch[:n], s
				from = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
				pub, known := b.addrPeer(from)
				blocked := known && b.blocked(pub)
				var pp *peerPath
				if known {
					pp = b.peer(pub)
				} else if n == wgInitiationLen && scratch[0] == wgInitiationType {
					b.mu.Lock()
					b.noteStrangerLocked(from, time.Now())
					b.mu.Unlock()
				}
				if blocked {
					pending = nil
					continue
				}
				if pp != nil && b.noteHandshake(pp, pub, scratch[:min(n, s)], from, time.Now().UnixNano()) {
					pending = nil
					continue
				}
				fromPeer, fromPath = pub, pp
			}
			var ep *Endpoint
			count := 0
			for count < len(packets) && len(pending) > 0 {
				pkt := pending[:min(seg, len(pending))]
				pending = pending[len(pkt):]
				if pkt[0] == probeMagic {
					b.handleProbe(pkt, from)
					continue
				}
				if len(pkt) > len(packets[count]) {
					continue
				}
				if ep == nil {
					if lastEp == nil || lastEp.Peer != fromPeer || lastEp.Addr != from {
						lastEp = &Endpoint{Peer: fromPeer, Addr: from}
					}
					ep = lastEp
				}
				sizes[count] = copy(packets[count], pkt)
				eps[count] = ep
				count++
			}
			if count > 0 {
				if fromPath != nil {
					var n int
					for _, sz := range sizes[:count] {
						n += sz
					}
					fromPath.rx.Add(uint64(n))
				}
				return count, nil
			}
		}
	}
	recvRelay := func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		for {
			select {
			case rp := <-b.relayIn:
				blocked := b.blocked(rp.from)
				pp := b.peer(rp.from)
				if blocked || len(rp.pkt) > len(packets[0]) || len(rp.pkt) == 0 {
					continue
				}
				if pp != nil && b.noteHandshake(pp, rp.from, rp.pkt, rp.addr, time.Now().UnixNano()) {
					continue
				}
				if pp != nil {
					pp.rx.Add(uint64(len(rp.pkt)))
				}
				sizes[0] = copy(packets[0], rp.pkt)
				eps[0] = &Endpoint{Peer: rp.from, Addr: rp.addr}
				return 1, nil
			case <-done:
				return 0, net.ErrClosed
			}
		}
	}
	return []conn.ReceiveFunc{recvUDP, recvRelay}, uint16(c.LocalAddr().(*net.UDPAddr).Port), nil
}
