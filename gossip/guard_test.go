package gossip

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func withGuard(f func(*guardTransport)) option {
	return func(c *Config, _ *testNode) { c.guardTune = f }
}

// encHeader is the start of an encrypted memberlist stream message that
// declares size bytes.
func encHeader(size uint32) []byte {
	b := []byte{encryptMsgType, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], size)
	return b
}

// closedWithin reports whether the node closed c within d (a read returns
// EOF or an error other than our own timeout).
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return true
}

func warnLines(l *logBuf) int {
	return len(l.lines("level=WARN")) + len(l.lines("level=ERROR"))
}

func TestGuardRefusesOversizedStreams(t *testing.T) {
	a := newNode(t, "a")
	// The attack of issue #11: an encrypted-message header declaring ~20 MiB,
	// then data. memberlist would buffer it all before checking the key.
	const conns = 50
	cs := make([]net.Conn, 0, conns)
	for range conns {
		c, err := net.Dial("tcp", a.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cs = append(cs, c)
		_, _ = c.Write(encHeader(20 << 20))
		_, _ = c.Write(make([]byte, 64<<10))
	}
	for i, c := range cs {
		if !closedWithin(c, 3*time.Second) {
			t.Fatalf("connection %d still open 3s after declaring 20 MiB", i)
		}
	}
	if n := a.Stats().StreamsRefused; n != conns {
		t.Errorf("Stats().StreamsRefused = %d, want %d", n, conns)
	}
	if w := warnLines(a.logs); w > 2 {
		t.Errorf("%d WARN lines for %d refused streams from one source:\n%s", w, conns, a.logs.String())
	}
	// The node still works.
	b := newNode(t, "b")
	b.join(t, a)
	waitState(t, 5*time.Second, "b", StateAlive, a)
}

func TestGuardCapsConcurrentStreams(t *testing.T) {
	a := newNode(t, "a", withGuard(func(g *guardTransport) {
		g.maxPerSource = 4
		g.maxStreams = 8 // the per-source cap applies from 4 open
		g.budget = 3 << 20
		g.headerTimeout = 300 * time.Millisecond
		g.lifetime = 1500 * time.Millisecond
	}))
	// 10 streams that each declare 1 MiB and then stall: at most 4 admitted
	// from one source, of those at most 3 fit the budget.
	var cs []net.Conn
	for range 10 {
		c, err := net.Dial("tcp", a.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write(encHeader(1 << 20))
		cs = append(cs, c)
	}
	deadline := time.Now().Add(2 * time.Second)
	var open int
	var reserved int64
	for time.Now().Before(deadline) {
		// A stream over the budget is counted refused a moment before
		// it leaves the open count: wait for both to settle.
		open, reserved = a.guard.openStreams()
		if a.guard.stats.StreamsRefused.Load() == 7 && open == 3 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := a.guard.stats.StreamsRefused.Load(); got != 7 || open != 3 || reserved != 3<<20 {
		t.Fatalf("refused %d, open %d, reserved %d; want 7, 3, %d", got, open, reserved, 3<<20)
	}
	// Idle streams that send nothing are closed after the header timeout,
	// admitted ones after their lifetime, and the counts return to zero.
	for i, c := range cs {
		if !closedWithin(c, 3*time.Second) {
			t.Fatalf("stream %d still open after its lifetime", i)
		}
	}
	waitFor(t, 2*time.Second, "guard counts back to zero", func() string {
		if o, r := a.guard.openStreams(); o != 0 || r != 0 {
			return fmt.Sprintf("%d open, %d bytes reserved", o, r)
		}
		return ""
	})
}

func TestGuardUnauthenticatedLogLines(t *testing.T) {
	a := newNode(t, "a")
	u, err := net.Dial("udp", a.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	// 1,000 packets with memberlist's label header, garbage, and plausible
	// encrypted-looking garbage (decrypt failures).
	label := append([]byte{labelMsgType, 3}, "abc"...)
	label = append(label, make([]byte, 40)...)
	garbage := []byte(strings.Repeat("x", 100))
	fake := make([]byte, 100)
	fake[0] = 1
	for i := range 1000 {
		switch i % 3 {
		case 0:
			_, _ = u.Write(label)
		case 1:
			_, _ = u.Write(garbage)
		default:
			_, _ = u.Write(fake)
		}
		if i%100 == 99 {
			time.Sleep(5 * time.Millisecond) // let the socket buffer drain
		}
	}
	// 100 TCP connections that send 5 bytes each.
	for range 100 {
		c, err := net.Dial("tcp", a.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte{1, 2, 3, 4, 5})
		c.Close()
	}
	waitFor(t, 3*time.Second, "packets dropped", func() string {
		if n := a.guard.stats.PacketsDropped.Load(); n < 600 {
			return fmt.Sprintf("%d dropped", n)
		}
		return ""
	})
	time.Sleep(300 * time.Millisecond)
	t.Logf("%d WARN/ERROR lines", warnLines(a.logs))
	if w := warnLines(a.logs); w >= 20 || w == 0 {
		t.Fatalf("%d WARN/ERROR lines for 1,000 packets and 100 connections, want 1..19:\n%s", w, strings.Join(append(a.logs.lines("level=WARN"), a.logs.lines("level=ERROR")...), "\n"))
	}
}

// TestGuardAdmit: the per-source cap applies only once half the streams are
// open, so that many members behind one address (a lab on 127.0.0.1, a NAT)
// can push/pull at once, while one source never holds more than half.
func TestGuardAdmit(t *testing.T) {
	g := &guardTransport{maxStreams: 8, maxPerSource: 2, perSrc: map[netip.Addr]int{}}
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	steps := []struct {
		src    netip.Addr
		admit  bool
		open   int
		action string // "" admit, "release" release one from src
	}{
		{a, true, 1, ""}, {a, true, 2, ""}, {a, true, 3, ""}, {a, true, 4, ""}, // below half: no per-source cap
		{a, false, 4, ""},                                     // half full: a holds 4 ≥ 2
		{b, true, 5, ""}, {b, true, 6, ""}, {b, false, 6, ""}, // b gets its share, no more
		{a, true, 5, "release"}, {a, false, 5, ""}, // still above half
		{b, true, 4, "release"}, {a, true, 3, "release"}, {a, true, 4, ""}, // below half again
	}
	for i, s := range steps {
		if s.action == "release" {
			g.release(s.src, 0)
			if g.open != s.open {
				t.Fatalf("step %d: release: open %d, want %d", i, g.open, s.open)
			}
			continue
		}
		why := g.admit(s.src)
		if (why == "") != s.admit || g.open != s.open {
			t.Fatalf("step %d: admit(%v) = %q, open %d; want admitted %v, open %d", i, s.src, why, g.open, s.admit, s.open)
		}
	}
	for i := range 4 { // fill from other sources
		if why := g.admit(netip.AddrFrom4([4]byte{10, 0, 1, byte(i)})); why != "" {
			t.Fatalf("filling: %s", why)
		}
	}
	if why := g.admit(netip.MustParseAddr("10.0.0.3")); why == "" || g.open != 8 {
		t.Fatalf("full guard admitted a stream (open %d)", g.open)
	}
}
