package failover

import (
	"context"
	"errors"
	"os"
	"slices"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	// up: healthy, alive, usable, reachable, breaker closed.
	up := func(node string) Candidate {
		return Candidate{Endpoint: Endpoint{Node: node, Site: "a", RTT: time.Millisecond, Active: 3, Weight: 2},
			Healthy: true, Alive: true, Usable: true, Reachable: true}
	}
	local := func(node string, healthy bool) Candidate {
		return Candidate{Endpoint: Endpoint{Node: node, Local: true}, Healthy: healthy}
	}
	with := func(c Candidate, f func(*Candidate)) Candidate { f(&c); return c }
	tests := []struct {
		name string
		cs   []Candidate
		down []bool // Down of each, in input order
	}{
		{"none", nil, []bool{}},
		{"all up", []Candidate{up("a1"), up("a2")}, []bool{false, false}},
		{"unhealthy backend", []Candidate{up("a1"), with(up("a2"), func(c *Candidate) { c.Healthy = false })}, []bool{false, true}},
		{"not alive", []Candidate{up("a1"), with(up("a2"), func(c *Candidate) { c.Alive = false })}, []bool{false, true}},
		{"not usable (hold-down)", []Candidate{up("a1"), with(up("a2"), func(c *Candidate) { c.Usable = false })}, []bool{false, true}},
		{"breaker open", []Candidate{up("a1"), with(up("a2"), func(c *Candidate) { c.BreakerOpen = true })}, []bool{false, true}},
		{"not reachable alone does not demote", []Candidate{up("a1"), with(up("a2"), func(c *Candidate) { c.Reachable = false })}, []bool{false, false}},
		{"local: only health counts", []Candidate{local("me", true), up("a1")}, []bool{false, false}},
		{"local unhealthy", []Candidate{local("me", false), up("a1")}, []bool{true, false}},
		{
			// Every peer in its hold-down after a flap: those answering now
			// are preferred over the silent one.
			name: "all down: answering ones come back",
			cs: []Candidate{
				with(up("a1"), func(c *Candidate) { c.Usable = false }),
				with(up("a2"), func(c *Candidate) { c.Usable, c.Reachable = false, false }),
				with(up("a3"), func(c *Candidate) { c.BreakerOpen = true }),
			},
			down: []bool{false, true, false},
		},
		{
			name: "all down: unhealthy stays down, dead but reachable comes back",
			cs: []Candidate{
				with(up("a1"), func(c *Candidate) { c.Healthy = false }),
				with(up("a2"), func(c *Candidate) { c.Alive = false }),
				local("me", false),
			},
			down: []bool{true, false, true},
		},
		{
			name: "all down and silent: stay down",
			cs: []Candidate{
				with(up("a1"), func(c *Candidate) { c.Usable, c.Reachable = false, false }),
				with(up("a2"), func(c *Candidate) { c.Alive, c.Reachable = false, false }),
			},
			down: []bool{true, true},
		},
	}
	for _, tt := range tests {
		got := Classify(tt.cs)
		var down []bool
		for i, e := range got {
			down = append(down, e.Down)
			want := tt.cs[i].Endpoint
			want.Down = e.Down
			if e != want {
				t.Errorf("%s: endpoint %d is %+v, want %+v with Down set", tt.name, i, e, want)
			}
		}
		if !slices.Equal(down, tt.down) && len(down)+len(tt.down) > 0 {
			t.Errorf("%s: down %v, want %v", tt.name, down, tt.down)
		}
	}
}

func TestAttemptWindow(t *testing.T) {
	for _, tc := range []struct {
		ep   Endpoint
		want time.Duration
	}{
		{Endpoint{}, AttemptFloor},                           // RTT unknown
		{Endpoint{RTT: 10 * time.Millisecond}, AttemptFloor}, // 100 ms < floor
		{Endpoint{RTT: 100 * time.Millisecond}, time.Second},
		{Endpoint{RTT: time.Second}, AttemptCeiling},
		{Endpoint{RTT: time.Millisecond, Down: true}, LastResortWindow},
	} {
		if got := AttemptWindow(tc.ep); got != tc.want {
			t.Errorf("AttemptWindow(%+v) = %v, want %v", tc.ep, got, tc.want)
		}
	}
	if got := SecondRoundWindow(Endpoint{RTT: time.Millisecond}); got != LastResortWindow {
		t.Errorf("SecondRoundWindow = %v, want %v", got, LastResortWindow)
	}
}

// TestSecondRound (was node's TestOnlyTimeouts).
func TestSecondRound(t *testing.T) {
	to := Failure{Err: context.DeadlineExceeded}
	io := Failure{Err: os.ErrDeadlineExceeded}
	refused := Failure{Err: errors.New("backend refused: connection refused")}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"all timed out", &AllFailedError{Total: 2, Failures: []Failure{to, io}}, true},
		{"one refused", &AllFailedError{Total: 2, Failures: []Failure{to, refused}}, false},
		{"caller gave up", &AllFailedError{Total: 2, Failures: []Failure{to}, Err: context.Canceled}, false},
		{"no endpoints", ErrNoEndpoints, false},
	} {
		if got := SecondRound(tc.err); got != tc.want {
			t.Errorf("%s: got %v want %v", tc.name, got, tc.want)
		}
	}
}
