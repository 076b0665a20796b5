package failover

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

func TestRelayChooser(t *testing.T) {
	t0 := time.Unix(1000, 0)
	r := func(name string) Relay { return Relay{Name: name, Addr: netip.MustParseAddrPort("10.0.0.1:7000")} }
	all := []Relay{r("r3"), r("r1"), r("r2")}
	const (
		candidates = iota // want: the names Candidates returns at at
		dialFailed        // name failed at at
		lost              // name lost at at
		connected
		wait // want: the wait
	)
	steps := []struct {
		op    int
		at    time.Duration
		name  string
		names []string
		wait  time.Duration
	}{
		{op: candidates, names: []string{"r1", "r2", "r3"}}, // by name, for every node
		{op: dialFailed, name: "r1"},
		{op: dialFailed, name: "r2"},
		{op: candidates, at: time.Second, names: []string{"r3"}},
		{op: dialFailed, name: "r3"},
		{op: candidates, at: time.Second, names: []string{}},
		{op: wait, wait: 200 * time.Millisecond}, // backoff doubles while none answers
		{op: wait, wait: 400 * time.Millisecond},
		{op: wait, wait: 800 * time.Millisecond},
		{op: wait, wait: 1600 * time.Millisecond},
		{op: wait, wait: 3200 * time.Millisecond},
		{op: wait, wait: 5 * time.Second}, // capped
		{op: wait, wait: 5 * time.Second},
		{op: candidates, at: 5*time.Second - 1, names: []string{}},               // skipped for 5 s
		{op: candidates, at: 5 * time.Second, names: []string{"r1", "r2", "r3"}}, // then tried again
		{op: connected},
		{op: wait, wait: 200 * time.Millisecond}, // a connection resets the backoff
		{op: lost, at: 6 * time.Second, name: "r1"},
		{op: candidates, at: 6 * time.Second, names: []string{"r2", "r3"}}, // moves on to the next
		{op: candidates, at: 6*time.Second + 800*time.Millisecond, names: []string{"r1", "r2", "r3"}},
	}
	var c RelayChooser
	for i, s := range steps {
		now := t0.Add(s.at)
		switch s.op {
		case candidates:
			in := slices.Clone(all)
			var got []string
			for _, x := range c.Candidates(in, now) {
				got = append(got, x.Name)
			}
			if !slices.Equal(got, s.names) && !(len(got) == 0 && len(s.names) == 0) {
				t.Fatalf("step %d: candidates at +%v: %v, want %v", i, s.at, got, s.names)
			}
			if !slices.Equal(in, all) {
				t.Fatalf("step %d: Candidates modified its input: %v", i, in)
			}
		case dialFailed:
			c.DialFailed(s.name, now)
		case lost:
			c.Lost(s.name, now)
		case connected:
			c.Connected()
		case wait:
			if got := c.Wait(); got != s.wait {
				t.Fatalf("step %d: wait %v, want %v", i, got, s.wait)
			}
		}
	}
	if len(c.skip) != 0 {
		t.Errorf("skip list holds %d relays after every skip expired, want 0 (pruned)", len(c.skip))
	}
}

func TestRelayChooserBounds(t *testing.T) {
	c := RelayChooser{Min: time.Second, Max: 3 * time.Second}
	var got []time.Duration
	for range 4 {
		got = append(got, c.Wait())
	}
	if want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second}; !slices.Equal(got, want) {
		t.Errorf("waits %v, want %v", got, want)
	}
	t0 := time.Unix(0, 0)
	c.Lost("r", t0)
	if n := len(c.Candidates([]Relay{{Name: "r"}}, t0.Add(4*time.Second-1))); n != 0 {
		t.Errorf("a lost relay is tried again before 4×Min")
	}
	c.DialFailed("r", t0)
	if n := len(c.Candidates([]Relay{{Name: "r"}}, t0.Add(3*time.Second))); n != 1 {
		t.Errorf("a relay that failed to dial is still skipped after Max")
	}
}
