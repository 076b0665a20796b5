package tunnel

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/key"
)

// pattern is the byte stream a stream of TestStreamIntegrityAcrossCutAndClose
// carries: records of a sequence number, the stream's tag, a payload whose
// length and bytes follow from both, and a CRC-32 of the record. Every byte
// is known in advance, so a reader can check each one it gets: any byte
// lost, repeated, reordered or taken from another stream shows at once,
// with the record it belongs to.
type pattern struct {
	tag uint32
	seq uint64
	rec []byte // the current record
	off int    // bytes of rec already produced
	pos int64  // bytes produced
}

func newPattern(tag uint32) *pattern {
	p := &pattern{tag: tag}
	p.fill()
	return p
}

// fill builds record seq: seq (8), tag (4), payload (29-4125 bytes), crc (4).
func (p *pattern) fill() {
	n := 29 + int((p.seq*7919+uint64(p.tag)*104729)%4097)
	rec := make([]byte, 12+n+4)
	binary.BigEndian.PutUint64(rec, p.seq)
	binary.BigEndian.PutUint32(rec[8:], p.tag)
	for i := range n {
		rec[12+i] = byte(p.seq*131 + uint64(p.tag)*17 + uint64(i))
	}
	binary.BigEndian.PutUint32(rec[12+n:], crc32.ChecksumIEEE(rec[:12+n]))
	p.rec, p.off = rec, 0
}

// Read produces the next bytes of the pattern.
func (p *pattern) Read(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k := copy(b[n:], p.rec[p.off:])
		n += k
		p.off += k
		if p.off == len(p.rec) {
			p.seq++
			p.fill()
		}
	}
	p.pos += int64(n)
	return n, nil
}

// check compares got with the pattern's next bytes; on a difference it
// says where (stream offset, record, offset in the record) and what.
func (p *pattern) check(got []byte) error {
	for i, c := range got {
		if want := p.rec[p.off]; c != want {
			return fmt.Errorf("byte %d of the stream (record %d, byte %d of %d): got %#02x, want %#02x; got from there: % x",
				p.pos+int64(i), p.seq, p.off, len(p.rec), c, want, got[i:min(len(got), i+24)])
		}
		p.off++
		if p.off == len(p.rec) {
			p.seq++
			p.fill()
		}
	}
	p.pos += int64(len(got))
	return nil
}

// desyncLog records yamux log lines that only a receiver that lost its
// place in the session's byte stream writes: a frame header parsed from
// stream data (version or type out of range, stream 0, which yamux never
// uses for data or window updates).
type desyncLog struct {
	mu    sync.Mutex
	lines []string
}

func (d *desyncLog) Enabled(context.Context, slog.Level) bool { return true }
func (d *desyncLog) WithAttrs([]slog.Attr) slog.Handler       { return d }
func (d *desyncLog) WithGroup(string) slog.Handler            { return d }
func (d *desyncLog) Handle(_ context.Context, r slog.Record) error {
	m := r.Message
	if strings.Contains(m, "Invalid protocol version") || strings.Contains(m, "Invalid msg type") ||
		strings.Contains(m, "StreamID:0 ") || strings.Contains(m, "Discarding data for stream: 0") {
		d.mu.Lock()
		if len(d.lines) < 10 {
			d.lines = append(d.lines, m)
		}
		d.mu.Unlock()
	}
	return nil
}

func (d *desyncLog) get() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.lines...)
}

// integrityStream writes its pattern on s and checks the pattern its peer
// writes, until the stream ends; it reports what it moved and any wrong
// byte.
type integrityStream struct {
	name     string
	out, in  uint32        // pattern tags: written, expected
	read     *atomic.Int64 // bytes of in read (the peer's writer waits for it)
	peerRead *atomic.Int64 // bytes of out the peer has read
	written  int64
	mismatch error
}

// maxAhead is how far a writer may get ahead of its reader: the streams
// share the session fairly, so each moves data soon after it opens.
const maxAhead = 256 << 10

func (is *integrityStream) run(s net.Conn, stop <-chan struct{}) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		want := newPattern(is.in)
		buf := make([]byte, 32<<10)
		for {
			n, err := s.Read(buf)
			if n > 0 {
				if err := want.check(buf[:n]); err != nil {
					is.mismatch = err
					s.Close()
					return
				}
				is.read.Add(int64(n))
			}
			if err != nil {
				return
			}
		}
	}()
	src := newPattern(is.out)
	sizes := []int{1, 12, 700, 4096, 9000, 16 << 10, 33 << 10}
	buf := make([]byte, 33<<10)
	for i := 0; ; i++ {
		select {
		case <-stop:
			s.Close()
			<-done
			return
		default:
		}
		if is.written-is.peerRead.Load() > maxAhead {
			time.Sleep(time.Millisecond)
			continue
		}
		b := buf[:sizes[i%len(sizes)]]
		src.Read(b)
		s.SetWriteDeadline(time.Now().Add(20 * time.Second))
		n, err := s.Write(b)
		is.written += int64(n)
		if err != nil {
			break
		}
	}
	<-done
	s.Close()
}

// TestStreamIntegrityAcrossCutAndClose: every byte a stream delivers is the
// byte its peer wrote, in order, through a link cut, the recovery and the
// close of both tunnels while the streams are busy. Three streams each way
// carry a known pattern both directions at once (checked byte by byte, see
// pattern), and neither session's receiver may log a frame header parsed
// from data (desyncLog). At the close the streams end with an error, never
// with wrong bytes.
func TestStreamIntegrityAcrossCutAndClose(t *testing.T) {
	logA, logB := &desyncLog{}, &desyncLog{}
	newTun := func(lg *desyncLog, handle func(key.PublicKey, net.Conn)) *Tunnel {
		return newTunnelConfig(t, Config{HandleStream: handle, Logger: slog.New(lg)})
	}
	stop := make(chan struct{})
	// Bytes read of each pattern (tags 1-6 from the openers, 1001-1006
	// from the acceptors).
	readOf := map[uint32]*atomic.Int64{}
	for tag := uint32(1); tag <= 6; tag++ {
		readOf[tag], readOf[tag+1000] = new(atomic.Int64), new(atomic.Int64)
	}
	var (
		mu      sync.Mutex
		streams []*integrityStream
		wg      sync.WaitGroup
	)
	start := func(s net.Conn, is *integrityStream) {
		mu.Lock()
		streams = append(streams, is)
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			is.run(s, stop)
		}()
	}
	// An accepted stream's first 4 bytes name the tag its opener writes;
	// the acceptor writes the tag plus 1000 back.
	accept := func(side string) func(key.PublicKey, net.Conn) {
		return func(_ key.PublicKey, s net.Conn) {
			var tag [4]byte
			if _, err := io.ReadFull(s, tag[:]); err != nil {
				s.Close()
				return
			}
			in := binary.BigEndian.Uint32(tag[:])
			if readOf[in] == nil {
				s.Close()
				return
			}
			start(s, &integrityStream{name: fmt.Sprintf("%s accepted %d", side, in), out: in + 1000, in: in,
				read: readOf[in], peerRead: readOf[in+1000]})
		}
	}
	a := newTun(logA, accept("a"))
	b := newTun(logB, accept("b"))
	defer a.Close()
	defer b.Close()
	link(t, a, b)
	tOpen := time.Now()
	for i := range 6 {
		from, to, side := a, b, "a"
		if i%2 == 1 {
			from, to, side = b, a, "b"
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := from.OpenStream(ctx, to.PublicKey())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		tag := uint32(i + 1)
		var hdr [4]byte
		binary.BigEndian.PutUint32(hdr[:], tag)
		if _, err := s.Write(hdr[:]); err != nil {
			t.Fatal(err)
		}
		start(s, &integrityStream{name: fmt.Sprintf("%s opened %d", side, tag), out: tag, in: tag + 1000,
			read: readOf[tag+1000], peerRead: readOf[tag]})
	}

	t.Logf("6 streams open in %v", time.Since(tOpen).Round(time.Millisecond))
	// Every stream moves data before the cut (each reader has had some),
	// or 5 s pass: on a loaded machine a stream may wait longer behind the
	// others, and the bytes that did move are checked all the same.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		moving := len(streams) == 12
		for _, is := range streams {
			moving = moving && is.read.Load() > 0
		}
		mu.Unlock()
		if moving {
			t.Logf("all moving %v after the first open", time.Since(tOpen).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Logf("not all streams moved data within 5 s; cutting anyway")
			break
		}
	}
	t0 := time.Now()
	b.SetBlackhole([]key.PublicKey{a.PublicKey()})
	time.Sleep(1500 * time.Millisecond)
	b.SetBlackhole(nil)
	time.Sleep(time.Second)
	// Close both tunnels under the busy streams, then stop the writers.
	t.Logf("closing %v after the cut", time.Since(t0).Round(time.Millisecond))
	a.Close()
	t.Logf("a closed %v after the cut", time.Since(t0).Round(time.Millisecond))
	b.Close()
	close(stop)
	wg.Wait()
	t.Logf("all done %v after the cut", time.Since(t0).Round(time.Millisecond))

	mu.Lock()
	defer mu.Unlock()
	// An acceptor starts once the opener's tag arrived: on a loaded
	// machine one may not have before the close.
	t.Logf("%d streams ran (6 opened, %d accepted)", len(streams), len(streams)-6)
	var total int64
	for _, is := range streams {
		t.Logf("%s: wrote %d, read %d", is.name, is.written, is.read.Load())
		if is.mismatch != nil {
			t.Errorf("%s: wrong data: %v", is.name, is.mismatch)
		}
		total += is.read.Load()
	}
	if total < 1<<20 {
		t.Errorf("the streams moved %d bytes in all, want at least 1 MiB checked", total)
	}
	for side, lg := range map[string]*desyncLog{"a": logA, "b": logB} {
		if l := lg.get(); len(l) > 0 {
			t.Errorf("%s's yamux parsed stream data as frame headers: %q", side, l)
		}
	}
}
