package statuspage

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshd/meshd/failover"
)

// fakeStatus is a docs/formats.md status of a node in a mesh of n nodes in four
// sites, with long names, some links down or relayed, services and
// imports: the page's worst case for layout.
func fakeStatus(n int) map[string]any {
	sites := []string{"onprem-frankfurt-dc1", "aws-eu-central-1", "gcp-europe-west4", "azure-westeurope"}
	peers := []map[string]any{}
	for i := 1; i < n; i++ {
		site := sites[i%len(sites)]
		p := map[string]any{"name": fmt.Sprintf("%s-node-%02d", site, i), "site": site, "state": "alive",
			"mesh_ip": "fd7a:6d65:7368:1:2:3:4:5", "path": "direct", "endpoint": fmt.Sprintf("203.0.113.%d:51820", i),
			"relay_via": "", "rtt_ms": 0.5 + float64(i), "streams": i * 3, "up": true, "session": "up"}
		switch i % 7 {
		case 3:
			p["path"], p["relay_via"] = "relay", "onprem-frankfurt-dc1-node-04"
		case 5:
			p["up"] = false
		case 6:
			p["state"], p["path"], p["rtt_ms"], p["up"], p["session"] = "dead", "none", nil, false, "down"
		}
		peers = append(peers, p)
	}
	var services []map[string]any
	for s := 0; s < 3; s++ {
		var eps []map[string]any
		for i := 1; i < n; i += 2 {
			eps = append(eps, map[string]any{"node": peers[i-1]["name"], "site": peers[i-1]["site"], "healthy": i%5 != 0, "active": i})
		}
		services = append(services, map[string]any{"name": fmt.Sprintf("service-with-a-long-name-%d", s), "endpoints": eps})
	}
	var imports []map[string]any
	for s := 0; s < 3; s++ {
		imports = append(imports, map[string]any{"name": fmt.Sprintf("service-with-a-long-name-%d", s), "listen": fmt.Sprintf("127.0.0.1:%d", 15432+s),
			"active": 12, "total": 123456, "failed": 7, "endpoint": peers[s]["name"]})
	}
	return map[string]any{
		"node": map[string]any{"name": "onprem-frankfurt-dc1-node-00", "site": sites[0], "mesh_ip": "fd7a:6d65:7368:80c5:d181:2d2b:f3cf:c41a",
			"public_key": "x", "gossip": "10.0.0.1:7946", "tunnel": "10.0.0.1:51820", "mode": "userspace", "relay": true,
			"version": "v1.2.3+1a2b3c4d5e6f", "maintenance": true, "maintenance_reason": "kernel upgrade"},
		"peers": peers, "services": services, "imports": imports,
	}
}

func fakeRing() *Ring {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var tl []failover.TimelineEvent
	at := int64(-500)
	for i := 0; i < 40; i++ { // a flapping service: many short runs
		site := []string{"aws-eu-central-1", "gcp-europe-west4"}[i%2]
		tl = append(tl, failover.TimelineEvent{AtMS: at, EndMS: at + 90, Kind: failover.EventServed, Count: 1, Node: site + "-node-01", Site: site})
		at += 100
		if i%9 == 4 {
			tl = append(tl, failover.TimelineEvent{AtMS: at, EndMS: at + 3000, Kind: failover.EventFailed, Count: 1, Err: "dial: timeout"})
			at += 100
		}
	}
	rep := failover.Report{Site: "aws-eu-central-1", DurationMS: 2000}
	for s := 0; s < 3; s++ {
		rep.Services = append(rep.Services, failover.ServiceReport{Name: fmt.Sprintf("service-with-a-long-name-%d", s), Probes: 44, Failed: 4,
			RTOMS: 120, FailbackMS: 80, Before: "aws-eu-central-1-node-01", During: "gcp-europe-west4-node-02", After: "aws-eu-central-1-node-01", Timeline: tl})
	}
	r := NewRing(3)
	r.Finish(r.Start(t0, nil), rep)
	r.Start(t0.Add(time.Minute), func() failover.Report { return rep })
	return r
}

// checkPage frames the status page and reports text elements that overlap
// each other or spill out of their box (without an ellipsis).
const checkPage = `<!doctype html><html><body style="margin:0">
<iframe id="f" src="/" style="border:0;width:100vw;height:4000px"></iframe>
<pre id="result">pending</pre>
<script>
function check() {
  const d = document.getElementById("f").contentDocument;
  if (!d || !d.body || d.body.getAttribute("data-loaded") !== "yes") return setTimeout(check, 50);
  const texts = [];
  for (const e of d.body.querySelectorAll("*")) {
    if (![...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())) continue;
    const r = e.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    texts.push([e, r]);
  }
  const bad = [];
  const name = e => e.tagName.toLowerCase() + (e.className ? "." + e.className : "") + " '" + e.textContent.trim().slice(0, 40) + "'";
  for (const [e] of texts) {
    const cs = d.defaultView.getComputedStyle(e);
    if (e.scrollWidth > e.clientWidth + 1 && cs.overflowX === "visible" && cs.display !== "inline" && e.tagName !== "TD" && e.tagName !== "TH") bad.push("spills: " + name(e));
  }
  for (let i = 0; i < texts.length; i++) for (let j = i + 1; j < texts.length; j++) {
    const [a, ra] = texts[i], [b, rb] = texts[j];
    if (a.contains(b) || b.contains(a)) continue;
    const w = Math.min(ra.right, rb.right) - Math.max(ra.left, rb.left), h = Math.min(ra.bottom, rb.bottom) - Math.max(ra.top, rb.top);
    if (w > 1 && h > 1) bad.push("overlap: " + name(a) + " / " + name(b));
  }
  const n = sel => d.querySelectorAll(sel).length;
  const shown = "nodes=" + n(".site .node[data-node]") + " sites=" + n(".site[data-site]") + " rows=" + n("tr[data-peer]") +
    " relayed=" + n("tr[data-link=relay]") + " down=" + n("tr[data-link=down]") + " maint=" + n("[data-maintenance=on]") +
    " drills=" + n(".drill[data-drill-site]") + " running=" + n(".drill[data-running=yes]") + " lanes=" + n(".lanewrap[data-service]");
  document.getElementById("result").textContent = "checked " + texts.length + " texts; " + shown + "\n" + (bad.length ? bad.slice(0, 30).join("\n") : "OK");
}
check();
</script></body></html>`

// findBrowser returns headless Chromium's path, or skips the test.
func findBrowser(t *testing.T) string {
	t.Helper()
	for _, b := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(b); err == nil {
			return p
		}
	}
	t.Skip("no headless browser: install Debian's chromium package (.ci/run does when root) to check the rendered page")
	return ""
}

// wantShown is what the page must show for fakeStatus(n) and fakeRing(),
// in the form the checker reports it: every node in its site's card, a
// row per peer, the relayed and down links marked as such (classified
// here from the status as the README's "Peer links" says), the
// maintenance banner, and both drills with a lane per service.
func wantShown(n int) string {
	st := fakeStatus(n)
	peers := st["peers"].([]map[string]any)
	sites := map[string]bool{st["node"].(map[string]any)["site"].(string): true}
	relayed, down := 0, 0
	for _, p := range peers {
		sites[p["site"].(string)] = true
		switch {
		case p["state"] != "alive" || p["up"] == false:
			down++
		case p["path"] == "relay":
			relayed++
		}
	}
	return fmt.Sprintf("nodes=%d sites=%d rows=%d relayed=%d down=%d maint=1 drills=2 running=1 lanes=6",
		len(peers)+1, len(sites), len(peers), relayed, down)
}

// TestRenderNoOverlap renders the page of a 40-node mesh in headless
// Chromium at laptop and phone widths and fails if any two texts overlap
// or if any node, site, link state, the maintenance banner or a drill lane
// is missing.
func TestRenderNoOverlap(t *testing.T) {
	browser := findBrowser(t)
	page := Handler(Source{Status: func() any { return fakeStatus(40) }, Drills: fakeRing()})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /check", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(checkPage)) })
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		page.ServeHTTP(frameable{w}, r) // the checker frames the page
	}))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, size := range []string{"1280,900", "375,800"} {
		t.Run(size, func(t *testing.T) {
			shot := filepath.Join(t.TempDir(), "page.png")
			args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
				"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=5000", "--window-size=" + size}
			shotSize := strings.Replace(size, ",900", ",2600", 1)
			shotSize = strings.Replace(shotSize, ",800", ",3600", 1)
			out, err := exec.Command(browser, append(args, "--dump-dom", srv.URL+"/check")...).Output()
			if err != nil {
				t.Fatalf("chromium: %v", err)
			}
			m := regexp.MustCompile(`(?s)<pre id="result">(.*?)</pre>`).FindSubmatch(out)
			if m == nil {
				t.Fatalf("no result in %s", out)
			}
			res := string(m[1])
			if !strings.HasPrefix(res, "checked ") || !strings.HasSuffix(res, "\nOK") {
				t.Errorf("layout at %s:\n%s", size, res)
			}
			if first, _, _ := strings.Cut(res, "\n"); !strings.HasSuffix(first, "; "+wantShown(40)) {
				t.Errorf("page at %s shows %q, want %q", size, first, wantShown(40))
			}
			t.Log(strings.SplitN(res, "\n", 2)[0])
			if err := exec.Command(browser, append(args, "--hide-scrollbars", "--window-size="+shotSize, "--screenshot="+shot, srv.URL+"/")...).Run(); err == nil {
				t.Logf("screenshot: %s", shot)
				if d := os.Getenv("MESHD_SCREENSHOTS"); d != "" {
					b, _ := os.ReadFile(shot)
					os.WriteFile(filepath.Join(d, "page-40-"+strings.Split(size, ",")[0]+".png"), b, 0o644)
				}
			}
		})
	}
}

// frameable drops the headers that forbid framing.
type frameable struct{ http.ResponseWriter }

func (f frameable) WriteHeader(code int) {
	f.Header().Del("X-Frame-Options")
	f.Header().Set("Content-Security-Policy", strings.ReplaceAll(f.Header().Get("Content-Security-Policy"), "frame-ancestors 'none'", "frame-ancestors 'self'"))
	f.ResponseWriter.WriteHeader(code)
}

func (f frameable) Write(b []byte) (int, error) {
	if f.Header().Get("X-Frame-Options") != "" {
		f.WriteHeader(http.StatusOK)
	}
	return f.ResponseWriter.Write(b)
}

// TestPageRefreshes: the page fetches /api/status again by itself and
// redraws: loaded once in headless Chromium (virtual time runs its
// timers), it shows a later status than the first one.
func TestPageRefreshes(t *testing.T) {
	browser := findBrowser(t)
	var calls atomic.Int64
	src := Source{Status: func() any {
		st := fakeStatus(4)
		st["node"].(map[string]any)["name"] = fmt.Sprintf("refresh-%d", calls.Add(1))
		return st
	}}
	srv := httptest.NewServer(newHandler(src, 0)) // every poll computes a new status
	defer srv.Close()
	out, err := exec.Command(browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--user-data-dir="+t.TempDir(), "--virtual-time-budget=7000", "--dump-dom", srv.URL+"/").Output()
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	m := regexp.MustCompile(`<h1 id="title">meshd · refresh-(\d+)</h1>`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no rendered title in %.3000s", out)
	}
	if string(m[1]) == "1" {
		t.Errorf("the page shows the first status only (%d fetched): it did not refresh by itself", calls.Load())
	}
	t.Logf("page shows status %s of %d fetched", m[1], calls.Load())
}
