package gossip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/meshd/meshd/internal/ratelimit"
)

// Before memberlist authenticates anything it reads whole messages into
// memory: a TCP stream may declare up to 20 MiB, and any number of streams
// are served at once. guardTransport sits between memberlist and its network
// transport and keeps what an unauthenticated sender can make a node hold
// small and short-lived:
//
//   - at most guardMaxStreams incoming streams at once; once half of them
//     are open, at most guardMaxPerSource from one source IP (fair shares
//     under pressure: one source can hold at most half the slots). Below
//     half there is no per-source cap, because many members can share one
//     source IP (a one-host lab on 127.0.0.1, a site behind NAT) and they
//     all push/pull at once when they start and join the same seed; more
//     are closed at accept;
//   - every stream must start, within guardHeaderTimeout, with an encrypted
//     message header (meshd always encrypts) declaring at most
//     guardMaxMessage bytes, and the declared sizes of the streams being
//     read must fit in guardBudget; otherwise the stream is closed before
//     memberlist sees it;
//   - a stream reads at most what its header declared and lives at most
//     guardStreamTimeout (memberlist's own deadlines cannot extend it);
//   - UDP packets that cannot be encrypted memberlist packets (a label
//     header, a first byte that is no encryption version, too short) are
//     dropped before memberlist logs them.
//
// Each refusal is counted and logged through the node's rate limits.
const (
	// guardMaxStreams bounds goroutines and fds, not memory (guardBudget
	// does that): sized for a seed that 100 members join within seconds
	// from one address, with a slow CPU (each push/pull stream is then
	// open for a while).
	guardMaxStreams    = 256
	guardMaxPerSource  = 8
	guardHeaderTimeout = 2 * time.Second
	guardStreamTimeout = 10 * time.Second

	// guardMaxMessage is the largest stream message a member can send us: a
	// push/pull state with maxStateRecords members (name ≤ 255 bytes, meta
	// ≤ 512 bytes, ~64 bytes of fields each, ≈ 3.3 MB) plus our catalog
	// state (≤ maxStateBytes), uncompressed, rounded up.
	guardMaxMessage = 6 << 20
	// guardBudget bounds the sum of the declared sizes of the streams being
	// read at once (memberlist buffers each whole before decrypting it).
	guardBudget = 16 << 20

	// Encrypted UDP packets: version byte (0 or 1), 12-byte nonce, 16-byte tag.
	minEncryptedPacket = 1 + 12 + 16

	encryptMsgType = 10  // memberlist's encryptMsg
	labelMsgType   = 244 // memberlist's hasLabelMsg
)

// guardStats counts what the guard refused.
type guardStats struct {
	StreamsRefused atomic.Uint64 // closed at accept or before memberlist read them
	PacketsDropped atomic.Uint64
}

type guardTransport struct {
	inner memberlist.NodeAwareTransport
	warn  func(key, msg string) // rate-limited WARN line
	now   func() time.Time

	maxStreams, maxPerSource int
	maxMessage, budget       int64
	headerTimeout, lifetime  time.Duration

	streamCh chan net.Conn
	packetCh chan *memberlist.Packet
	done     chan struct{}
	wg       sync.WaitGroup
	stats    guardStats

	mu       sync.Mutex
	open     int                   // guarded by mu: streams admitted and not closed
	perSrc   map[netip.Addr]int    // guarded by mu
	reserved int64                 // guarded by mu: declared bytes of streams being read
	screens  map[net.Conn]struct{} // guarded by mu: streams whose header is being read
	stopped  bool                  // guarded by mu: Shutdown was called
}

var _ memberlist.NodeAwareTransport = (*guardTransport)(nil)

func newGuardTransport(inner memberlist.NodeAwareTransport, warn func(key, msg string), tune func(*guardTransport)) *guardTransport {
	t := &guardTransport{
		inner:         inner,
		warn:          warn,
		now:           time.Now,
		maxStreams:    guardMaxStreams,
		maxPerSource:  guardMaxPerSource,
		maxMessage:    guardMaxMessage,
		budget:        guardBudget,
		headerTimeout: guardHeaderTimeout,
		lifetime:      guardStreamTimeout,
		streamCh:      make(chan net.Conn),
		packetCh:      make(chan *memberlist.Packet),
		done:          make(chan struct{}),
		perSrc:        make(map[netip.Addr]int),
		screens:       make(map[net.Conn]struct{}),
	}
	if tune != nil {
		tune(t)
	}
	t.wg.Add(2)
	go t.streamLoop()
	go t.packetLoop()
	return t
}

func (t *guardTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

func (t *guardTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.inner.WriteTo(b, addr)
}

func (t *guardTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.inner.WriteToAddress(b, a)
}

func (t *guardTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.inner.DialTimeout(addr, timeout)
}

func (t *guardTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.inner.DialAddressTimeout(a, timeout)
}

func (t *guardTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }
func (t *guardTransport) StreamCh() <-chan net.Conn           { return t.streamCh }

// Shutdown stops the inner transport (the guard keeps reading from it until
// it has stopped), then closes the streams being screened and stops the
// guard's goroutines. It is idempotent.
func (t *guardTransport) Shutdown() error {
	err := t.inner.Shutdown()
	t.mu.Lock()
	first := !t.stopped
	t.stopped = true
	for c := range t.screens {
		_ = c.Close()
	}
	t.mu.Unlock()
	if first {
		close(t.done)
	}
	t.wg.Wait()
	return err
}

// openStreams returns the number of admitted streams not yet closed and the
// bytes they reserved.
func (t *guardTransport) openStreams() (int, int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.open, t.reserved
}

// screening adds or removes c from the streams Shutdown closes; it reports
// false if the guard is already stopped.
func (t *guardTransport) screening(c net.Conn, on bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !on {
		delete(t.screens, c)
		return true
	}
	if t.stopped {
		return false
	}
	t.screens[c] = struct{}{}
	return true
}

func (t *guardTransport) packetLoop() {
	defer t.wg.Done()
	in := t.inner.PacketCh()
	counter, _ := t.inner.(interface{ countPacket(n int) })
	for {
		select {
		case <-t.done:
			return
		case p := <-in:
			if counter != nil {
				counter.countPacket(len(p.Buf))
			}
			if why := badPacket(p.Buf); why != "" {
				t.stats.PacketsDropped.Add(1)
				src := sourceIP(p.From)
				t.warn("udp:"+src.String(), fmt.Sprintf("gossip: dropped UDP packet from %s: %s", src, why))
				continue
			}
			select {
			case t.packetCh <- p:
			case <-t.done:
				return
			}
		}
	}
}

// badPacket says why b cannot be an encrypted memberlist packet, or "".
func badPacket(b []byte) string {
	switch {
	case len(b) > 0 && b[0] == labelMsgType:
		return "label header (meshd uses none)"
	case len(b) < minEncryptedPacket:
		return fmt.Sprintf("%d bytes, too short to be encrypted", len(b))
	case b[0] > 1:
		return "not encrypted"
	}
	return ""
}

func (t *guardTransport) streamLoop() {
	defer t.wg.Done()
	in := t.inner.StreamCh()
	for {
		select {
		case <-t.done:
			return
		case c := <-in:
			src := sourceIP(c.RemoteAddr())
			if why := t.admit(src); why != "" {
				t.stats.StreamsRefused.Add(1)
				_ = c.Close()
				t.warn("tcp:"+src.String(), fmt.Sprintf("gossip: refused TCP connection from %s: %s", src, why))
				continue
			}
			t.wg.Add(1)
			go t.screen(c, src)
		}
	}
}

// admit counts a new stream from src, or says why it is refused.
func (t *guardTransport) admit(src netip.Addr) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.open >= t.maxStreams {
		return fmt.Sprintf("%d gossip streams open (limit)", t.open)
	}
	if t.perSrc[src] >= t.maxPerSource && t.open >= t.maxStreams/2 {
		return fmt.Sprintf("%d gossip streams open from this address (limit)", t.perSrc[src])
	}
	t.open++
	t.perSrc[src]++
	return ""
}

func (t *guardTransport) release(src netip.Addr, reserved int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.open--
	if t.perSrc[src]--; t.perSrc[src] <= 0 {
		delete(t.perSrc, src)
	}
	t.reserved -= reserved
}

// reserve takes n bytes of the budget.
func (t *guardTransport) reserve(n int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.reserved+n > t.budget {
		return false
	}
	t.reserved += n
	return true
}

// screen reads the stream's message header and hands the stream to
// memberlist if it is acceptable.
func (t *guardTransport) screen(c net.Conn, src netip.Addr) {
	defer t.wg.Done()
	gc := &guardedConn{Conn: c, t: t, src: src, hard: t.now().Add(t.lifetime)}
	ok := false
	defer func() {
		if !ok {
			_ = gc.Close()
		}
	}()
	if !t.screening(c, true) {
		return
	}
	_ = c.SetDeadline(t.now().Add(t.headerTimeout))
	var hdr [5]byte
	n, err := io.ReadFull(c, hdr[:])
	t.screening(c, false)
	if err != nil {
		if n > 0 || !errors.Is(err, io.EOF) {
			t.refuse(src, fmt.Sprintf("incomplete message header (%d bytes)", n))
		}
		return // a bare connect-and-close is a port check: nothing to say
	}
	if hdr[0] != encryptMsgType {
		t.refuse(src, "not an encrypted gossip message")
		return
	}
	size := int64(binary.BigEndian.Uint32(hdr[1:]))
	if size > t.maxMessage {
		t.refuse(src, fmt.Sprintf("message of %d bytes declared, limit %d", size, t.maxMessage))
		return
	}
	if !t.reserve(size) {
		t.refuse(src, "too many large gossip messages being read at once")
		return
	}
	gc.reserved = size
	gc.prefix = hdr[:]
	gc.left = size
	_ = c.SetDeadline(gc.hard)
	select {
	case t.streamCh <- gc:
		ok = true
	case <-t.done:
	}
}

func (t *guardTransport) refuse(src netip.Addr, why string) {
	t.stats.StreamsRefused.Add(1)
	t.warn("tcp:"+src.String(), fmt.Sprintf("gossip: rejected TCP stream from %s: %s", src, why))
}

// guardedConn is an admitted stream: it replays the header the guard read,
// then reads at most the declared message, and cannot live past hard.
type guardedConn struct {
	net.Conn
	t        *guardTransport
	src      netip.Addr
	hard     time.Time
	reserved int64

	prefix []byte // not yet replayed header bytes
	left   int64  // message bytes still allowed after the header
	once   sync.Once
}

func (c *guardedConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	if c.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.Conn.Read(p)
	c.left -= int64(n)
	return n, err
}

func (c *guardedConn) clamp(d time.Time) time.Time {
	if d.IsZero() || d.After(c.hard) {
		return c.hard
	}
	return d
}

func (c *guardedConn) SetDeadline(d time.Time) error     { return c.Conn.SetDeadline(c.clamp(d)) }
func (c *guardedConn) SetReadDeadline(d time.Time) error { return c.Conn.SetReadDeadline(c.clamp(d)) }
func (c *guardedConn) SetWriteDeadline(d time.Time) error {
	return c.Conn.SetWriteDeadline(c.clamp(d))
}

func (c *guardedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.t.release(c.src, c.reserved) })
	return err
}

func sourceIP(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			return ip.Unmap()
		}
	case *net.UDPAddr:
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

// logGate rate-limits the log lines an unauthenticated sender can cause:
// one line per key per limitEvery (the per-source limiter), and in all at
// most a burst of unauthBurst lines then one per unauthEvery, whatever the
// number of sources (spoofed UDP).
type logGate struct {
	log     *slog.Logger
	perKey  *limiter
	overall *ratelimit.Bucket
	now     func() time.Time
	dropped atomic.Uint64
}

const (
	unauthBurst = 5
	unauthRate  = 0.2 // lines per second once the burst is spent
)

func newLogGate(log *slog.Logger, perKey *limiter) *logGate {
	return &logGate{log: log, perKey: perKey, overall: ratelimit.NewBucket(unauthRate, unauthBurst), now: time.Now}
}

// allow reports whether a line for key may be written now.
func (g *logGate) allow(key string) bool {
	now := g.now()
	if !g.perKey.allow(key, now) || !g.overall.Allow(now) {
		g.dropped.Add(1)
		return false
	}
	return true
}

// warn writes msg at WARN if allowed, with the number of lines suppressed
// since the last one.
func (g *logGate) warn(key, msg string) {
	if g.allow(key) {
		if n := g.dropped.Swap(0); n > 0 {
			g.log.Warn(msg, "suppressed", n)
			return
		}
		g.log.Warn(msg)
	}
}
