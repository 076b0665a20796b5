package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// MessageSize is the request (and response) size of the latency, connection
// rate and idle measurements.
const MessageSize = 64

// grace is how long past its planned end a measurement may wait for
// in-flight I/O before giving up on a connection.
const grace = 10 * time.Second

// Dialer dials the address under test. With Spread set, successive
// connections are bound to source addresses 127.0.0.2 … 127.0.0.254 in
// turn, so tens of thousands of loopback connections (and their
// TIME_WAIT remnants) do not exhaust one source address's ephemeral
// ports. Only use Spread for loopback targets. The port is chosen at
// connect time (IP_BIND_ADDRESS_NO_PORT on Linux), so the bound sockets
// do not reserve port numbers that other processes' dials need.
type Dialer struct {
	Spread bool
	next   atomic.Uint32
}

// Dial connects to addr.
func (d *Dialer) Dial(ctx context.Context, addr string) (net.Conn, error) {
	nd := net.Dialer{KeepAliveConfig: keepAlive}
	if d != nil && d.Spread {
		i := d.next.Add(1)
		nd.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%253))}
		nd.Control = bindNoPort
	}
	return nd.DialContext(ctx, "tcp", addr)
}

// keepAlive is TCP keepalive for the bench's client and server sockets:
// Go's default (a probe every 15 s) on hundreds of thousands of idle
// loopback sockets is a storm that overflows the kernel's input backlog
// and times healthy connections out; meshd's own sockets use the same.
var keepAlive = net.KeepAliveConfig{Enable: true, Idle: 2 * time.Minute, Interval: 30 * time.Second, Count: 4}

// firstErr keeps an error count and the first error.
type firstErr struct {
	mu    sync.Mutex
	n     int
	first error
}

func (f *firstErr) add(err error) {
	f.mu.Lock()
	f.n++
	if f.first == nil {
		f.first = err
	}
	f.mu.Unlock()
}

func (f *firstErr) get() (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n, f.first
}

// ThroughputResult is the outcome of Throughput.
type ThroughputResult struct {
	Bytes    int64         // bytes the sink acknowledged
	Elapsed  time.Duration // first write to last acknowledgement
	MBps     float64       // Bytes / Elapsed, in 10^6 bytes per second
	Errors   int           // streams that failed
	FirstErr error
}

// Throughput writes to the Sink at addr over streams parallel connections
// for about dur, then half-closes each and waits for the sink's count of
// bytes received. Bounded by dur plus a grace period.
func Throughput(ctx context.Context, addr string, streams int, dur time.Duration) ThroughputResult {
	var (
		total  atomic.Int64
		errs   firstErr
		wg     sync.WaitGroup
		lastMu sync.Mutex
		last   time.Time
	)
	start := time.Now()
	end := start.Add(dur)
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := sinkStream(ctx, addr, end)
			if err != nil {
				errs.add(err)
				return
			}
			total.Add(n)
			lastMu.Lock()
			if t := time.Now(); t.After(last) {
				last = t
			}
			lastMu.Unlock()
		}()
	}
	wg.Wait()
	r := ThroughputResult{Bytes: total.Load()}
	r.Errors, r.FirstErr = errs.get()
	if !last.IsZero() {
		r.Elapsed = last.Sub(start)
	}
	if r.Elapsed > 0 {
		r.MBps = float64(r.Bytes) / 1e6 / r.Elapsed.Seconds()
	}
	return r
}

func sinkStream(ctx context.Context, addr string, end time.Time) (int64, error) {
	var d Dialer
	c, err := d.Dial(ctx, addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	c.SetDeadline(end.Add(grace))
	buf := make([]byte, 64<<10)
	rand.Read(buf)
	var sent int64
	// At least one buffer: a stream that connects only after its end (a
	// slow handshake on a loaded machine) measures that buffer instead of
	// reporting 0 bytes without an error.
	for {
		n, err := c.Write(buf)
		sent += int64(n)
		if err != nil {
			return 0, fmt.Errorf("write: %w", err)
		}
		if !time.Now().Before(end) || ctx.Err() != nil {
			break
		}
	}
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return 0, fmt.Errorf("close write: %w", err)
	}
	var ack [8]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		return 0, fmt.Errorf("read sink count: %w", err)
	}
	got := int64(binary.BigEndian.Uint64(ack[:]))
	if got != sent {
		return got, fmt.Errorf("sink received %d bytes, sent %d", got, sent)
	}
	return got, nil
}

// LatencyResult is the outcome of Latency.
type LatencyResult struct {
	Summary
	Errors   int
	FirstErr error
}

// Latency runs MessageSize-byte request/response round trips against the
// echo at addr over conns concurrent connections, each doing one round
// trip at a time, for about dur or until maxSamples round trips in all
// (0: no limit beyond dur).
func Latency(ctx context.Context, addr string, conns int, dur time.Duration, maxSamples int) LatencyResult {
	var (
		errs    firstErr
		wg      sync.WaitGroup
		mu      sync.Mutex
		samples []time.Duration
		budget  atomic.Int64
	)
	if maxSamples <= 0 {
		maxSamples = int(^uint(0) >> 2)
	}
	budget.Store(int64(maxSamples))
	end := time.Now().Add(dur)
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local, err := pingPong(ctx, addr, end, &budget)
			if err != nil {
				errs.add(err)
			}
			mu.Lock()
			samples = append(samples, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	r := LatencyResult{Summary: Summarize(samples)}
	r.Errors, r.FirstErr = errs.get()
	return r
}

func pingPong(ctx context.Context, addr string, end time.Time, budget *atomic.Int64) ([]time.Duration, error) {
	var d Dialer
	c, err := d.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	c.SetDeadline(end.Add(grace))
	req := make([]byte, MessageSize)
	rand.Read(req)
	resp := make([]byte, MessageSize)
	samples := make([]time.Duration, 0, 1024)
	for {
		t0 := time.Now()
		if !t0.Before(end) || ctx.Err() != nil || budget.Add(-1) < 0 {
			return samples, nil
		}
		if err := roundTrip(c, req, resp); err != nil {
			return samples, err
		}
		samples = append(samples, time.Since(t0))
	}
}

// roundTrip writes req and reads len(req) bytes into resp, which must echo it.
func roundTrip(c net.Conn, req, resp []byte) error {
	if _, err := c.Write(req); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if _, err := io.ReadFull(c, resp); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if !bytes.Equal(req, resp) {
		return errors.New("echo returned different bytes")
	}
	return nil
}

// ConnRateResult is the outcome of ConnRate.
type ConnRateResult struct {
	Conns    int // completed connect + round trip + close
	Errors   int
	FirstErr error
	Elapsed  time.Duration
	PerSec   float64
}

// ConnRate opens connections to the echo at addr with workers concurrent
// workers, each: connect, one MessageSize round trip, close; for about dur
// or until maxConns connections in all (0: no limit beyond dur). d may
// be nil.
func ConnRate(ctx context.Context, addr string, workers int, dur time.Duration, maxConns int, d *Dialer) ConnRateResult {
	var (
		ok     atomic.Int64
		errs   firstErr
		wg     sync.WaitGroup
		budget atomic.Int64
	)
	if maxConns <= 0 {
		maxConns = int(^uint(0) >> 2)
	}
	budget.Store(int64(maxConns))
	start := time.Now()
	end := start.Add(dur)
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := make([]byte, MessageSize)
			rand.Read(req)
			resp := make([]byte, MessageSize)
			for time.Now().Before(end) && ctx.Err() == nil && budget.Add(-1) >= 0 {
				if err := oneConn(ctx, addr, d, req, resp); err != nil {
					errs.add(err)
					// Do not spin on a dead target.
					select {
					case <-ctx.Done():
					case <-time.After(10 * time.Millisecond):
					}
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	r := ConnRateResult{Conns: int(ok.Load()), Elapsed: time.Since(start)}
	r.Errors, r.FirstErr = errs.get()
	if r.Elapsed > 0 {
		r.PerSec = float64(r.Conns) / r.Elapsed.Seconds()
	}
	return r
}

func oneConn(ctx context.Context, addr string, d *Dialer, req, resp []byte) error {
	dctx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
	c, err := d.Dial(dctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(grace))
	return roundTrip(c, req, resp)
}

// IdleSet is a set of established connections to an echo, held open.
type IdleSet struct {
	conns []net.Conn
	reqs  [][]byte
}

// OpenIdle establishes n connections to the echo at addr, at most
// parallel dials at a time, and verifies each with one round trip. It
// returns the set of connections that worked and the number that failed,
// with the first failure.
func OpenIdle(ctx context.Context, addr string, n, parallel int, d *Dialer) (*IdleSet, int, error) {
	if parallel < 1 {
		parallel = 1
	}
	s := &IdleSet{}
	var (
		mu   sync.Mutex
		errs firstErr
		wg   sync.WaitGroup
	)
	sem := make(chan struct{}, parallel)
	for i := 0; i < n && ctx.Err() == nil; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			dctx, cancel := context.WithTimeout(ctx, grace)
			defer cancel()
			c, err := d.Dial(dctx, addr)
			if err != nil {
				errs.add(fmt.Errorf("dial: %w", err))
				return
			}
			req := make([]byte, MessageSize)
			rand.Read(req)
			c.SetDeadline(time.Now().Add(grace))
			if err := roundTrip(c, req, make([]byte, MessageSize)); err != nil {
				c.Close()
				errs.add(err)
				return
			}
			c.SetDeadline(time.Time{})
			mu.Lock()
			s.conns = append(s.conns, c)
			s.reqs = append(s.reqs, req)
			mu.Unlock()
		}()
	}
	wg.Wait()
	_, first := errs.get()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return s, n - len(s.conns), first
}

// Len is the number of connections held.
func (s *IdleSet) Len() int { return len(s.conns) }

// Verify runs one round trip on every held connection, parallel at a
// time, and returns how many failed and the first failure.
func (s *IdleSet) Verify(ctx context.Context, parallel int) (int, error) {
	if parallel < 1 {
		parallel = 1
	}
	var (
		errs firstErr
		wg   sync.WaitGroup
	)
	sem := make(chan struct{}, parallel)
	for i, c := range s.conns {
		if ctx.Err() != nil {
			errs.add(ctx.Err())
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c.SetDeadline(time.Now().Add(grace))
			defer c.SetDeadline(time.Time{})
			if err := roundTrip(c, s.reqs[i], make([]byte, MessageSize)); err != nil {
				errs.add(err)
			}
		}()
	}
	wg.Wait()
	return errs.get()
}

// Close closes every held connection.
func (s *IdleSet) Close() {
	for _, c := range s.conns {
		c.Close()
	}
	s.conns, s.reqs = nil, nil
}
