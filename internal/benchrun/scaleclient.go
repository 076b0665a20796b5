package benchrun

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshd/meshd/internal/tcpserver"
)

// The client side of the scale measurement's failover phases (scalefo.go):
// echo targets that note which site served a tagged connection, and client
// loops that open a new connection through an import every foEvery, each one
// tagged round trip, and record when it started, ended, whether it worked
// and which site served it. The figures come from those records (foRecovery,
// foMaxGap, foFailed), pure functions of timestamps.

const (
	foEvery       = 20 * time.Millisecond // a new connection this often, per loop
	foConnTimeout = 10 * time.Second      // one connection: connect and round trip (longer than a cut: caught, it rides it out)
	foMaxOpen     = 100                   // connections a loop has open at once
	foMaxConns    = 5000                  // per loop; at foEvery that is 100 s
	foPayload     = 64                    // bytes of one round trip: the tag, padded
	foMaxTags     = 20000                 // tags a tagBook keeps (the loops take theirs back)
)

// foTagPrefix starts a client loop's payload: "scale-fo LOOP.SEQ\n" padded
// with '.' to foPayload bytes.
const foTagPrefix = "scale-fo "

// foTag is the payload of connection seq of loop.
func foTag(loop, seq int) []byte {
	b := make([]byte, foPayload)
	for i := range b {
		b[i] = '.'
	}
	copy(b, fmt.Sprintf("%s%d.%d\n", foTagPrefix, loop, seq))
	return b
}

// parseTag returns the tag ("LOOP.SEQ") of a payload's first bytes, if
// they are a complete client-loop tag.
func parseTag(b []byte) (string, bool) {
	rest, ok := bytes.CutPrefix(b, []byte(foTagPrefix))
	if !ok {
		return "", false
	}
	tag, _, ok := bytes.Cut(rest, []byte("\n"))
	if !ok || len(tag) == 0 || len(tag) > 24 {
		return "", false
	}
	return string(tag), true
}

// tagBook maps the tags the echo targets saw to the site (target index)
// that served them, until the client loop takes them. At most foMaxTags
// are kept: a tag nobody takes back (its client timed out) does not pile up.
type tagBook struct {
	mu   sync.Mutex
	tags map[string]int // guarded by mu
}

func newTagBook() *tagBook { return &tagBook{tags: make(map[string]int)} }

func (b *tagBook) note(tag string, site int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.tags) < foMaxTags {
		b.tags[tag] = site
	}
}

// take returns and forgets the site that served tag; -1 if none noted it.
func (b *tagBook) take(tag string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	site, ok := b.tags[tag]
	if !ok {
		return -1
	}
	delete(b.tags, tag)
	return site
}

// listenTagEcho starts an echo server on 127.0.0.1 for site: it copies
// every byte back, like internal/echo, and notes the tag of a client
// loop's connection in book before echoing it. Any other client (an
// import's round trip, the exporter's health check) sees a plain echo.
func listenTagEcho(book *tagBook, site int) (*tcpserver.Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("scale: echo target: %w", err)
	}
	return tcpserver.Serve(ln, func(c net.Conn) {
		buf := make([]byte, 32<<10)
		n := 0
		for n < foPayload { // the first bytes, while they may still be a tag
			k, err := c.Read(buf[n:foPayload])
			n += k
			if err != nil || bytes.IndexByte(buf[:n], '\n') >= 0 ||
				!bytes.HasPrefix([]byte(foTagPrefix), buf[:min(n, len(foTagPrefix))]) {
				break
			}
		}
		if tag, ok := parseTag(buf[:n]); ok {
			book.note(tag, site)
		}
		if n > 0 {
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
		io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, buf)
		tcpserver.CloseWrite(c)
	}), nil
}

// foConn is one client connection of a loop.
type foConn struct {
	Start, End time.Time
	OK         bool
	Site       int // the site whose target served it; -1 unknown
	Err        string
}

// foExchange is one client connection: connect to addr, send payload,
// read it back, close; within timeout.
func foExchange(ctx context.Context, addr string, payload []byte, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	if _, err := c.Write(payload); err != nil {
		return err
	}
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if !bytes.Equal(got, payload) {
		return errors.New("echo differs from what was sent")
	}
	return nil
}

// foLoop opens a new connection through one import every foEvery until
// stopped, at most foMaxConns times, without waiting for the ones still
// open (at most foMaxOpen): like independent clients, a connection caught
// by a cut does not hold back the ones after it.
type foLoop struct {
	name    string // the node whose import it uses
	addr    string
	id      int
	book    *tagBook
	timeout time.Duration // of one connection

	gate sync.RWMutex // a connection holds it shared while open; quiesce takes it
	mu   sync.Mutex
	recs []foConn // guarded by mu; in the order the connections ended
}

// foLoops are the client loops of one phase; Stop ends them.
type foLoops struct {
	loops []*foLoop
	stop  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

// startFOLoops starts a loop through each of the import addresses addrs
// (names: their nodes), each connection within timeout. ctx bounds the
// connections too (Ctrl-C).
func startFOLoops(ctx context.Context, book *tagBook, names, addrs []string, timeout time.Duration) *foLoops {
	ls := &foLoops{stop: make(chan struct{})}
	for i := range addrs {
		l := &foLoop{name: names[i], addr: addrs[i], id: i, book: book, timeout: timeout}
		ls.loops = append(ls.loops, l)
		ls.wg.Add(1)
		go func() {
			defer ls.wg.Done()
			l.run(ctx, ls.stop)
		}()
	}
	return ls
}

func (l *foLoop) run(ctx context.Context, stop <-chan struct{}) {
	tick := time.NewTicker(foEvery)
	defer tick.Stop()
	var open sync.WaitGroup
	defer open.Wait()
	slots := make(chan struct{}, foMaxOpen)
	for seq := 0; seq < foMaxConns; seq++ {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case <-tick.C:
		}
		select {
		case slots <- struct{}{}:
		default:
			continue // foMaxOpen connections open: skip this tick
		}
		l.gate.RLock()
		open.Add(1)
		go func() {
			defer open.Done()
			defer func() { <-slots }()
			l.exchange(ctx, seq)
		}()
	}
}

// exchange is connection seq; it releases l.gate when it is closed.
func (l *foLoop) exchange(ctx context.Context, seq int) {
	payload := foTag(l.id, seq)
	rec := foConn{Start: time.Now(), Site: -1}
	err := foExchange(ctx, l.addr, payload, l.timeout)
	rec.End = time.Now()
	l.gate.RUnlock()
	tag, _ := parseTag(payload)
	site := l.book.take(tag)
	if err != nil && ctx.Err() != nil {
		return // interrupted: not a failure of the mesh
	}
	rec.OK = err == nil
	if rec.OK {
		rec.Site = site
	} else {
		rec.Err = err.Error()
	}
	l.mu.Lock()
	l.recs = append(l.recs, rec)
	l.mu.Unlock()
}

// Stop stops opening connections and waits for the open ones to end
// (each within its timeout).
func (ls *foLoops) Stop() {
	ls.once.Do(func() { close(ls.stop) })
	ls.wg.Wait()
}

// quiesce runs f while no loop has a connection open (the freeze of a
// process then catches no connection halfway, which nothing could save).
func (ls *foLoops) quiesce(f func()) {
	for _, l := range ls.loops {
		l.gate.Lock()
	}
	defer func() {
		for _, l := range ls.loops {
			l.gate.Unlock()
		}
	}()
	f()
}

// records returns a copy of every loop's records, by loop.
func (ls *foLoops) records() [][]foConn {
	out := make([][]foConn, len(ls.loops))
	for i, l := range ls.loops {
		l.mu.Lock()
		out[i] = append([]foConn(nil), l.recs...)
		l.mu.Unlock()
	}
	return out
}

// waitServed waits until every loop's last n connections that started at
// or after since worked and were served by site, for at most d.
func (ls *foLoops) waitServed(ctx context.Context, since time.Time, site, n int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		recs := ls.records()
		var why []string
		for i, rs := range recs {
			if !foServedLast(rs, since, site, n) {
				why = append(why, fmt.Sprintf("%s: %s", ls.loops[i].name, foSummary(rs, since)))
			}
		}
		if len(why) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("clients not served by s%d within %v: %s", site, d, strings.Join(why, "; "))
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// foServedLast reports whether the last n records (by their end) that
// started at or after since all worked and were served by site.
func foServedLast(recs []foConn, since time.Time, site, n int) bool {
	got := 0
	for i := len(recs) - 1; i >= 0 && got < n; i-- {
		r := recs[i]
		if r.Start.Before(since) {
			continue
		}
		if !r.OK || r.Site != site {
			return false
		}
		got++
	}
	return got == n
}

// foSummary is a one-line account of the records that started at or
// after since: how many worked, by site, failed, and the first error.
func foSummary(recs []foConn, since time.Time) string {
	bySite := map[int]int{}
	failed := 0
	first := ""
	for _, r := range recs {
		if r.Start.Before(since) {
			continue
		}
		if r.OK {
			bySite[r.Site]++
		} else {
			failed++
			if first == "" {
				first = r.Err
			}
		}
	}
	var parts []string
	for s := -1; s < scaleSites; s++ {
		if bySite[s] > 0 {
			name := "s" + strconv.Itoa(s)
			if s < 0 {
				name = "unknown site"
			}
			parts = append(parts, fmt.Sprintf("%d by %s", bySite[s], name))
		}
	}
	out := fmt.Sprintf("ok [%s], %d failed", strings.Join(parts, ", "), failed)
	if first != "" {
		out += " (first: " + first + ")"
	}
	return out
}

// foRecovery is the time from cut to the earliest end of a connection
// that started at or after cut, worked, and was served by a site other
// than site: when the client got through again. ok is false if none did.
func foRecovery(recs []foConn, cut time.Time, site int) (time.Duration, bool) {
	var first time.Time
	for _, r := range recs {
		if !r.Start.Before(cut) && r.OK && r.Site >= 0 && r.Site != site && (first.IsZero() || r.End.Before(first)) {
			first = r.End
		}
	}
	if first.IsZero() {
		return 0, false
	}
	return first.Sub(cut), true
}

// foBack is the time from thaw to the end of the first connection that
// started at or after thaw, worked and was served by site again; ok is
// false if none did.
func foBack(recs []foConn, thaw time.Time, site int) (time.Duration, bool) {
	var first time.Time
	for _, r := range recs {
		if !r.Start.Before(thaw) && r.OK && r.Site == site && (first.IsZero() || r.End.Before(first)) {
			first = r.End
		}
	}
	if first.IsZero() {
		return 0, false
	}
	return first.Sub(thaw), true
}

// foMaxGap is the longest time within [from, to] during which the client
// completed no working connection: between from, the ends of the working
// connections in the window, and to. The loop runs before from, so from
// counts as a success.
func foMaxGap(recs []foConn, from, to time.Time) time.Duration {
	var ends []time.Time
	for _, r := range recs {
		if r.OK && !r.End.Before(from) && !r.End.After(to) {
			ends = append(ends, r.End)
		}
	}
	slices.SortFunc(ends, time.Time.Compare)
	last := from
	var gap time.Duration
	for _, e := range ends {
		gap = max(gap, e.Sub(last))
		last = e
	}
	return max(gap, to.Sub(last))
}

// foFailed counts the connections that failed and the ones that worked
// among recs.
func foFailed(recs []foConn) (failed, ok int) {
	for _, r := range recs {
		if r.OK {
			ok++
		} else {
			failed++
		}
	}
	return failed, ok
}
