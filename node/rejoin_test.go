package node

import (
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/meshd/meshd/gossip"
)

// TestRemember steps the members file through joins, a throttled change,
// a node left alone (the file is kept) and a reload of it.
func TestRemember(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "me", "s1", make([]byte, 32))
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	n, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
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
