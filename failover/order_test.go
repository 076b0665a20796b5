package failover

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// ep builds an endpoint; tests override fields as needed.
func ep(node, site string) Endpoint {
	return Endpoint{Node: node, Site: site, Weight: 1}
}

func (e Endpoint) rtt(ms int) Endpoint         { e.RTT = time.Duration(ms) * time.Millisecond; return e }
func (e Endpoint) load(active, w int) Endpoint { e.Active, e.Weight = active, w; return e }
func (e Endpoint) down() Endpoint              { e.Down = true; return e }
func (e Endpoint) local() Endpoint             { e.Local = true; return e }

func nodes(eps []Endpoint) string {
	names := make([]string, len(eps))
	for i, e := range eps {
		names[i] = e.Node
	}
	return strings.Join(names, ",")
}

func TestOrder(t *testing.T) {
	tests := []struct {
		name    string
		eps     []Endpoint
		sites   []string
		balance Balance
		rr      uint64
		want    string
	}{
		{
			name:  "preferred site first regardless of RTT",
			eps:   []Endpoint{ep("c1", "cloud").rtt(1), ep("o1", "onprem").rtt(90), ep("c2", "cloud").rtt(2)},
			sites: []string{"onprem", "cloud"},
			want:  "o1,c1,c2",
		},
		{
			name:  "preference list order is honoured",
			eps:   []Endpoint{ep("o1", "onprem"), ep("c1", "cloud")},
			sites: []string{"cloud", "onprem"},
			want:  "c1,o1",
		},
		{
			name:  "listed site missing from the catalog is skipped",
			eps:   []Endpoint{ep("c1", "cloud")},
			sites: []string{"gone", "cloud"},
			want:  "c1",
		},
		{
			name: "unlisted sites nearest first, local 0, unknown last, ties by name",
			eps: []Endpoint{
				ep("a1", "a").rtt(50),
				ep("g1", "g"), // unknown RTT
				ep("c1", "c").rtt(10),
				ep("d1", "d"), // unknown RTT
				ep("e1", "e").local(),
				ep("f1", "f"), ep("f2", "f").rtt(30), // nearest endpoint decides
				ep("h1", "h").rtt(10), // same distance as c
				ep("b1", "b").rtt(99),
			},
			sites: []string{"b"},
			want:  "b1,e1,c1,h1,f1,f2,a1,d1,g1",
		},
		{
			name:  "local endpoint with a stale RTT counts as 0",
			eps:   []Endpoint{ep("x1", "x").rtt(5), ep("y1", "y").rtt(500).local()},
			sites: nil,
			want:  "y1,x1",
		},
		{
			name:    "least_conn by active per weight",
			eps:     []Endpoint{ep("x", "s").load(4, 2), ep("y", "s").load(1, 1), ep("z", "s").load(3, 4)},
			balance: BalanceLeastConn,
			want:    "z,y,x", // 0.75 < 1 < 2
		},
		{
			name:    "least_conn weight below 1 counts as 1",
			eps:     []Endpoint{ep("x", "s").load(2, 0), ep("y", "s").load(3, -5), ep("z", "s").load(1, 1)},
			balance: BalanceLeastConn,
			want:    "z,x,y",
		},
		{
			name:    "least_conn equal ratios tie (2/2 == 1/1)",
			eps:     []Endpoint{ep("y", "s").load(2, 2), ep("x", "s").load(1, 1)},
			balance: BalanceLeastConn,
			rr:      1,
			want:    "y,x",
		},
		{
			name:    "least_conn huge values compared exactly",
			eps:     []Endpoint{ep("x", "s").load(1<<62, 1<<62-1), ep("y", "s").load(1<<62-1, 1<<62-2)},
			balance: BalanceLeastConn,
			want:    "x,y", // (2^62)/(2^62-1) < (2^62-1)/(2^62-2)
		},
		{name: "tie rotation rr=0", eps: tie3(), want: "a,b,c"},
		{name: "tie rotation rr=1", eps: tie3(), rr: 1, want: "b,c,a"},
		{name: "tie rotation rr=2", eps: tie3(), rr: 2, want: "c,a,b"},
		{name: "tie rotation rr=3 wraps", eps: tie3(), rr: 3, want: "a,b,c"},
		{name: "tie rotation rr=max", eps: tie3(), rr: ^uint64(0), want: "a,b,c"}, // 2^64-1 mod 3 == 0
		{
			name: "tie rotation only within a run of equal load",
			eps: []Endpoint{
				ep("d", "s").load(1, 1), ep("c", "s").load(1, 1),
				ep("b", "s"), ep("a", "s"),
			},
			rr:   1,
			want: "b,a,d,c",
		},
		{
			name: "down endpoints last, ordered by the same rules",
			eps: []Endpoint{
				ep("p1", "pref").down(),
				ep("u1", "other").rtt(200),
				ep("p2", "pref"),
				ep("n1", "near").rtt(1).down(),
				ep("p3", "pref").load(5, 1).down(),
			},
			sites: []string{"pref"},
			want:  "p2,u1,p1,p3,n1",
		},
		{name: "round_robin weighted rr=0", eps: rr31(), balance: BalanceRoundRobin, want: "a,b"},
		{name: "round_robin weighted rr=1", eps: rr31(), balance: BalanceRoundRobin, rr: 1, want: "a,b"},
		{name: "round_robin weighted rr=2", eps: rr31(), balance: BalanceRoundRobin, rr: 2, want: "b,a"},
		{name: "round_robin weighted rr=3", eps: rr31(), balance: BalanceRoundRobin, rr: 3, want: "a,b"},
		{
			name:    "round_robin ignores active and reduces common weight",
			eps:     []Endpoint{ep("b", "s").load(9, 2), ep("a", "s").load(0, 2)},
			balance: BalanceRoundRobin,
			rr:      1,
			want:    "b,a",
		},
		{
			name:    "round_robin emits every endpoint once",
			eps:     []Endpoint{ep("c", "s").load(0, 5), ep("a", "s"), ep("b", "s")},
			balance: BalanceRoundRobin,
			rr:      4, // cycle c,c,a,c,b,c,c
			want:    "b,c,a",
		},
		{
			name:    "round_robin applies within each site",
			eps:     []Endpoint{ep("x2", "x"), ep("x1", "x"), ep("y1", "y"), ep("y2", "y")},
			sites:   []string{"y", "x"},
			balance: BalanceRoundRobin,
			rr:      1,
			want:    "y2,y1,x2,x1",
		},
		{name: "unknown balance acts as least_conn", eps: tie3(), balance: "bogus", rr: 1, want: "b,c,a"},
		{name: "empty", eps: nil, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.eps)
			got := Order(tt.eps, tt.sites, tt.balance, tt.rr)
			if nodes(got) != tt.want {
				t.Errorf("Order = %s, want %s", nodes(got), tt.want)
			}
			if !reflect.DeepEqual(tt.eps, in) {
				t.Errorf("input modified: %v, was %v", tt.eps, in)
			}
			if again := Order(tt.eps, tt.sites, tt.balance, tt.rr); !reflect.DeepEqual(again, got) {
				t.Errorf("not deterministic: %s then %s", nodes(got), nodes(again))
			}
		})
	}
}

func tie3() []Endpoint { return []Endpoint{ep("c", "s"), ep("a", "s"), ep("b", "s")} }
func rr31() []Endpoint { return []Endpoint{ep("b", "s"), ep("a", "s").load(0, 3)} } // cycle a,a,b,a

func TestOrderDoesNotAliasInput(t *testing.T) {
	in := tie3()
	got := Order(in, nil, BalanceLeastConn, 0)
	got[0].Node = "changed"
	if slices.ContainsFunc(in, func(e Endpoint) bool { return e.Node == "changed" }) {
		t.Fatal("result shares memory with the input")
	}
}

// TestOrderRoundRobinShares checks that over n consecutive connections each
// endpoint comes first a number of times within ±1 of its weighted share.
func TestOrderRoundRobinShares(t *testing.T) {
	tests := []struct {
		weights []int
		eff     []int // effective weights after capping
	}{
		{weights: []int{1, 1}},
		{weights: []int{3, 1}},
		{weights: []int{1, 2, 3, 5}},
		{weights: []int{7, 0, 2}, eff: []int{7, 1, 2}},
		{weights: []int{5, 5, 10}},
		{weights: []int{1000, 1, 50}, eff: []int{100, 1, 50}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.weights), func(t *testing.T) {
			eff := tt.eff
			if eff == nil {
				eff = tt.weights
			}
			var eps []Endpoint
			total := 0
			for i, w := range tt.weights {
				eps = append(eps, ep(fmt.Sprintf("n%d", i), "s").load(i, w))
				total += eff[i]
			}
			idx := make(map[string]int)
			for i, e := range eps {
				idx[e.Node] = i
			}
			const span = 600
			first := make([]int, span) // endpoint first for rr
			for rr := range first {
				first[rr] = idx[Order(eps, nil, BalanceRoundRobin, uint64(rr))[0].Node]
			}
			// Every prefix of the sequence starting at rr=0 is within ±1.
			counts := make([]int, len(eps))
			for n := 1; n <= span; n++ {
				counts[first[n-1]]++
				for i, c := range counts {
					// |c - n*w/total| <= 1, without floats
					if d := c*total - n*eff[i]; d > total || d < -total {
						t.Fatalf("%d conns: endpoint %d first %d times, want %d/%d*%d ±1",
							n, i, c, eff[i], total, n)
					}
				}
			}
			// Any run of whole cycles, starting anywhere, is exact.
			for _, start := range []int{1, 7, 33} {
				counts := make([]int, len(eps))
				for rr := start; rr < start+total; rr++ {
					counts[first[rr]]++
				}
				for i, c := range counts {
					if c != eff[i] {
						t.Errorf("cycle from %d: endpoint %d first %d times, want %d", start, i, c, eff[i])
					}
				}
			}
		})
	}
}

func BenchmarkOrder(b *testing.B) {
	var eps []Endpoint
	for s := range 3 {
		for n := range 8 {
			eps = append(eps, ep(fmt.Sprintf("n%d-%d", s, n), fmt.Sprintf("site%d", s)).load(n%3, 1+n%4).rtt(10*s+1))
		}
	}
	sites := []string{"site1"}
	for _, bal := range []Balance{BalanceLeastConn, BalanceRoundRobin} {
		b.Run(string(bal), func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				Order(eps, sites, bal, uint64(i))
			}
			b.ReportMetric(float64(len(eps)), "endpoints")
		})
	}
}
