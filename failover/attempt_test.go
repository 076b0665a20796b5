package failover

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

var (
	errRefused = errors.New("connection refused")
	errReset   = errors.New("stream reset")
)

func TestAttemptSteps(t *testing.T) {
	cands := []Endpoint{ep("a", "s"), ep("b", "s"), ep("c", "s")}
	tests := []struct {
		name     string
		results  map[string]error // per node; missing means success
		wantNode string           // "" when all fail
		wantErr  string
		wantCall string
	}{
		{name: "first succeeds", wantNode: "a", wantCall: "a"},
		{
			name:     "first fails, second used",
			results:  map[string]error{"a": errRefused},
			wantNode: "b",
			wantCall: "a,b",
		},
		{
			name:     "only last works",
			results:  map[string]error{"a": errRefused, "b": errReset},
			wantNode: "c",
			wantCall: "a,b,c",
		},
		{
			name:     "all fail",
			results:  map[string]error{"a": errRefused, "b": errReset, "c": errRefused},
			wantErr:  "all 3 endpoints failed: a: connection refused; b: stream reset; c: connection refused",
			wantCall: "a,b,c",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls []string
			v, got, err := Attempt(context.Background(), cands, nil, func(ctx context.Context, e Endpoint) (string, error) {
				calls = append(calls, e.Node)
				if err := tt.results[e.Node]; err != nil {
					return "", err
				}
				return "conn-" + e.Node, nil
			})
			if c := strings.Join(calls, ","); c != tt.wantCall {
				t.Errorf("calls %s, want %s", c, tt.wantCall)
			}
			if tt.wantErr == "" {
				if err != nil || got.Node != tt.wantNode || v != "conn-"+tt.wantNode {
					t.Fatalf("Attempt = %q, %q, %v; want conn-%s from %s", v, got.Node, err, tt.wantNode, tt.wantNode)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("err = %v, want %s", err, tt.wantErr)
			}
			if v != "" || got.Node != "" {
				t.Errorf("failure returned %q, %q", v, got.Node)
			}
			var all *AllFailedError
			if !errors.As(err, &all) || all.Total != 3 || len(all.Failures) != 3 || all.Err != nil {
				t.Fatalf("err = %#v, want *AllFailedError with 3 failures", err)
			}
			if !errors.Is(err, errRefused) || !errors.Is(err, errReset) {
				t.Error("attempt errors not reachable via errors.Is")
			}
		})
	}
}

func TestAttemptNoCandidates(t *testing.T) {
	called := false
	_, _, err := Attempt(context.Background(), nil, nil, func(context.Context, Endpoint) (int, error) {
		called = true
		return 0, nil
	})
	if !errors.Is(err, ErrNoEndpoints) || called {
		t.Fatalf("err = %v (called %v), want ErrNoEndpoints", err, called)
	}
	if !strings.Contains(err.Error(), "no healthy endpoint") {
		t.Errorf("err = %q", err)
	}
}

// blockUntilDone is a dial that never answers: it returns when its ctx ends.
func blockUntilDone(ctx context.Context, _ Endpoint) (int, error) {
	<-ctx.Done()
	return 0, ctx.Err()
}

func TestAttemptPerAttemptTimeout(t *testing.T) {
	cands := []Endpoint{ep("slow", "s").rtt(1), ep("fast", "s").rtt(2)}
	timeouts := map[string]time.Duration{"slow": 2 * time.Millisecond, "fast": time.Hour}
	var deadlines []time.Duration
	v, got, err := Attempt(context.Background(), cands,
		func(e Endpoint) time.Duration { return timeouts[e.Node] },
		func(ctx context.Context, e Endpoint) (int, error) {
			dl, ok := ctx.Deadline()
			if !ok {
				t.Errorf("%s: attempt ctx has no deadline", e.Node)
			}
			deadlines = append(deadlines, time.Until(dl))
			if e.Node == "slow" {
				return blockUntilDone(ctx, e)
			}
			return 42, nil
		})
	if err != nil || got.Node != "fast" || v != 42 {
		t.Fatalf("Attempt = %d, %q, %v; want 42 from fast", v, got.Node, err)
	}
	if len(deadlines) != 2 || deadlines[0] > 2*time.Millisecond || deadlines[1] < time.Hour-time.Minute {
		t.Errorf("deadlines seen %v, want <=2ms then ~1h", deadlines)
	}
}

func TestAttemptAllTimeOut(t *testing.T) {
	cands := []Endpoint{ep("a", "s"), ep("b", "s")}
	_, _, err := Attempt(context.Background(), cands,
		func(Endpoint) time.Duration { return time.Millisecond }, blockUntilDone)
	var all *AllFailedError
	if !errors.As(err, &all) || len(all.Failures) != 2 || all.Err != nil {
		t.Fatalf("err = %v, want 2 failures", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want DeadlineExceeded inside", err)
	}
	want := "all 2 endpoints failed: a: no answer within 1ms: context deadline exceeded; b: no answer within 1ms: context deadline exceeded"
	if err.Error() != want {
		t.Errorf("err = %q\nwant  %q", err, want)
	}
}

func TestAttemptNoTimeout(t *testing.T) {
	for name, timeout := range map[string]func(Endpoint) time.Duration{
		"nil":  nil,
		"zero": func(Endpoint) time.Duration { return 0 },
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := Attempt(context.Background(), []Endpoint{ep("a", "s")}, timeout,
				func(ctx context.Context, _ Endpoint) (int, error) {
					if _, ok := ctx.Deadline(); ok {
						t.Error("unexpected deadline")
					}
					return 1, nil
				})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestAttemptCancelStopsLoop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cands := []Endpoint{ep("a", "s"), ep("b", "s"), ep("c", "s")}
	var calls []string
	_, _, err := Attempt(ctx, cands, nil, func(actx context.Context, e Endpoint) (int, error) {
		calls = append(calls, e.Node)
		cancel() // the client went away while dialling a
		return blockUntilDone(actx, e)
	})
	if len(calls) != 1 {
		t.Errorf("calls %v, want only a", calls)
	}
	var all *AllFailedError
	if !errors.As(err, &all) || all.Total != 3 || len(all.Failures) != 1 || !errors.Is(all.Err, context.Canceled) {
		t.Fatalf("err = %#v", err)
	}
	if want := "tried 1 of 3 endpoints before context canceled: a: context canceled"; err.Error() != want {
		t.Errorf("err = %q, want %q", err, want)
	}
}

func TestAttemptContextAlreadyDone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err := Attempt(ctx, []Endpoint{ep("a", "s")}, nil, func(context.Context, Endpoint) (int, error) {
		t.Error("fn called after ctx ended")
		return 0, nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if want := "tried 0 of 1 endpoints before context canceled"; err.Error() != want {
		t.Errorf("err = %q, want %q", err, want)
	}
}

func TestAttemptCancelsAttemptContext(t *testing.T) {
	var kept context.Context
	_, _, err := Attempt(context.Background(), []Endpoint{ep("a", "s")}, nil,
		func(ctx context.Context, _ Endpoint) (int, error) {
			kept = ctx
			return 1, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if kept.Err() == nil {
		t.Error("attempt ctx still live after Attempt returned")
	}
}

func TestAttemptTimeout(t *testing.T) {
	const ms = time.Millisecond
	tests := []struct {
		rtt, floor time.Duration
		mult       int
		want       time.Duration
	}{
		{rtt: 0, floor: time.Second, mult: 8, want: time.Second},
		{rtt: -5 * ms, floor: time.Second, mult: 8, want: time.Second},
		{rtt: 10 * ms, floor: time.Second, mult: 8, want: time.Second},
		{rtt: 200 * ms, floor: time.Second, mult: 8, want: 1600 * ms},
		{rtt: 200 * ms, floor: 0, mult: 0, want: 200 * ms},
		{rtt: 200 * ms, floor: 0, mult: -3, want: 200 * ms},
		{rtt: math.MaxInt64 / 2, floor: time.Second, mult: 8, want: math.MaxInt64},
	}
	for _, tt := range tests {
		if got := AttemptTimeout(tt.rtt, tt.floor, tt.mult); got != tt.want {
			t.Errorf("AttemptTimeout(%v, %v, %d) = %v, want %v", tt.rtt, tt.floor, tt.mult, got, tt.want)
		}
	}
}

func TestParseBalance(t *testing.T) {
	for in, want := range map[string]Balance{"": BalanceLeastConn, "least_conn": BalanceLeastConn, "round_robin": BalanceRoundRobin} {
		if got, err := ParseBalance(in); err != nil || got != want {
			t.Errorf("ParseBalance(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseBalance("random"); err == nil {
		t.Error("ParseBalance(random) succeeded")
	}
}
