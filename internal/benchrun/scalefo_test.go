package benchrun

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func at(msec int) time.Time { return t0.Add(time.Duration(msec) * time.Millisecond) }

// conn is a record from start to end ms; site -1 with ok false is a failure.
func conn(start, end, site int, ok bool) foConn {
	c := foConn{Start: at(start), End: at(end), OK: ok, Site: site}
	if !ok {
		c.Site, c.Err = -1, "boom"
	}
	return c
}

func TestFORecovery(t *testing.T) {
	for _, tc := range []struct {
		name string
		recs []foConn
		cut  int
		site int
		want time.Duration // -1: none
	}{
		{"served elsewhere after the cut", []foConn{conn(0, 2, 1, true), conn(20, 22, 1, true), conn(40, 740, 2, true)}, 30, 1, 710 * time.Millisecond},
		{"a connection started before the cut does not count", []foConn{conn(0, 800, 2, true), conn(820, 822, 2, true)}, 30, 1, 792 * time.Millisecond},
		{"still the cut site: not recovered", []foConn{conn(40, 42, 1, true), conn(60, 62, 1, true)}, 30, 1, -1},
		{"failures, then another site", []foConn{conn(40, 3040, -1, false), conn(3060, 3065, 2, true)}, 30, 1, 3035 * time.Millisecond},
		{"the earliest end counts, not the first record", []foConn{conn(40, 900, 2, true), conn(60, 70, 2, true)}, 30, 1, 40 * time.Millisecond},
		{"unknown site does not count", []foConn{conn(40, 45, -1, true), conn(60, 66, 3, true)}, 30, 1, 36 * time.Millisecond},
		{"nothing after the cut", []foConn{conn(0, 2, 1, true)}, 30, 1, -1},
	} {
		d, ok := foRecovery(tc.recs, at(tc.cut), tc.site)
		if !ok {
			d = -1
		}
		if d != tc.want {
			t.Errorf("%s: foRecovery = %v, want %v", tc.name, d, tc.want)
		}
	}
}

func TestFOBack(t *testing.T) {
	recs := []foConn{conn(0, 2, 2, true), conn(100, 102, 3, true), conn(2100, 2102, 3, true), conn(2120, 2123, 2, true)}
	if d, ok := foBack(recs, at(50), 2); !ok || d != 2073*time.Millisecond {
		t.Errorf("foBack = %v %v, want 2.073s", d, ok)
	}
	if _, ok := foBack(recs, at(3000), 2); ok {
		t.Errorf("foBack after the last record: found one")
	}
}

func TestFOMaxGap(t *testing.T) {
	for _, tc := range []struct {
		name     string
		recs     []foConn
		from, to int
		want     time.Duration
	}{
		{"steady", []foConn{conn(0, 2, 1, true), conn(20, 22, 1, true), conn(40, 42, 1, true)}, 0, 50, 20 * time.Millisecond},
		{"a slow connection", []foConn{conn(0, 2, 1, true), conn(20, 720, 2, true), conn(740, 742, 2, true)}, 0, 750, 718 * time.Millisecond},
		{"failures do not end a gap", []foConn{conn(0, 2, 1, true), conn(20, 3020, -1, false), conn(3040, 3042, 2, true)}, 0, 3050, 3040 * time.Millisecond},
		{"from counts as a success", []foConn{conn(100, 400, 2, true)}, 100, 410, 300 * time.Millisecond},
		{"an outage to the end", []foConn{conn(0, 2, 1, true), conn(20, 3020, -1, false)}, 0, 3100, 3098 * time.Millisecond},
		{"ends out of order", []foConn{conn(0, 2, 1, true), conn(20, 900, 1, true), conn(40, 45, 2, true), conn(60, 66, 2, true)}, 0, 950, 834 * time.Millisecond},
		{"records outside the window are ignored", []foConn{conn(0, 2, 1, true), conn(5000, 5001, 1, true)}, 10, 110, 100 * time.Millisecond},
	} {
		if got := foMaxGap(tc.recs, at(tc.from), at(tc.to)); got != tc.want {
			t.Errorf("%s: foMaxGap = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestFOServedLast(t *testing.T) {
	recs := []foConn{conn(0, 2, 2, true), conn(20, 22, 1, true), conn(40, 42, 1, true), conn(60, 62, 1, true)}
	for _, tc := range []struct {
		since, site, n int
		want           bool
	}{
		{0, 1, 3, true}, {0, 1, 4, false}, {30, 1, 3, false}, {30, 1, 2, true}, {0, 2, 1, false},
	} {
		if got := foServedLast(recs, at(tc.since), tc.site, tc.n); got != tc.want {
			t.Errorf("foServedLast(since %d, s%d, %d) = %v, want %v", tc.since, tc.site, tc.n, got, tc.want)
		}
	}
	if foServedLast(append(recs, conn(80, 3080, -1, false)), at(0), 1, 1) {
		t.Errorf("foServedLast after a failure: true")
	}
}

func TestFOSummarize(t *testing.T) {
	recs := [][]foConn{
		{conn(0, 2, 1, true), conn(20, 700, 2, true), conn(720, 722, 2, true)},
		{conn(0, 2, 1, true), conn(20, 3020, -1, false), conn(3040, 3044, 2, true)},
	}
	f := foSummarize(recs, at(10), 1, at(3050))
	if f.conns != 6 || f.failed != 1 || f.recovery != 3034*time.Millisecond || f.gap != 3034*time.Millisecond || f.firstErr != "boom" {
		t.Errorf("foSummarize = %+v", f)
	}
	recs = append(recs, []foConn{conn(0, 2, 1, true), conn(20, 22, 1, true)})
	if f := foSummarize(recs, at(10), 1, at(3050)); f.recovery != -1 {
		t.Errorf("foSummarize with a loop never served elsewhere: recovery %v, want -1", f.recovery)
	}
}

func TestFOTag(t *testing.T) {
	p := foTag(3, 1234)
	if len(p) != foPayload {
		t.Fatalf("foTag is %d bytes, want %d", len(p), foPayload)
	}
	if tag, ok := parseTag(p); !ok || tag != "3.1234" {
		t.Errorf("parseTag(foTag(3, 1234)) = %q %v", tag, ok)
	}
	for _, bad := range []string{"", "scale-fo ", "scale-fo 1.2", "hello\n", "scale-fo \n", "scale-fo " + strings.Repeat("9", 30) + "\n"} {
		if tag, ok := parseTag([]byte(bad)); ok {
			t.Errorf("parseTag(%q) = %q, want none", bad, tag)
		}
	}
}

// TestTagEchoAndLoops runs client loops against two tag echo targets
// directly: every connection works, is attributed to its target's site,
// the book is emptied, and a plain client gets a plain echo.
func TestTagEchoAndLoops(t *testing.T) {
	book := newTagBook()
	var addrs []string
	for site := 1; site <= 2; site++ {
		s, err := listenTagEcho(book, site)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		addrs = append(addrs, s.Addr())
	}
	ctx := context.Background()
	if err := foExchange(ctx, addrs[0], []byte("plain bytes, no tag"), time.Second); err != nil {
		t.Fatalf("plain echo: %v", err)
	}
	one := startFOLoops(ctx, book, []string{"x"}, addrs[:1], time.Second)
	if err := one.waitServed(ctx, time.Now(), 1, 5, 10*time.Second); err != nil {
		t.Fatalf("one loop on s1's target: %v", err)
	}
	one.Stop()
	ls := startFOLoops(ctx, book, []string{"x", "y"}, addrs, time.Second)
	defer ls.Stop()
	if err := ls.waitServed(ctx, time.Now(), 1, 5, 300*time.Millisecond); err == nil || !strings.Contains(err.Error(), "y: ok [") {
		t.Fatalf("waitServed(s1) for both loops: %v; want an error naming y (served by s2)", err)
	}
	ls.Stop()
	for i, rs := range ls.records() {
		if len(rs) < 5 {
			t.Fatalf("loop %d: %d records", i, len(rs))
		}
		for _, r := range rs {
			if !r.OK || r.Site != i+1 {
				t.Fatalf("loop %d: record %+v, want ok by s%d", i, r, i+1)
			}
		}
	}
	book.mu.Lock()
	left := len(book.tags)
	book.mu.Unlock()
	if left != 0 {
		t.Errorf("%d tags left in the book", left)
	}
}

// TestFOLoopDoesNotWait: a connection that hangs does not hold back the
// ones after it, and fails at its timeout.
func TestFOLoopDoesNotWait(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		first := true
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if first { // never answered; closed with the listener's test
				first = false
				defer c.Close()
				continue
			}
			go func() {
				defer c.Close()
				b := make([]byte, foPayload)
				if _, err := io.ReadFull(c, b); err == nil {
					c.Write(b)
				}
			}()
		}
	}()
	ls := startFOLoops(context.Background(), newTagBook(), []string{"x"}, []string{ln.Addr().String()}, 500*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	ls.Stop() // waits for the hanging one's timeout
	recs := ls.records()[0]
	failed, ok := foFailed(recs)
	if failed != 1 || ok < 5 {
		t.Fatalf("%d failed, %d ok; want the first failed and the others through", failed, ok)
	}
	if last := recs[len(recs)-1]; last.OK || last.End.Sub(last.Start) < 500*time.Millisecond {
		t.Errorf("the last record to end is %+v, want the hanging one, failed after 500ms", last)
	}
}

func TestFOLoopFailures(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: every connection fails
	ls := startFOLoops(context.Background(), newTagBook(), []string{"x"}, []string{addr}, time.Second)
	time.Sleep(200 * time.Millisecond)
	ls.Stop()
	recs := ls.records()[0]
	failed, ok := foFailed(recs)
	if failed == 0 || ok != 0 || recs[0].Err == "" {
		t.Errorf("against a closed port: %d failed, %d ok, first %+v", failed, ok, recs[0])
	}
}

func TestPartitionRules(t *testing.T) {
	got := partitionRules("meshd_scale_7", []int{20, 10, 20}, []int{30}, []int{10, 30})
	want := `table inet meshd_scale_7 {
	set half_a { type inet_service; elements = { 10, 20 } }
	set half_b { type inet_service; elements = { 30 } }
	set gossip { type inet_service; elements = { 10, 30 } }
	chain output {
		type filter hook output priority 0; policy accept;
		oifname "lo" udp sport @half_a udp dport @half_b drop
		oifname "lo" udp sport @half_b udp dport @half_a drop
		oifname "lo" tcp dport @gossip drop
	}
}
`
	if got != want {
		t.Errorf("partitionRules:\n%s\nwant:\n%s", got, want)
	}
}

func TestFOSplitWait(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{{4, 20 * time.Second}, {25, 20 * time.Second}, {40, 20 * time.Second}, {60, 30 * time.Second}, {100, 50 * time.Second}} {
		if got := foSplitWait(tc.n); got != tc.want {
			t.Errorf("foSplitWait(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
}

func TestStaleTables(t *testing.T) {
	list := "table inet filter\ntable inet meshd_scale_100\ntable inet meshd_scale_200\ntable ip meshd_scale_300\ntable inet meshd_scale_x\n"
	got := staleTables(list, func(pid int) bool { return pid == 200 })
	if fmt.Sprint(got) != "[meshd_scale_100]" {
		t.Errorf("staleTables = %v, want [meshd_scale_100]", got)
	}
}

// TestPartitionRulesApplied loads the rules (root, nft) and checks them on
// real sockets: UDP between the halves is dropped, inside a half it
// passes, TCP to a gossip port is dropped; after the delete all passes.
func TestPartitionRulesApplied(t *testing.T) {
	if why := partitionPossible(); why != "" {
		t.Skip(why)
	}
	udp := func() *net.UDPConn {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a1, a2, b1 := udp(), udp(), udp()
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	pt := func(a net.Addr) int {
		switch a := a.(type) {
		case *net.UDPAddr:
			return a.Port
		case *net.TCPAddr:
			return a.Port
		}
		return 0
	}
	table := fmt.Sprintf("%stest%d", partitionPrefix, os.Getpid())
	rules := partitionRules(table, []int{pt(a1.LocalAddr()), pt(a2.LocalAddr())}, []int{pt(b1.LocalAddr())}, []int{pt(tl.Addr())})
	if err := nftApply(context.Background(), rules); err != nil {
		t.Fatal(err)
	}
	deleted := false
	defer func() {
		if !deleted {
			nftDeleteTable(table)
		}
	}()
	passes := func(from, to *net.UDPConn) bool {
		if _, err := from.WriteToUDP([]byte("x"), to.LocalAddr().(*net.UDPAddr)); err != nil {
			return false
		}
		to.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, _, err := to.ReadFromUDP(make([]byte, 8))
		return err == nil
	}
	tcpPasses := func() bool {
		c, err := net.DialTimeout("tcp", tl.Addr().String(), 300*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	}
	if passes(a1, b1) || passes(b1, a2) {
		t.Errorf("UDP between the halves passes")
	}
	if !passes(a1, a2) {
		t.Errorf("UDP inside a half is dropped")
	}
	if tcpPasses() {
		t.Errorf("TCP to a gossip port passes")
	}
	if err := nftDeleteTable(table); err != nil {
		t.Fatal(err)
	}
	deleted = true
	if !passes(a1, b1) || !tcpPasses() {
		t.Errorf("after the delete: traffic still dropped")
	}
	if err := nftDeleteTable(table); err != nil {
		t.Errorf("deleting a missing table: %v", err)
	}
}
