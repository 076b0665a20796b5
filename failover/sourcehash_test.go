package failover

import (
	"net/netip"
	"testing"
)

func key(ip string) uint64 { return SourceKey(netip.MustParseAddr(ip).As16()) }

// TestOrderSourceHash steps a site of three endpoints through failures and
// recoveries and checks that each client IP keeps its endpoint while it is
// healthy, moves (to the same place every time) when it is down, comes
// back when it recovers, and that clients of other endpoints never move.
func TestOrderSourceHash(t *testing.T) {
	clients := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "192.168.7.40", "2001:db8::9", "172.16.0.5", "10.9.8.7", "10.0.0.250"}
	pick := func(down map[string]bool, ip string) string {
		var eps []Endpoint
		for _, n := range []string{"a", "b", "c"} {
			e := ep(n, "s1")
			e.Active = len(n) * 7 // ignored by source_hash
			e.Down = down[n]
			eps = append(eps, e, ep(n+"-far", "s2"))
		}
		return Order(eps, []string{"s1", "s2"}, BalanceSourceHash, key(ip))[0].Node
	}
	base := map[string]string{}
	for _, ip := range clients {
		base[ip] = pick(nil, ip)
		if again := pick(nil, ip); again != base[ip] {
			t.Fatalf("%s: %s then %s with nothing changed", ip, base[ip], again)
		}
	}
	used := map[string]bool{}
	for _, n := range base {
		used[n] = true
	}
	if len(used) < 2 {
		t.Errorf("8 clients all on %v: no spreading", base)
	}
	steps := []struct {
		name string
		down map[string]bool
	}{
		{"a down", map[string]bool{"a": true}},
		{"a back", nil},
		{"b down", map[string]bool{"b": true}},
		{"b and c down", map[string]bool{"b": true, "c": true}},
		{"all back", nil},
	}
	moved := map[string]string{} // client -> where it went while its endpoint was down, the first time
	for _, st := range steps {
		for _, ip := range clients {
			got := pick(st.down, ip)
			switch {
			case !st.down[base[ip]]:
				if got != base[ip] {
					t.Errorf("%s: client %s moved from healthy %s to %s", st.name, ip, base[ip], got)
				}
			case st.down[got]:
				t.Errorf("%s: client %s sent to %s, which is down", st.name, ip, got)
			case len(st.down) == 1:
				if m, ok := moved[ip]; ok && m != got {
					t.Errorf("%s: client %s moved to %s, earlier to %s", st.name, ip, got, m)
				}
				moved[ip] = got
			}
		}
	}
	// All of s1 down: the preferred site's endpoints are last resorts, s2 serves.
	if got := pick(map[string]bool{"a": true, "b": true, "c": true}, clients[0]); got[len(got)-4:] != "-far" {
		t.Errorf("all of s1 down: first candidate %s; want one of s2", got)
	}
}

// TestSourceHashWeights: with weights 1 and 3 about a quarter of the
// clients land on the first.
func TestSourceHashWeights(t *testing.T) {
	counts := map[string]int{}
	for i := 0; i < 4000; i++ {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		a, b := ep("a", "s"), ep("b", "s")
		b.Weight = 3
		counts[Order([]Endpoint{a, b}, nil, BalanceSourceHash, SourceKey(ip.As16()))[0].Node]++
	}
	if share := float64(counts["a"]) / 4000; share < 0.21 || share > 0.29 {
		t.Errorf("weight 1 of 4 got %.3f of the clients (%v); want about 0.25", share, counts)
	}
	if b, err := ParseBalance("source_hash"); err != nil || b != BalanceSourceHash {
		t.Errorf("ParseBalance(source_hash) = %q, %v", b, err)
	}
}
