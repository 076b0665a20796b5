package gossip

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// countTransport counts the bytes memberlist sends and receives, UDP and
// TCP, on the network (encrypted, as on the wire, without IP/UDP/TCP
// headers): what gossip costs a node (meshd bench --only scale, README
// "Scale"). It sits between the guard and the network transport.
type countTransport struct {
	memberlist.NodeAwareTransport
	sent, recv atomic.Uint64

	streamCh chan net.Conn
	done     chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
}

func newCountTransport(inner memberlist.NodeAwareTransport) *countTransport {
	t := &countTransport{NodeAwareTransport: inner, streamCh: make(chan net.Conn), done: make(chan struct{})}
	t.wg.Add(1)
	go t.streams()
	return t
}

// countPacket counts a received packet of n bytes. The guard, which reads
// the packets straight from this transport's channel, calls it for each:
// a forwarding goroutine here cost two wakeups per packet.
func (t *countTransport) countPacket(n int) { t.recv.Add(uint64(n)) }

func (t *countTransport) streams() {
	defer t.wg.Done()
	in := t.NodeAwareTransport.StreamCh()
	for {
		select {
		case <-t.done:
			return
		case c := <-in:
			select {
			case t.streamCh <- &countConn{Conn: c, t: t}:
			case <-t.done:
				c.Close()
				return
			}
		}
	}
}

func (t *countTransport) PacketCh() <-chan *memberlist.Packet {
	return t.NodeAwareTransport.PacketCh()
}
func (t *countTransport) StreamCh() <-chan net.Conn { return t.streamCh }

func (t *countTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	t.sent.Add(uint64(len(b)))
	return t.NodeAwareTransport.WriteTo(b, addr)
}

func (t *countTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	t.sent.Add(uint64(len(b)))
	return t.NodeAwareTransport.WriteToAddress(b, a)
}

func (t *countTransport) DialTimeout(addr string, d time.Duration) (net.Conn, error) {
	c, err := t.NodeAwareTransport.DialTimeout(addr, d)
	if err != nil {
		return nil, err
	}
	return &countConn{Conn: c, t: t}, nil
}

func (t *countTransport) DialAddressTimeout(a memberlist.Address, d time.Duration) (net.Conn, error) {
	c, err := t.NodeAwareTransport.DialAddressTimeout(a, d)
	if err != nil {
		return nil, err
	}
	return &countConn{Conn: c, t: t}, nil
}

func (t *countTransport) Shutdown() error {
	err := t.NodeAwareTransport.Shutdown()
	t.once.Do(func() { close(t.done) })
	t.wg.Wait()
	return err
}

// countConn counts a gossip TCP stream's bytes.
type countConn struct {
	net.Conn
	t *countTransport
}

func (c *countConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.t.recv.Add(uint64(n))
	return n, err
}

func (c *countConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.t.sent.Add(uint64(n))
	return n, err
}
