package failover

import (
	"slices"
	"testing"
	"time"
)

func TestWarmSet(t *testing.T) {
	ep := func(node, site string, down bool) Endpoint { return Endpoint{Node: node, Site: site, Down: down} }
	local := func(node, site string) Endpoint { return Endpoint{Node: node, Site: site, Local: true} }
	tests := []struct {
		name  string
		eps   []Endpoint
		sites []string
		limit int
		want  []string
	}{
		{name: "no endpoints", want: nil},
		{
			name:  "two preferred sites of three",
			eps:   []Endpoint{ep("a1", "a", false), ep("b1", "b", false), ep("c1", "c", false)},
			sites: []string{"a", "b", "c"},
			want:  []string{"a1", "b1"},
		},
		{
			name:  "preference order, not name order",
			eps:   []Endpoint{ep("a1", "a", false), ep("b1", "b", false), ep("c1", "c", false)},
			sites: []string{"c", "a"},
			want:  []string{"a1", "c1"},
		},
		{
			name:  "a site with no healthy endpoint is skipped",
			eps:   []Endpoint{ep("a1", "a", true), ep("a2", "a", true), ep("b1", "b", false), ep("c1", "c", false)},
			sites: []string{"a", "b", "c"},
			want:  []string{"b1", "c1"},
		},
		{
			name:  "unhealthy endpoints of a warm site stay out",
			eps:   []Endpoint{ep("a1", "a", false), ep("a2", "a", true), ep("b1", "b", false)},
			sites: []string{"a", "b"},
			want:  []string{"a1", "b1"},
		},
		{
			name:  "a local endpoint counts for its site but needs no session",
			eps:   []Endpoint{local("me", "a"), ep("a2", "a", false), ep("b1", "b", false), ep("c1", "c", false)},
			sites: []string{"a", "b", "c"},
			want:  []string{"a2", "b1"},
		},
		{
			name:  "only a local endpoint in the first site",
			eps:   []Endpoint{local("me", "a"), ep("b1", "b", false), ep("c1", "c", false)},
			sites: []string{"a", "b", "c"},
			want:  []string{"b1"},
		},
		{
			name: "cap alternates between the two sites",
			eps: []Endpoint{ep("a1", "a", false), ep("a2", "a", false), ep("a3", "a", false), ep("a4", "a", false),
				ep("b1", "b", false), ep("b2", "b", false), ep("b3", "b", false), ep("b4", "b", false)},
			sites: []string{"a", "b"},
			limit: 4,
			want:  nil, // checked below: two of each
		},
		{
			name:  "cap with a small second site fills from the first",
			eps:   []Endpoint{ep("a1", "a", false), ep("a2", "a", false), ep("a3", "a", false), ep("b1", "b", false)},
			sites: []string{"a", "b"},
			limit: 3,
			want:  nil, // checked below: b1 and two of a
		},
		{
			name: "unlisted sites nearest first",
			eps:  []Endpoint{{Node: "x1", Site: "x", RTT: 30 * time.Millisecond}, {Node: "y1", Site: "y", RTT: 10 * time.Millisecond}, {Node: "z1", Site: "z", RTT: 20 * time.Millisecond}},
			want: []string{"y1", "z1"},
		},
		{
			name: "unlisted sites of unknown RTT by name",
			eps:  []Endpoint{ep("z1", "z", false), ep("x1", "x", false), ep("y1", "y", false)},
			want: []string{"x1", "y1"},
		},
		{
			name:  "all down: nothing warm",
			eps:   []Endpoint{ep("a1", "a", true), ep("b1", "b", true)},
			sites: []string{"a", "b"},
			want:  nil,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.eps)
			got := WarmSet(tc.eps, tc.sites, tc.limit, "importer-1")
			if !slices.Equal(in, tc.eps) {
				t.Fatalf("WarmSet modified its input")
			}
			switch tc.name {
			case "cap alternates between the two sites":
				if len(got) != 4 || countSite(got, 'a') != 2 || countSite(got, 'b') != 2 {
					t.Fatalf("got %v, want two of each site", got)
				}
				return
			case "cap with a small second site fills from the first":
				if len(got) != 3 || !slices.Contains(got, "b1") || countSite(got, 'a') != 2 {
					t.Fatalf("got %v, want b1 and two of a", got)
				}
				return
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func countSite(names []string, site byte) int {
	n := 0
	for _, s := range names {
		if s[0] == site {
			n++
		}
	}
	return n
}

// TestWarmSetSpreads checks that importers with different names warm
// different endpoints of a large site, and one importer always the same.
func TestWarmSetSpreads(t *testing.T) {
	var eps []Endpoint
	for _, s := range []string{"a", "b"} {
		for i := range 20 {
			eps = append(eps, Endpoint{Node: s + string(rune('A'+i)), Site: s})
		}
	}
	seen := map[string]bool{}
	for i := range 20 {
		seed := "imp-" + string(rune('a'+i))
		ws := WarmSet(eps, []string{"a", "b"}, 4, seed)
		if again := WarmSet(eps, []string{"a", "b"}, 4, seed); !slices.Equal(ws, again) {
			t.Fatalf("not deterministic: %v then %v", ws, again)
		}
		if len(ws) != 4 {
			t.Fatalf("seed %s: %v, want 4", seed, ws)
		}
		for _, n := range ws {
			seen[n] = true
		}
	}
	if len(seen) < 20 {
		t.Fatalf("20 importers warmed only %d distinct endpoints of 40", len(seen))
	}
}

func TestIdleSessions(t *testing.T) {
	type step struct {
		at    time.Duration
		op    string // "busy", "idle", "forget"
		key   string
		close bool
	}
	tests := []struct {
		name    string
		timeout time.Duration
		steps   []step
	}{
		{
			name: "closes after the timeout of continuous idleness", timeout: 10 * time.Second,
			steps: []step{
				{at: 0, op: "idle"},
				{at: 5 * time.Second, op: "idle"},
				{at: 9999 * time.Millisecond, op: "idle"},
				{at: 10 * time.Second, op: "idle", close: true},
				{at: 11 * time.Second, op: "idle", close: true},
			},
		},
		{
			name: "busy restarts the idle period", timeout: 10 * time.Second,
			steps: []step{
				{at: 0, op: "idle"},
				{at: 8 * time.Second, op: "busy"},
				{at: 9 * time.Second, op: "idle"},
				{at: 18 * time.Second, op: "idle"},
				{at: 19 * time.Second, op: "idle", close: true},
			},
		},
		{
			name: "busy never closes", timeout: time.Second,
			steps: []step{
				{at: 0, op: "busy"},
				{at: time.Hour, op: "busy"},
			},
		},
		{
			name: "forget restarts the count", timeout: 10 * time.Second,
			steps: []step{
				{at: 0, op: "idle"},
				{at: 9 * time.Second, op: "forget"},
				{at: 10 * time.Second, op: "idle"},
				{at: 19 * time.Second, op: "idle"},
				{at: 20 * time.Second, op: "idle", close: true},
			},
		},
		{
			name: "keys are independent", timeout: 10 * time.Second,
			steps: []step{
				{at: 0, op: "idle", key: "a"},
				{at: 5 * time.Second, op: "idle", key: "b"},
				{at: 10 * time.Second, op: "idle", key: "a", close: true},
				{at: 10 * time.Second, op: "idle", key: "b"},
				{at: 15 * time.Second, op: "idle", key: "b", close: true},
			},
		},
		{
			name: "clock going backwards counts as no time", timeout: 10 * time.Second,
			steps: []step{
				{at: 10 * time.Second, op: "idle"},
				{at: 0, op: "idle"},
				{at: 19 * time.Second, op: "idle"},
				{at: 20 * time.Second, op: "idle", close: true},
			},
		},
		{
			name: "zero timeout means the default", timeout: 0,
			steps: []step{
				{at: 0, op: "idle"},
				{at: DefaultIdleTimeout - time.Millisecond, op: "idle"},
				{at: DefaultIdleTimeout, op: "idle", close: true},
			},
		},
	}
	base := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewIdleSessions(tc.timeout)
			for i, st := range tc.steps {
				key := st.key
				if key == "" {
					key = "p"
				}
				got := false
				switch st.op {
				case "busy":
					got = s.Observe(key, true, base.Add(st.at))
				case "idle":
					got = s.Observe(key, false, base.Add(st.at))
				case "forget":
					s.Forget(key)
				}
				if got != st.close {
					t.Fatalf("step %d (%v %s %s): close = %v, want %v", i, st.at, st.op, key, got, st.close)
				}
			}
		})
	}
}
