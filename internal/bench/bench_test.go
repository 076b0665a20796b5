package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/echo"
)

func TestPercentile(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i))
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50}, {99, 99}, {100, 100}, {1, 1}, {0.1, 1}, {99.9, 100}} {
		if got := Percentile(s, tc.p); got != tc.want {
			t.Errorf("Percentile(1..100, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := Percentile(nil, 50); got != 0 {
		t.Errorf("Percentile(nil) = %v", got)
	}
	if got := Percentile([]time.Duration{7}, 99); got != 7 {
		t.Errorf("Percentile([7], 99) = %v", got)
	}
	sum := Summarize([]time.Duration{5, 3, 9, 1, 7})
	if sum.Count != 5 || sum.P50 != 5 || sum.P99 != 9 || sum.Max != 9 {
		t.Errorf("Summarize = %+v", sum)
	}
	if z := Summarize(nil); z.Count != 0 || z.Max != 0 {
		t.Errorf("Summarize(nil) = %+v", z)
	}
}

func TestRatioRound(t *testing.T) {
	if r := Ratio(50, 200); r != 0.25 {
		t.Errorf("Ratio = %v", r)
	}
	if r := Ratio(1, 0); !math.IsNaN(r) {
		t.Errorf("Ratio(1, 0) = %v, want NaN", r)
	}
	if r := Round(1.23456, 2); r != 1.23 {
		t.Errorf("Round = %v", r)
	}
	if m := Micros(1500 * time.Nanosecond); m != 1.5 {
		t.Errorf("Micros = %v", m)
	}
}

func TestResultsFormat(t *testing.T) {
	r := NewResults()
	r.Set("date", "2026-01-02T03:04:05Z")
	r.Set("nproc", 4)
	r.SetPair("throughput_1_mbps", 50, 200)
	r.SetPair("latency_1_p50_us", 30, 10)
	r.SetPair("conn_rate", 100, 0)
	r.Set("note", "has space")
	r.Set("ok", true)
	r.Set("nproc", 8) // keeps its position

	wantKeys := []string{"date", "nproc", "throughput_1_mbps", "throughput_1_direct_mbps", "throughput_1_ratio",
		"latency_1_p50_us", "latency_1_p50_direct_us", "latency_1_p50_ratio",
		"conn_rate", "conn_rate_direct", "conn_rate_ratio", "note", "ok"}
	if got := strings.Join(r.Keys(), ","); got != strings.Join(wantKeys, ",") {
		t.Fatalf("keys:\n got %s\nwant %s", got, strings.Join(wantKeys, ","))
	}

	var kv bytes.Buffer
	if err := r.WriteKV(&kv); err != nil {
		t.Fatal(err)
	}
	wantKV := `date=2026-01-02T03:04:05Z
nproc=8
throughput_1_mbps=50
throughput_1_direct_mbps=200
throughput_1_ratio=0.25
latency_1_p50_us=30
latency_1_p50_direct_us=10
latency_1_p50_ratio=3
conn_rate=100
conn_rate_direct=0
conn_rate_ratio=null
note="has space"
ok=true
`
	if kv.String() != wantKV {
		t.Errorf("kv:\n%s\nwant:\n%s", kv.String(), wantKV)
	}

	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(js.Bytes(), &m); err != nil {
		t.Fatalf("JSON %s: %v", js.String(), err)
	}
	if m["throughput_1_ratio"] != 0.25 || m["conn_rate_ratio"] != nil || m["nproc"] != 8.0 || m["note"] != "has space" {
		t.Errorf("JSON = %s", js.String())
	}
	if !strings.HasPrefix(js.String(), "{\n  \"date\"") {
		t.Errorf("JSON not in insertion order: %s", js.String())
	}
}

func TestRSS(t *testing.T) {
	n, err := RSS(os.Getpid())
	if err != nil {
		t.Skip("no /proc:", err)
	}
	if n <= 0 {
		t.Errorf("RSS = %d", n)
	}
	if _, err := RaiseNoFile(); err != nil {
		t.Errorf("RaiseNoFile: %v", err)
	}
}

// TestMeasurementsSmoke runs every measurement briefly against local
// servers (no meshd).
func TestMeasurementsSmoke(t *testing.T) {
	sink, err := ListenSink("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	ech, err := echo.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ech.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const d = 150 * time.Millisecond

	for _, streams := range []int{1, 4} {
		r := Throughput(ctx, sink.Addr(), streams, d)
		if r.Errors != 0 || r.Bytes <= 0 || r.MBps <= 0 {
			t.Errorf("Throughput(%d) = %+v", streams, r)
		}
	}
	if sink.Bytes() <= 0 {
		t.Errorf("sink counted %d bytes", sink.Bytes())
	}

	l := Latency(ctx, ech.Addr(), 4, d, 0)
	if l.Errors != 0 || l.Count == 0 || l.P50 <= 0 || l.P99 < l.P50 || l.Max < l.P99 {
		t.Errorf("Latency = %+v", l)
	}
	capped := Latency(ctx, ech.Addr(), 2, 5*time.Second, 10)
	if capped.Count != 10 || capped.Errors != 0 {
		t.Errorf("Latency capped at 10 samples = %+v", capped)
	}

	cr := ConnRate(ctx, ech.Addr(), 2, d, 0, &Dialer{Spread: true})
	if cr.Errors != 0 || cr.Conns == 0 || cr.PerSec <= 0 {
		t.Errorf("ConnRate = %+v", cr)
	}
	crCapped := ConnRate(ctx, ech.Addr(), 3, 5*time.Second, 7, nil)
	if crCapped.Conns != 7 {
		t.Errorf("ConnRate capped at 7 = %+v", crCapped)
	}

	set, nerr, err := OpenIdle(ctx, ech.Addr(), 50, 8, &Dialer{Spread: true})
	if nerr != 0 || set.Len() != 50 {
		t.Fatalf("OpenIdle: %d errors (%v), %d conns", nerr, err, set.Len())
	}
	if n, err := set.Verify(ctx, 8); n != 0 {
		t.Errorf("Verify: %d errors, first %v", n, err)
	}
	set.Close()

	// A dead target gives errors, promptly, not a hang.
	dead := sink.Addr()
	sink.Close()
	t0 := time.Now()
	if r := Throughput(ctx, dead, 2, d); r.Errors != 2 {
		t.Errorf("Throughput to a closed port = %+v", r)
	}
	if r := ConnRate(ctx, dead, 1, d, 0, nil); r.Errors == 0 || r.Conns != 0 {
		t.Errorf("ConnRate to a closed port = %+v", r)
	}
	if _, n, _ := OpenIdle(ctx, dead, 5, 2, nil); n != 5 {
		t.Errorf("OpenIdle to a closed port: %d errors, want 5", n)
	}
	if el := time.Since(t0); el > 5*time.Second {
		t.Errorf("failing measurements took %v", el)
	}
}

func TestCancel(t *testing.T) {
	ech, err := echo.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ech.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	t0 := time.Now()
	Latency(ctx, ech.Addr(), 2, time.Minute, 0)
	if el := time.Since(t0); el > 5*time.Second {
		t.Errorf("Latency ignored cancel: took %v", el)
	}
}

func TestParseStatCPU(t *testing.T) {
	line := "1234 (meshd (x) y) S 1 1234 1234 0 -1 4194560 2000 0 0 0 250 75 0 0 20 0 12 0 100 0 0"
	got, err := parseStatCPU(line)
	if err != nil || got != 3250*time.Millisecond {
		t.Fatalf("got %v %v, want 3.25s", got, err)
	}
	if _, err := parseStatCPU("1234 meshd S 1"); err == nil {
		t.Fatal("malformed line accepted")
	}
	if _, err := parseStatCPU("1 (a) S 1 2"); err == nil {
		t.Fatal("short line accepted")
	}
	x := 0
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); x++ {
	}
	self, err := CPUTime(os.Getpid())
	if err != nil || self <= 0 || x == 0 {
		t.Fatalf("own CPU time %v %v", self, err)
	}
}
