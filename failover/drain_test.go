package failover

import (
	"testing"
	"time"
)

func TestDrainOver(t *testing.T) {
	const grace = 10 * time.Second
	live := func() bool { return true }
	alone := func() bool { return false }
	for _, tc := range []struct {
		name string
		d    Drain
		want bool
	}{
		{"active connections within the grace", Drain{Active: 2, Elapsed: time.Second, Grace: grace, LivePeers: alone}, false},
		{"grace over with connections open", Drain{Active: 2, Elapsed: grace, Grace: grace, LivePeers: live}, true},
		{"idle, nothing withdrawn", Drain{Elapsed: 0, Grace: grace, LivePeers: live}, true},
		{"idle, withdrawal still spreading", Drain{Elapsed: DrainPropagation - 1, Grace: grace, Withdrew: true, LivePeers: live}, false},
		{"idle, withdrawal spread", Drain{Elapsed: DrainPropagation, Grace: grace, Withdrew: true, LivePeers: live}, true},
		{"idle, withdrawn, nobody left to tell", Drain{Elapsed: 0, Grace: grace, Withdrew: true, LivePeers: alone}, true},
		{"zero grace", Drain{Active: 1, Grace: 0, Withdrew: true, LivePeers: live}, true},
	} {
		if got := tc.d.Over(); got != tc.want {
			t.Errorf("%s: Over() = %v, want %v", tc.name, got, tc.want)
		}
	}
	// LivePeers is asked only when the answer matters.
	asked := false
	Drain{Active: 1, Grace: grace, Withdrew: true, LivePeers: func() bool { asked = true; return true }}.Over()
	if asked {
		t.Error("LivePeers asked while connections are open")
	}
}
