package gossip

import (
	"fmt"
	"testing"
	"time"
)

// TestMemberCap: a holder of the cluster key can announce any number of
// names; a node keeps at most MaxMembers others. The ones it knows stay, new
// names are ignored with one log line per interval, and the nodes without a
// cap are not affected.
func TestMemberCap(t *testing.T) {
	a := newNode(t, "a", func(c *Config, _ *testNode) { c.MaxMembers = 2 })
	b := newNode(t, "b")
	c := newNode(t, "c")
	b.join(t, a)
	c.join(t, a)
	waitState(t, 5*time.Second, "c", StateAlive, a)
	for i := range 5 {
		x := newNode(t, fmt.Sprintf("x%d", i))
		if _, err := x.Join([]string{b.LocalAddr().String()}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "b to see all seven others", func() string {
		if n := len(b.Members()); n != 7 {
			return fmt.Sprintf("b sees %d members", n)
		}
		return ""
	})
	time.Sleep(2 * time.Second) // gossip and push/pull carry the x's to a meanwhile
	var names []string
	for _, m := range a.Members() {
		names = append(names, m.Name)
	}
	if len(names) != 2 {
		t.Fatalf("a lists %v, want only b and c (MaxMembers 2)", names)
	}
	for _, want := range []string{"b", "c"} {
		if m, ok := a.member(want); !ok || m.State != StateAlive {
			t.Fatalf("a's known member %s: %+v %v", want, m, ok)
		}
	}
	if lines := a.logs.lines("level=WARN msg=\"gossip: member cap reached"); len(lines) != 1 {
		t.Fatalf("%d cap lines, want 1 (rate-limited): %q", len(lines), lines)
	}
	if lines := a.logs.lines("level=WARN msg=\"memberlist: ignoring alive"); len(lines) != 0 {
		t.Fatalf("memberlist's own lines about the refusals are not debug: %q", lines)
	}
	if a.capped.Load() == 0 {
		t.Fatal("no refusal counted")
	}
}
