package statuspage

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/failover"
)

func get(t *testing.T, srv *httptest.Server, method, path string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestIndexSelfContained: the page is one HTML document that loads
// nothing from elsewhere, and the CSP admits exactly its inline script and
// style.
func TestIndexSelfContained(t *testing.T) {
	srv := httptest.NewServer(Handler(Source{}))
	defer srv.Close()
	resp, body := get(t, srv, "GET", "/")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	for _, bad := range []string{"http://", "https://", "//cdn", "<link", "src=", "@import", "url(", "innerHTML"} {
		if strings.Contains(body, bad) {
			t.Errorf("the page contains %q: it must not load external assets or inject HTML", bad)
		}
	}
	csp := resp.Header.Get("Content-Security-Policy")
	for _, tag := range []string{"script", "style"} {
		m := regexp.MustCompile(`(?s)<` + tag + `>(.*?)</` + tag + `>`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no inline %s", tag)
		}
		sum := sha256.Sum256([]byte(m[1]))
		want := tag + "-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	for path, code := range map[string]int{"/nope": 404, "/api": 404, "/api/status/x": 404} {
		if resp, _ := get(t, srv, "GET", path); resp.StatusCode != code {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, code)
		}
	}
	if resp, _ := get(t, srv, "POST", "/api/status"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /api/status: %d", resp.StatusCode)
	}
}

// TestStatusReused: however many clients poll, the status is computed at
// most once per interval.
func TestStatusReused(t *testing.T) {
	var calls atomic.Int64
	src := Source{Status: func() any { return map[string]int64{"n": calls.Add(1)} }}
	srv := httptest.NewServer(newHandler(src, 200*time.Millisecond))
	defer srv.Close()
	for i := 0; i < 5; i++ {
		resp, body := get(t, srv, "GET", "/api/status")
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || body != `{"n":1}` {
			t.Fatalf("GET /api/status: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}
	time.Sleep(250 * time.Millisecond)
	if _, body := get(t, srv, "GET", "/api/status"); body != `{"n":2}` {
		t.Fatalf("after the interval: %q", body)
	}
	if calls.Load() != 2 {
		t.Fatalf("status computed %d times", calls.Load())
	}
}

func report(site string, dur int64) failover.Report {
	return failover.Report{Site: site, DurationMS: dur, Services: []failover.ServiceReport{{Name: "db", RTOMS: 850, FailbackMS: 1200,
		Timeline: []failover.TimelineEvent{{AtMS: -500, EndMS: -5, Kind: failover.EventServed, Count: 5, Node: "o1", Site: site}}}}}
}

// TestRing: the ring keeps the last n drills, newest first, and shows the
// running one until it finishes or is aborted.
func TestRing(t *testing.T) {
	r := NewRing(3)
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if d := r.Snapshot(); d.Running != nil || d.Drills == nil || len(d.Drills) != 0 {
		t.Fatalf("empty ring: %+v", d)
	}
	for i := range 5 {
		var calls atomic.Int64
		l := r.Start(t0.Add(time.Duration(i)*time.Minute), func() failover.Report { calls.Add(1); return report("s", int64(i)) })
		d := r.Snapshot()
		if d.Running == nil || !d.Running.Running || d.Running.DurationMS != int64(i) || calls.Load() != 1 {
			t.Fatalf("running drill %d: %+v", i, d.Running)
		}
		if i == 3 {
			r.Abort(l) // an interrupted drill is not recorded
			continue
		}
		r.Finish(l, report("s", int64(i)))
		r.Abort(l) // after Finish: nothing
	}
	d := r.Snapshot()
	if d.Running != nil || len(d.Drills) != 3 {
		t.Fatalf("ring: running %v, %d drills", d.Running, len(d.Drills))
	}
	for i, want := range []int64{4, 2, 1} {
		if d.Drills[i].DurationMS != want || d.Drills[i].Running || !d.Drills[i].Started.Equal(t0.Add(time.Duration(want)*time.Minute)) {
			t.Errorf("drill %d: %+v, want the one of duration %d", i, d.Drills[i], want)
		}
	}
	// Two drills at once: the later one is shown; the earlier one ending
	// does not hide it.
	a := r.Start(t0, func() failover.Report { return report("a", 1) })
	b := r.Start(t0, func() failover.Report { return report("b", 2) })
	r.Finish(a, report("a", 1))
	if d := r.Snapshot(); d.Running == nil || d.Running.Site != "b" || d.Drills[0].Site != "a" {
		t.Fatalf("overlapping drills: %+v", d)
	}
	r.Abort(b)
	if d := r.Snapshot(); d.Running != nil {
		t.Fatalf("aborted drill still running: %+v", d.Running)
	}
	if r := NewRing(0); r.max != DefaultRingSize {
		t.Errorf("NewRing(0) keeps %d", r.max)
	}
}

// TestDrillsJSON: /api/drills is the Ring's snapshot, with the report's
// fields at the top level of each drill (docs/formats.md names).
func TestDrillsJSON(t *testing.T) {
	r := NewRing(2)
	r.Finish(r.Start(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), nil), report("onprem", 3000))
	srv := httptest.NewServer(Handler(Source{Drills: r}))
	defer srv.Close()
	resp, body := get(t, srv, "GET", "/api/drills")
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	var raw struct {
		Running *json.RawMessage `json:"running"`
		Drills  []map[string]any `json:"drills"`
	}
	if err := json.Unmarshal([]byte(body), &raw); err != nil {
		t.Fatal(err)
	}
	if raw.Running != nil || len(raw.Drills) != 1 {
		t.Fatalf("%s", body)
	}
	d := raw.Drills[0]
	svc := d["services"].([]any)[0].(map[string]any)
	tl := svc["timeline"].([]any)[0].(map[string]any)
	if d["site"] != "onprem" || d["duration_ms"] != 3000.0 || d["started"] != "2026-01-02T03:04:05Z" || d["running"] != false ||
		svc["rto_ms"] != 850.0 || svc["failback_ms"] != 1200.0 || tl["end_ms"] != -5.0 || tl["site"] != "onprem" {
		t.Errorf("%s", body)
	}
	// No ring: an empty list, not null.
	srv2 := httptest.NewServer(Handler(Source{}))
	defer srv2.Close()
	if _, body := get(t, srv2, "GET", "/api/drills"); body != `{"running":null,"drills":[]}` {
		t.Errorf("no ring: %s", body)
	}
}
