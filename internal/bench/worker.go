package bench

// Bench workers: the measurement clients and the target servers of the
// bench can run in separate processes (`meshd bench-worker`), so that a
// measurement can sit in another network namespace, and so that many idle
// connections are spread over processes that each stay under the
// per-process file-descriptor limit. The parent talks to a worker over
// its stdin/stdout, one JSON object per line: a WorkerRequest in, exactly
// one WorkerResponse out, one request at a time. A worker exits when its
// stdin closes (the parent is gone or done with it).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshd/meshd/internal/echo"
)

// Worker operations.
const (
	OpServe      = "serve"       // start servers: Sink, Echo, LeanEcho listen addresses ("" for none)
	OpThroughput = "throughput"  // Throughput(Addr, Streams, Duration)
	OpLatency    = "latency"     // Latency(Addr, Conns, Duration, Max)
	OpConnRate   = "connrate"    // ConnRate(Addr, Conns workers, Duration, Max, Spread)
	OpPing       = "ping"        // one connection with one round trip to the echo at Addr
	OpIdleOpen   = "idle_open"   // OpenIdle(Addr, N, Parallel, Spread), added to the held set
	OpIdleVerify = "idle_verify" // a round trip on every held connection, Parallel at a time
	OpIdleClose  = "idle_close"  // close every held connection
	OpStats      = "stats"       // Active/Total of the LeanEcho, Held
)

// WorkerRequest is one request to a worker.
type WorkerRequest struct {
	ID       uint64 `json:"id"` // echoed in the response (set by Worker.Call)
	Op       string `json:"op"`
	Addr     string `json:"addr,omitempty"`
	Sink     string `json:"sink,omitempty"`
	Echo     string `json:"echo,omitempty"`
	LeanEcho string `json:"lean_echo,omitempty"`
	Streams  int    `json:"streams,omitempty"`
	Conns    int    `json:"conns,omitempty"`
	Duration int64  `json:"duration_ns,omitempty"`
	Max      int    `json:"max,omitempty"`
	N        int    `json:"n,omitempty"`
	Parallel int    `json:"parallel,omitempty"`
	Spread   bool   `json:"spread,omitempty"`
}

// WorkerResponse is the answer to one request. Error is set when the
// request itself could not be carried out; measurement errors are counted
// in Errors with the first in FirstErr.
type WorkerResponse struct {
	ID       uint64  `json:"id"`
	Error    string  `json:"error,omitempty"`
	Sink     string  `json:"sink,omitempty"`
	Echo     string  `json:"echo,omitempty"`
	LeanEcho string  `json:"lean_echo,omitempty"`
	Bytes    int64   `json:"bytes,omitempty"`
	Elapsed  int64   `json:"elapsed_ns,omitempty"`
	MBps     float64 `json:"mbps,omitempty"`
	Count    int     `json:"count,omitempty"`
	P50      int64   `json:"p50_ns,omitempty"`
	P99      int64   `json:"p99_ns,omitempty"`
	Max      int64   `json:"max_ns,omitempty"`
	Conns    int     `json:"conns,omitempty"`
	PerSec   float64 `json:"per_sec,omitempty"`
	Errors   int     `json:"errors,omitempty"`
	FirstErr string  `json:"first_err,omitempty"`
	Held     int     `json:"held,omitempty"`
	Active   int64   `json:"active,omitempty"`
	Total    int64   `json:"total,omitempty"`
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func stringErr(s string) error {
	if s == "" {
		return nil
	}
	return errors.New(s)
}

// Throughput converts an OpThroughput response.
func (r WorkerResponse) Throughput() ThroughputResult {
	return ThroughputResult{Bytes: r.Bytes, Elapsed: time.Duration(r.Elapsed), MBps: r.MBps,
		Errors: r.Errors, FirstErr: stringErr(r.FirstErr)}
}

// Latency converts an OpLatency response.
func (r WorkerResponse) Latency() LatencyResult {
	return LatencyResult{Summary: Summary{Count: r.Count, P50: time.Duration(r.P50), P99: time.Duration(r.P99),
		Max: time.Duration(r.Max)}, Errors: r.Errors, FirstErr: stringErr(r.FirstErr)}
}

// ConnRate converts an OpConnRate response.
func (r WorkerResponse) ConnRate() ConnRateResult {
	return ConnRateResult{Conns: r.Conns, Errors: r.Errors, FirstErr: stringErr(r.FirstErr),
		Elapsed: time.Duration(r.Elapsed), PerSec: r.PerSec}
}

// workerState is what a worker process holds between requests.
type workerState struct {
	sink *Sink
	echo *echo.Server
	lean *LeanEcho
	idle []*IdleSet
}

func (s *workerState) close() {
	for _, set := range s.idle {
		set.Close()
	}
	s.idle = nil
	if s.sink != nil {
		s.sink.Close()
	}
	if s.echo != nil {
		s.echo.Close()
	}
	if s.lean != nil {
		s.lean.Close()
	}
}

func (s *workerState) held() int {
	n := 0
	for _, set := range s.idle {
		n += set.Len()
	}
	return n
}

// ServeWorker is the worker process's loop: it answers the requests read
// from in on out until in ends or ctx is done (a request in progress is
// cancelled), then closes everything it holds. It returns nil when in
// ended cleanly.
func ServeWorker(ctx context.Context, in io.Reader, out io.Writer) error {
	// reqCtx ends when in ends too, so that a request in progress stops
	// when the parent goes away.
	reqCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	st := &workerState{}
	defer st.close()

	type line struct {
		b   []byte
		err error
	}
	lines := make(chan line)
	go func() { // owned: ends when in ends (the parent closes it or dies)
		defer cancel()
		defer close(lines)
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			select {
			case lines <- line{b: bytes.Clone(sc.Bytes())}:
			case <-reqCtx.Done():
				return
			}
		}
		if err := sc.Err(); err != nil {
			select {
			case lines <- line{err: err}:
			case <-reqCtx.Done():
			}
		}
	}()
	enc := json.NewEncoder(out)
	for {
		var l line
		var ok bool
		select {
		case <-ctx.Done():
			return ctx.Err()
		case l, ok = <-lines:
		}
		if !ok {
			return nil
		}
		if l.err != nil {
			return fmt.Errorf("bench worker: read request: %w", l.err)
		}
		if len(bytes.TrimSpace(l.b)) == 0 {
			continue
		}
		var req WorkerRequest
		var resp WorkerResponse
		if err := json.Unmarshal(l.b, &req); err != nil {
			resp.Error = "bad request: " + err.Error()
		} else {
			resp = st.handle(reqCtx, req)
			resp.ID = req.ID
		}
		if err := enc.Encode(resp); err != nil {
			return fmt.Errorf("bench worker: write response: %w", err)
		}
	}
}

func (s *workerState) handle(ctx context.Context, req WorkerRequest) WorkerResponse {
	var r WorkerResponse
	d := time.Duration(req.Duration)
	var dialer *Dialer
	if req.Spread {
		dialer = &Dialer{Spread: true}
	}
	switch req.Op {
	case OpServe:
		var err error
		if req.Sink != "" && s.sink == nil {
			if s.sink, err = ListenSink(req.Sink); err != nil {
				return WorkerResponse{Error: "sink: " + err.Error()}
			}
		}
		if req.Echo != "" && s.echo == nil {
			if s.echo, err = echo.Listen(req.Echo); err != nil {
				return WorkerResponse{Error: "echo: " + err.Error()}
			}
		}
		if req.LeanEcho != "" && s.lean == nil {
			if s.lean, err = ListenLeanEcho(req.LeanEcho); err != nil {
				return WorkerResponse{Error: "lean echo: " + err.Error()}
			}
		}
		if s.sink != nil {
			r.Sink = s.sink.Addr()
		}
		if s.echo != nil {
			r.Echo = s.echo.Addr()
		}
		if s.lean != nil {
			r.LeanEcho = s.lean.Addr()
		}
	case OpThroughput:
		t := Throughput(ctx, req.Addr, req.Streams, d)
		r.Bytes, r.Elapsed, r.MBps, r.Errors, r.FirstErr = t.Bytes, int64(t.Elapsed), t.MBps, t.Errors, errString(t.FirstErr)
	case OpLatency:
		l := Latency(ctx, req.Addr, req.Conns, d, req.Max)
		r.Count, r.P50, r.P99, r.Max = l.Count, int64(l.P50), int64(l.P99), int64(l.Max.Nanoseconds())
		r.Errors, r.FirstErr = l.Errors, errString(l.FirstErr)
	case OpConnRate:
		c := ConnRate(ctx, req.Addr, req.Conns, d, req.Max, dialer)
		r.Conns, r.Elapsed, r.PerSec, r.Errors, r.FirstErr = c.Conns, int64(c.Elapsed), c.PerSec, c.Errors, errString(c.FirstErr)
	case OpPing:
		set, n, err := OpenIdle(ctx, req.Addr, 1, 1, dialer)
		set.Close()
		if n > 0 {
			if err == nil {
				err = errors.New("failed")
			}
			r.Errors, r.FirstErr = n, err.Error()
		}
	case OpIdleOpen:
		set, n, err := OpenIdle(ctx, req.Addr, req.N, req.Parallel, dialer)
		s.idle = append(s.idle, set)
		r.Conns, r.Errors, r.FirstErr, r.Held = set.Len(), n, errString(err), s.held()
	case OpIdleVerify:
		for _, set := range s.idle {
			n, err := set.Verify(ctx, req.Parallel)
			r.Errors += n
			if r.FirstErr == "" {
				r.FirstErr = errString(err)
			}
		}
		r.Held = s.held()
	case OpIdleClose:
		for _, set := range s.idle {
			set.Close()
		}
		s.idle = nil
	case OpStats:
		r.Held = s.held()
		if s.lean != nil {
			r.Active, r.Total = s.lean.Active(), s.lean.Total()
		}
	default:
		r.Error = fmt.Sprintf("unknown op %q", req.Op)
	}
	return r
}

// Worker is the parent's handle of one worker process.
type Worker struct {
	Name    string
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	lines   chan []byte
	done    chan struct{}
	waitErr error
	stderr  *Tail
	mu      sync.Mutex // one request at a time
	lastID  uint64     // under mu
	killed  atomic.Bool
}

// StartWorker starts argv (e.g. this binary with "bench-worker", possibly
// behind `ip netns exec NS`) as a worker. The process gets SIGKILL should
// the parent die (Pdeathsig) and its own process group, so a terminal's
// Ctrl-C reaches only the parent, which closes its workers. Its stderr
// goes to logTo when non-nil, else into a tail kept for error messages.
func StartWorker(name string, argv []string, logTo io.Writer) (*Worker, error) {
	w := &Worker{Name: name, lines: make(chan []byte, 1), done: make(chan struct{}), stderr: NewTail(8 << 10)}
	w.cmd = exec.Command(argv[0], argv[1:]...)
	w.cmd.SysProcAttr = childAttr()
	if logTo != nil {
		w.cmd.Stderr = io.MultiWriter(logTo, w.stderr)
	} else {
		w.cmd.Stderr = w.stderr
	}
	var err error
	if w.stdin, err = w.cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("worker %s: %w", name, err)
	}
	stdout, err := w.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("worker %s: %w", name, err)
	}
	if err := w.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start worker %s: %w", name, err)
	}
	go func() { // owned: ends when the process's stdout closes (it exited)
		defer close(w.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			w.lines <- bytes.Clone(sc.Bytes())
		}
	}()
	return w, nil
}

// Pid is the worker's process id.
func (w *Worker) Pid() int { return w.cmd.Process.Pid }

// Call sends req and waits for the response, at most timeout (and not
// past ctx). A worker that does not answer within timeout is killed. When
// ctx ends first, the worker finishes the request (its requests are all
// bounded) and a later Call skips that late response.
func (w *Worker) Call(ctx context.Context, req WorkerRequest, timeout time.Duration) (WorkerResponse, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lastID++
	req.ID = w.lastID
	var resp WorkerResponse
	b, err := json.Marshal(req)
	if err != nil {
		return resp, err
	}
	if _, err := w.stdin.Write(append(b, '\n')); err != nil {
		return resp, fmt.Errorf("worker %s: send %s: %w (%s)", w.Name, req.Op, err, w.stderr.String())
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case l, ok := <-w.lines:
			if !ok {
				return resp, fmt.Errorf("worker %s exited during %s: %s", w.Name, req.Op, w.stderr.String())
			}
			resp = WorkerResponse{}
			if err := json.Unmarshal(l, &resp); err != nil {
				return resp, fmt.Errorf("worker %s: bad response to %s: %w", w.Name, req.Op, err)
			}
			if resp.ID != req.ID {
				continue // the late answer to an abandoned request
			}
			if resp.Error != "" {
				return resp, fmt.Errorf("worker %s: %s: %s", w.Name, req.Op, resp.Error)
			}
			return resp, nil
		case <-ctx.Done():
			return resp, ctx.Err()
		case <-t.C:
			w.kill()
			return resp, fmt.Errorf("worker %s: no answer to %s within %v", w.Name, req.Op, timeout)
		}
	}
}

func (w *Worker) kill() {
	w.killed.Store(true)
	if w.cmd.Process != nil {
		w.cmd.Process.Kill()
	}
}

// Close closes the worker's stdin (it closes what it holds and exits),
// waits up to 10s and kills it if it takes longer. It returns the
// stderr tail if the worker failed.
func (w *Worker) Close() error {
	w.stdin.Close()
	waited := make(chan error, 1)
	go func() {
		for range w.lines { // stdout must be read to its end before Wait
		}
		waited <- w.cmd.Wait()
	}()
	var err error
	select {
	case err = <-waited:
	case <-time.After(10 * time.Second):
		w.kill()
		err = <-waited
	}
	if err != nil && w.killed.Load() {
		return nil // killed by us after a failed call, which reported it
	}
	if err != nil {
		return fmt.Errorf("worker %s: %v: %s", w.Name, err, w.stderr.String())
	}
	return nil
}

// Tail keeps the last bytes written to it, for error messages.
type Tail struct {
	mu  sync.Mutex
	max int
	b   []byte
}

// NewTail returns a Tail that keeps the last max bytes.
func NewTail(max int) *Tail { return &Tail{max: max} }

// Write appends p, dropping what is older than the last max bytes.
func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append([]byte(nil), t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

// String is the kept text, trimmed.
func (t *Tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}
