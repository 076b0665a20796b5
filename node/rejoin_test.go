package node

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/meshd/meshd/gossip"
)

// TestRemember steps the members file through joins, a throttled change,
// a node left alone (the file is kept) and a reload of it.
func TestRemember(t *testing.T) {
	n := newRememberNode(t)
	m := func(name, addr string, st gossip.State) gossip.Member {
		return gossip.Member{Name: name, Addr: netip.MustParseAddrPort(addr), State: st}
	}
	t0 := time.Unix(1_000_000, 0)
	names := func() []string {
		var out []string
		for _, r := range n.loadRemembered() {
			out = append(out, r.Name+"@"+r.Gossip)
		}
		return out
	}
	steps := []struct {
		at      time.Duration
		members []gossip.Member
		want    []string
	}{
		{0, nil, nil}, // nobody yet: no file
		{time.Second, []gossip.Member{m("a", "10.0.0.1:7946", gossip.StateAlive), m("b", "10.0.0.2:7946", gossip.StateLeft)},
			[]string{"a@10.0.0.1:7946"}},
		// within the throttle: not written yet
		{2 * time.Second, []gossip.Member{m("a", "10.0.0.1:7946", gossip.StateAlive), m("c", "10.0.0.3:7946", gossip.StateSuspect)},
			[]string{"a@10.0.0.1:7946"}},
		{4 * time.Second, []gossip.Member{m("a", "10.0.0.1:7946", gossip.StateAlive), m("c", "10.0.0.3:7946", gossip.StateSuspect)},
			[]string{"a@10.0.0.1:7946", "c@10.0.0.3:7946"}},
		// alone: every other member dead: the file stays as it was
		{10 * time.Second, []gossip.Member{m("a", "10.0.0.1:7946", gossip.StateDead), m("c", "10.0.0.3:7946", gossip.StateDead)},
			[]string{"a@10.0.0.1:7946", "c@10.0.0.3:7946"}},
		// our own name in the file is never used to join
		{20 * time.Second, []gossip.Member{m("me", "10.0.0.9:7946", gossip.StateAlive), m("d", "10.0.0.4:7946", gossip.StateAlive)},
			[]string{"d@10.0.0.4:7946"}},
	}
	for i, st := range steps {
		n.remember(st.members, t0.Add(st.at))
		got := names()
		if len(got) != len(st.want) {
			t.Fatalf("step %d: remembered %v; want %v", i, got, st.want)
		}
		for k := range got {
			if got[k] != st.want[k] {
				t.Fatalf("step %d: remembered %v; want %v", i, got, st.want)
			}
		}
	}
	fi, err := os.Stat(n.membersPath())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("members file: %v, %v; want mode 0600", fi, err)
	}
	os.WriteFile(n.membersPath(), []byte("{not json"), 0o600)
	if got := n.loadRemembered(); got != nil {
		t.Errorf("a corrupt file gave %v; want none", got)
	}
}

// TestRememberLargeMeshWritesOnce: with more alive members than the file
// keeps (a random sample of maxRemembered), an unchanged membership is not
// written again; a changed one is, after the throttle.
func TestRememberLargeMeshWritesOnce(t *testing.T) {
	n := newRememberNode(t)
	var members []gossip.Member
	for i := range 2 * maxRemembered {
		members = append(members, gossip.Member{Name: fmt.Sprintf("n%03d", i),
			Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 7946), State: gossip.StateAlive})
	}
	t0 := time.Unix(1_000_000, 0)
	saved := func() time.Time {
		var f membersFile
		b, err := os.ReadFile(n.membersPath())
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatal(err)
		}
		if len(f.Members) != maxRemembered {
			t.Fatalf("%d members saved; want %d", len(f.Members), maxRemembered)
		}
		return f.Saved
	}
	n.remember(members, t0)
	first := saved()
	for i := 1; i <= 5; i++ { // reconciles every 5 s, nothing changed
		n.remember(members, t0.Add(time.Duration(i)*5*time.Second))
	}
	if got := saved(); !got.Equal(first) {
		t.Fatalf("unchanged membership rewritten: saved %v, first %v", got, first)
	}
	members[3].State = gossip.StateDead
	n.remember(members, t0.Add(time.Minute))
	if got := saved(); !got.Equal(t0.Add(time.Minute).UTC()) {
		t.Fatalf("changed membership saved at %v; want %v", got, t0.Add(time.Minute).UTC())
	}
}

// newRememberNode is a node named "me", not started, with its data dir made.
func newRememberNode(t *testing.T) *Node {
	t.Helper()
	cfg := testConfig(t, t.TempDir(), "me", "s1", make([]byte, 32))
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	n, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
