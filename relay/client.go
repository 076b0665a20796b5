package relay

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/internal/key"
)

// ClientConfig configures a Client. A zero field means its default.
type ClientConfig struct {
	// ClusterKey is the mesh's shared key (16, 24 or 32 bytes). Required.
	ClusterKey []byte
	// PublicKey is this node's WireGuard public key: its address on the
	// relay. Required.
	PublicKey key.PublicKey
	// PrivateKey, if set, is the private key of PublicKey: the client then
	// proves it owns the key it registers (required by a relay that has
	// its own key). Its public key must be PublicKey.
	PrivateKey key.PrivateKey
	// RelayKey, if set, is the WireGuard public key the relay node must
	// prove it holds (from its gossip record); a relay that announces
	// another key or cannot prove it is refused (ErrRelayIdentity).
	// Needs PrivateKey.
	RelayKey key.PublicKey
	// Logger receives connection events (default: discard).
	Logger *slog.Logger
	// QueueLen bounds the outbound queue, in packets (default 512).
	QueueLen int
	// PingInterval is the keepalive and RTT probe period (default 1s). When
	// nothing arrives from the server for 3 intervals the client closes
	// itself with ErrKeepaliveTimeout.
	PingInterval time.Duration
	// OnPacket is called from the client's read loop for every packet
	// relayed to this node. It must not block and must not call Close; pkt
	// is only valid during the call. Nil drops packets.
	OnPacket func(from key.PublicKey, pkt []byte)
}

// Validate reports whether c is usable (zero optional fields are fine).
func (c *ClientConfig) Validate() error {
	if err := ValidateClusterKey(c.ClusterKey); err != nil {
		return err
	}
	if c.PublicKey.IsZero() {
		return errors.New("relay: client config: no public key")
	}
	if c.QueueLen < 0 || c.PingInterval < 0 {
		return errors.New("relay: client config: negative limit")
	}
	hasPriv := c.PrivateKey != key.PrivateKey{}
	if hasPriv && c.PrivateKey.Public() != c.PublicKey {
		return errors.New("relay: client config: the private key is not the public key's")
	}
	if !c.RelayKey.IsZero() && !hasPriv {
		return errors.New("relay: client config: authenticating the relay needs the private key")
	}
	return nil
}

func (c ClientConfig) withDefaults() ClientConfig {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.QueueLen == 0 {
		c.QueueLen = 512
	}
	if c.PingInterval == 0 {
		c.PingInterval = time.Second
	}
	return c
}

// clientHandshakeTimeout bounds Dial's handshake (a ctx deadline may be
// shorter).
const clientHandshakeTimeout = 5 * time.Second

// ClientStats are a Client's packet counters.
type ClientStats struct {
	Sent     uint64 // packets written to the server
	Received uint64 // packets delivered to OnPacket
	Dropped  uint64 // Send calls that returned ErrQueueFull
}

// cpkt is a packet queued for the server, to dst.
type cpkt struct {
	dst key.PublicKey
	buf *pbuf
}

// Client is one authenticated connection to a relay server. It has a read
// goroutine (which calls OnPacket) and a write goroutine; both end when the
// connection does. Methods are safe for concurrent use.
type Client struct {
	// Immutable after Dial.
	addr      string
	cfg       ClientConfig
	log       *slog.Logger
	conn      net.Conn
	br        *bufio.Reader // read goroutine only (Dial before it)
	bw        *bufio.Writer // write goroutine only (Dial before it)
	epoch     time.Time     // ping data is nanoseconds since epoch
	queue     chan cpkt     // never closed; senders never block
	ctrl      chan uint64   // pongs to write; never closed
	done      chan struct{} // closed by closeWith
	wg        sync.WaitGroup
	closeOnce sync.Once
	err       error // written once by closeWith before done is closed

	// Atomic.
	rtt                     atomic.Int64 // nanoseconds; 0 until the first pong
	sent, received, dropped atomic.Uint64
}

// Dial connects to the relay server at addr and authenticates. It returns
// once the server has accepted the client, or with an error matching
// ErrAuthFailed when the server rejects the cluster key.
func Dial(ctx context.Context, addr string, cfg ClientConfig) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("relay: dial %s: %w", addr, err)
	}
	c := &Client{
		addr:  addr,
		cfg:   cfg,
		log:   cfg.Logger,
		conn:  conn,
		br:    bufio.NewReaderSize(conn, 64<<10),
		bw:    bufio.NewWriterSize(conn, 64<<10),
		epoch: time.Now(),
		queue: make(chan cpkt, cfg.QueueLen),
		ctrl:  make(chan uint64, 4),
		done:  make(chan struct{}),
	}
	if err := c.handshake(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	c.log.Info("relay: connected", "relay", addr, "key", cfg.PublicKey.ShortString())
	c.wg.Add(2)
	go c.readLoop()
	go c.writeLoop()
	return c, nil
}

// handshake runs the client side of the handshake under one deadline.
func (c *Client) handshake(ctx context.Context) error {
	deadline := time.Now().Add(clientHandshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c.conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	fail := func(what string, err error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("relay: handshake with %s: %w", c.addr, ctx.Err())
		}
		if isTimeout(err) {
			if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
				return fmt.Errorf("relay: handshake with %s: %w", c.addr, context.DeadlineExceeded)
			}
			return fmt.Errorf("relay: handshake with %s: %s: timeout", c.addr, what)
		}
		return fmt.Errorf("relay: handshake with %s: %s: %w", c.addr, what, err)
	}

	var buf [maxHandshakeFrame]byte
	t, p, err := readFrame(c.br, buf[:])
	if err != nil {
		return fail("read serverHello", err)
	}
	if t != frameServerHello {
		return fail("read serverHello", fmt.Errorf("%w: got %s", ErrProtocol, t))
	}
	h, err := parseServerHello(p)
	if err != nil {
		return fail("read serverHello", err)
	}
	if h.version != ProtocolVersion {
		return fail("read serverHello", fmt.Errorf("%w: server speaks %d, client %d", ErrVersion, h.version, ProtocolVersion))
	}
	a := clientAuth{version: ProtocolVersion, pub: c.cfg.PublicKey}
	a.mac = authMAC(authKey(c.cfg.ClusterKey), &h.nonce, a.pub)
	hasPriv := c.cfg.PrivateKey != key.PrivateKey{}
	var d []byte
	switch {
	case !c.cfg.RelayKey.IsZero() && h.server != c.cfg.RelayKey:
		return fmt.Errorf("%w: %s announces key %s, want %s", ErrRelayIdentity, c.addr, h.server.ShortString(), c.cfg.RelayKey.ShortString())
	case hasPriv && !h.server.IsZero():
		if d = sharedKey(c.cfg.PrivateKey, h.server); d == nil {
			return fmt.Errorf("%w: %s announces an unusable key", ErrRelayIdentity, c.addr)
		}
		a.hasProof = true
		if _, err := rand.Read(a.nonce[:]); err != nil {
			return fmt.Errorf("relay: nonce: %w", err)
		}
		a.owner = proofMAC(d, ownerLabel, &h.nonce, a.pub)
	}
	writeFrame(c.bw, frameClientAuth, a.marshal())
	if err := c.bw.Flush(); err != nil {
		return fail("write clientAuth", err)
	}
	t, okp, err := readFrame(c.br, buf[:])
	if err != nil {
		if ctx.Err() == nil && !isTimeout(err) {
			// The server closes the connection on a wrong mac.
			return fmt.Errorf("%w: %s closed the connection after clientAuth (%w)", ErrAuthFailed, c.addr, err)
		}
		return fail("read serverOK", err)
	}
	if t != frameServerOK {
		return fail("read serverOK", fmt.Errorf("%w: got %s", ErrProtocol, t))
	}
	if !c.cfg.RelayKey.IsZero() {
		want := proofMAC(d, serverLabel, &a.nonce, h.server)
		if len(okp) < macLen || !hmac.Equal(want[:], okp[:macLen]) {
			return fmt.Errorf("%w: %s did not prove it holds key %s", ErrRelayIdentity, c.addr, c.cfg.RelayKey.ShortString())
		}
	}
	if !stop() { // ctx ended and is resetting the deadline
		return fmt.Errorf("relay: handshake with %s: %w", c.addr, context.Cause(ctx))
	}
	return c.conn.SetDeadline(time.Time{})
}

// Send queues pkt for the node with public key to. It never blocks: when the
// queue is full the packet is dropped and Send returns ErrQueueFull. pkt is
// copied; the caller may reuse it. After the client has ended Send returns
// net.ErrClosed.
func (c *Client) Send(to key.PublicKey, pkt []byte) error {
	if len(pkt) > MaxPacket {
		return ErrPacketTooLarge
	}
	select {
	case <-c.done:
		return net.ErrClosed
	default:
	}
	b := getBuf(len(pkt))
	copy(b.b, pkt)
	select {
	case c.queue <- cpkt{dst: to, buf: b}:
		return nil
	default:
		putBuf(b)
		c.dropped.Add(1)
		return ErrQueueFull
	}
}

// RTT returns the last measured round-trip time to the server (0 before the
// first pong).
func (c *Client) RTT() time.Duration { return time.Duration(c.rtt.Load()) }

// Done is closed when the connection ends: server gone, keepalive timeout,
// write error or Close.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the client ended (net.ErrClosed after Close), or nil
// while it runs.
func (c *Client) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Addr returns the relay server address given to Dial.
func (c *Client) Addr() string { return c.addr }

// Stats returns the client's packet counters.
func (c *Client) Stats() ClientStats {
	return ClientStats{Sent: c.sent.Load(), Received: c.received.Load(), Dropped: c.dropped.Load()}
}

// Close ends the connection and waits for the client's goroutines. It is
// idempotent. It must not be called from OnPacket.
func (c *Client) Close() error {
	c.closeWith(net.ErrClosed)
	c.wg.Wait()
	return nil
}

// closeWith records the first reason, closes done and the connection (which
// unblocks both goroutines) and logs an unexpected end.
func (c *Client) closeWith(reason error) {
	c.closeOnce.Do(func() {
		c.err = reason
		close(c.done)
		c.conn.Close()
		if !errors.Is(reason, net.ErrClosed) {
			c.log.Info("relay: connection ended", "relay", c.addr, "reason", reason.Error())
		}
	})
}

// readLoop reads frames, delivers packets to OnPacket and answers pings,
// until an error or the keepalive deadline.
func (c *Client) readLoop() {
	defer c.wg.Done()
	buf := make([]byte, MaxFrame)
	interval := c.cfg.PingInterval
	timeout := 3 * interval
	var armed time.Time
	for {
		// Re-arm the keepalive deadline at most 8 times per interval.
		if now := time.Now(); now.Sub(armed) > interval/8 {
			c.conn.SetReadDeadline(now.Add(timeout))
			armed = now
		}
		t, p, err := readFrame(c.br, buf)
		if err != nil {
			switch {
			case isTimeout(err):
				err = fmt.Errorf("%w: nothing from %s for %v", ErrKeepaliveTimeout, c.addr, timeout)
			case errors.Is(err, io.EOF):
				err = fmt.Errorf("relay: %s closed the connection: %w", c.addr, err)
			default:
				err = fmt.Errorf("relay: read from %s: %w", c.addr, err)
			}
			c.closeWith(err)
			return
		}
		switch t {
		case frameRecv:
			src, pkt, err := parseKeyPayload(p)
			if err != nil {
				c.closeWith(err)
				return
			}
			c.received.Add(1)
			if c.cfg.OnPacket != nil {
				c.cfg.OnPacket(src, pkt)
			}
		case framePing:
			if v, err := parseU64(p); err == nil {
				select {
				case c.ctrl <- v:
				default:
				}
			}
		case framePong:
			if v, err := parseU64(p); err == nil {
				now := time.Since(c.epoch)
				if sent := time.Duration(v); sent >= 0 && sent <= now {
					c.rtt.Store(int64(now - sent))
				}
			}
		default: // a type this version does not know: skip
		}
	}
}

// writeLoop writes queued packets, pongs and a ping every interval,
// flushing when nothing else is pending.
func (c *Client) writeLoop() {
	defer c.wg.Done()
	defer c.drain()
	interval := c.cfg.PingInterval
	timeout := max(3*interval, 5*time.Second)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	armed := armWriteDeadline(c.conn, time.Time{}, timeout)
	err := writeU64Frame(c.bw, framePing, uint64(time.Since(c.epoch)))
	if err == nil {
		err = c.bw.Flush()
	}
	for err == nil {
		select {
		case <-c.done:
			return
		case p := <-c.queue:
			armed = armWriteDeadline(c.conn, armed, timeout)
			err = writeKeyFrame(c.bw, frameSend, &p.dst, p.buf.b)
			putBuf(p.buf)
			if err == nil {
				c.sent.Add(1)
			}
		case v := <-c.ctrl:
			armed = armWriteDeadline(c.conn, armed, timeout)
			err = writeU64Frame(c.bw, framePong, v)
		case <-tick.C:
			armed = armWriteDeadline(c.conn, armed, timeout)
			err = writeU64Frame(c.bw, framePing, uint64(time.Since(c.epoch)))
		}
		if err == nil && len(c.queue) == 0 && len(c.ctrl) == 0 {
			err = c.bw.Flush()
		}
	}
	c.closeWith(fmt.Errorf("relay: write to %s: %w", c.addr, err))
}

// drain returns queued buffers to the pool after the writer stops.
func (c *Client) drain() {
	for {
		select {
		case p := <-c.queue:
			putBuf(p.buf)
		default:
			return
		}
	}
}
