package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/meshd/meshd/internal/statuspage"
	"github.com/meshd/meshd/node"
)

// TestStatusPage runs a 4-node mesh in two sites, with the status page on
// cloud-1, and a drill of site onprem from cloud-1. While the drill runs:
// /api/status and /api/drills carry what the page needs, and headless
// Chromium renders the page with every site and node, the cut links shown
// as down and the running drill's timeline (a screenshot is saved in the
// test's temp dir). After it: the finished drill is in /api/drills, and
// the Grafana dashboard and alert rules in examples/ use only metric names
// that the node serves.
func TestStatusPage(t *testing.T) {
	c := newCluster(t)
	beOn := startBackend(t, "127.0.0.1:0")
	beCl := startBackend(t, "127.0.0.1:0")
	c1 := c.start(nodeSpec{Name: "cloud-1", Site: "cloud", Metrics: true,
		Imports: []importSpec{{Name: "echo", Sites: []string{"onprem", "cloud"}}}})
	o1 := c.start(nodeSpec{Name: "onprem-1", Site: "onprem", Exports: []exportSpec{{Name: "echo", Target: beOn.Addr()}}})
	o2 := c.start(nodeSpec{Name: "onprem-2", Site: "onprem", Exports: []exportSpec{{Name: "echo", Target: beOn.Addr()}}})
	c2 := c.start(nodeSpec{Name: "cloud-2", Site: "cloud", Metrics: true, Exports: []exportSpec{{Name: "echo", Target: beCl.Addr()}}})
	all := []*meshNode{c1, o1, o2, c2}
	waitMesh(t, 30*time.Second, all...)
	base := "http://" + c1.Metrics
	waitFor(t, 15*time.Second, "cloud-1's page to show every peer up with an RTT", func() (bool, string) {
		var st node.Status
		if err := getJSON(base+"/api/status", &st); err != nil {
			return false, err.Error()
		}
		for _, n := range all[1:] {
			if p, ok := peer(st, n.Name); !ok || !p.Up || p.RTT() <= 0 {
				return false, fmt.Sprintf("%s: %+v", n.Name, p)
			}
		}
		return true, ""
	})
	if err := exchange(c1.Imports["echo"], 0, 1, 64, 10*time.Second); err != nil {
		t.Fatal(err)
	}

	// /api/status is the control socket's status (docs/formats.md), with the fields
	// the page reads.
	t.Run("api", func(t *testing.T) {
		raw := map[string]any{}
		if err := getJSON(base+"/api/status", &raw); err != nil {
			t.Fatal(err)
		}
		for _, path := range pageStatusFields {
			if _, ok := lookup(raw, path); !ok {
				t.Errorf("/api/status lacks %s, which the page reads", path)
			}
		}
		var page node.Status
		if err := getJSON(base+"/api/status", &page); err != nil {
			t.Fatal(err)
		}
		ctl := status(t, c1)
		names := func(st node.Status) []string {
			var out []string
			for _, p := range st.Peers {
				out = append(out, p.Name+"/"+p.Site+"/"+p.State)
			}
			slices.Sort(out)
			return out
		}
		if page.Node.Name != "cloud-1" || page.Node.Site != "cloud" || !slices.Equal(names(page), names(ctl)) {
			t.Errorf("/api/status %+v %v, control socket %+v %v", page.Node, names(page), ctl.Node, names(ctl))
		}
		if s, ok := service(page, "echo"); !ok || len(s.Endpoints) != 3 {
			t.Errorf("/api/status service echo: %+v", s)
		}
		// The page's status may be up to a second old.
		waitFor(t, 5*time.Second, "/api/status to count the import's connection", func() (bool, string) {
			var st node.Status
			if err := getJSON(base+"/api/status", &st); err != nil {
				return false, err.Error()
			}
			return len(st.Imports) == 1 && st.Imports[0].Total >= 1, fmt.Sprintf("%+v", st.Imports)
		})
		var dr statuspage.Drills
		if err := getJSON(base+"/api/drills", &dr); err != nil {
			t.Fatal(err)
		}
		if dr.Running != nil || dr.Drills == nil || len(dr.Drills) != 0 {
			t.Errorf("/api/drills before any drill: %+v", dr)
		}
	})

	// The drill, in the background.
	const dur = 12 * time.Second // room for a slow browser start on a loaded machine
	var wg sync.WaitGroup
	var drillOut, drillErr string
	var drillCode int
	wg.Add(1)
	go func() {
		defer wg.Done()
		drillOut, drillErr, drillCode = runMeshd(t, dur+60*time.Second, "drill", "--site", "onprem", "--duration", dur.String(), "--json", "--config", c1.Config)
	}()
	defer wg.Wait()
	waitFor(t, dur-time.Second, "the page's APIs to show the running drill and the onprem links down", func() (bool, string) {
		var dr statuspage.Drills
		if err := getJSON(base+"/api/drills", &dr); err != nil {
			return false, err.Error()
		}
		if dr.Running == nil || len(dr.Running.Services) != 1 || dr.Running.Services[0].RTOMS < 0 {
			return false, fmt.Sprintf("drills %+v", dr.Running)
		}
		var st node.Status
		if err := getJSON(base+"/api/status", &st); err != nil {
			return false, err.Error()
		}
		for _, n := range []string{"onprem-1", "onprem-2"} {
			if p, _ := peer(st, n); p.Up {
				return false, n + " still up"
			}
		}
		return true, ""
	})

	t.Run("browser", func(t *testing.T) {
		browser := findChromium()
		if browser == "" {
			t.Skip("no headless browser: install Debian's chromium package (.ci/run does when root) to test the rendered page")
		}
		dom := renderDOM(t, browser, base+"/")
		if !strings.Contains(dom, `data-loaded="yes"`) {
			t.Fatalf("the page's script did not render (no data-loaded): %.2000s", dom)
		}
		for _, s := range []string{"cloud", "onprem"} {
			if !strings.Contains(dom, `class="site" data-site="`+s+`"`) {
				t.Errorf("site %s not shown", s)
			}
		}
		for _, n := range all {
			if !regexp.MustCompile(`class="node[^"]*" data-node="` + n.Name + `"`).MatchString(dom) {
				t.Errorf("node %s not shown in its site", n.Name)
			}
		}
		for _, n := range []string{"onprem-1", "onprem-2"} {
			if !strings.Contains(dom, `data-peer="`+n+`" data-link="down"`) {
				t.Errorf("the cut link to %s is not shown as down", n)
			}
			if !strings.Contains(dom, `data-node="`+n+`" data-link="down"`) {
				t.Errorf("node %s is not marked down in its site", n)
			}
		}
		if !strings.Contains(dom, `data-peer="cloud-2" data-link="ok"`) {
			t.Errorf("the link to cloud-2 (not cut) is not shown as up")
		}
		if !strings.Contains(dom, `class="drill" data-drill-site="onprem" data-running="yes"`) {
			t.Errorf("the running drill is not shown")
		}
		for _, want := range []string{`class="lanewrap" data-service="echo"`, `data-kind="served" data-site="onprem"`,
			`data-kind="served" data-site="cloud"`, `class="cut"`, `class="tick rto"`, `data-endpoint="onprem-1"`, `data-import="echo"`} {
			if !strings.Contains(dom, want) {
				t.Errorf("page lacks %s", want)
			}
		}
		if t.Failed() {
			t.Logf("DOM: %s", dom)
		}
		shot := screenshot(t, browser, base+"/", "drill-running.png")
		if os.Getenv("MESHD_SCREENSHOTS") != "" {
			copyFile(t, shot, filepath.Join(os.Getenv("MESHD_SCREENSHOTS"), "drill-running.png"))
		}
		t.Logf("screenshot of the page during the drill: %s", shot)
	})

	wg.Wait()
	if drillCode != 0 {
		t.Fatalf("meshd drill: exit %d\n%s\n%s", drillCode, drillOut, drillErr)
	}
	t.Run("finished drill", func(t *testing.T) {
		var dr statuspage.Drills
		if err := getJSON(base+"/api/drills", &dr); err != nil {
			t.Fatal(err)
		}
		if dr.Running != nil || len(dr.Drills) != 1 {
			t.Fatalf("/api/drills after the drill: running %v, %d finished", dr.Running, len(dr.Drills))
		}
		d := dr.Drills[0]
		if d.Site != "onprem" || d.DurationMS < dur.Milliseconds() || len(d.Services) != 1 || d.Started.IsZero() {
			t.Fatalf("drill %+v", d)
		}
		s := d.Services[0]
		var sites []string
		for _, e := range s.Timeline {
			if e.EndMS < e.AtMS {
				t.Errorf("timeline run ends before it starts: %+v", e)
			}
			if e.Site != "" && !slices.Contains(sites, e.Site) {
				sites = append(sites, e.Site)
			}
		}
		if s.RTOMS < 0 || s.FailbackMS < 0 || !slices.Contains(sites, "onprem") || !slices.Contains(sites, "cloud") {
			t.Errorf("service %+v, sites served %v", s, sites)
		}
		browser := findChromium()
		if browser == "" {
			return
		}
		dom := renderDOM(t, browser, base+"/")
		for _, want := range []string{`class="drill" data-drill-site="onprem" data-running="no"`, `class="restore"`, `class="tick rto"`, `class="tick failback"`} {
			if !strings.Contains(dom, want) {
				t.Errorf("page after the drill lacks %s", want)
			}
		}
		shot := screenshot(t, browser, base+"/", "drill-done.png")
		if os.Getenv("MESHD_SCREENSHOTS") != "" {
			copyFile(t, shot, filepath.Join(os.Getenv("MESHD_SCREENSHOTS"), "drill-done.png"))
		}
	})

	// The events of this test reached cloud-1's metrics: the client
	// connection's connect latency, the onprem peers going down and up
	// again, and the drill's result and RTO.
	t.Run("event metrics", func(t *testing.T) {
		if n := scrape(t, c1.Metrics, "meshd_import_connect_seconds_count", "import", "echo"); n < 1 {
			t.Errorf("meshd_import_connect_seconds_count{import=echo} = %v after a connection", n)
		}
		for _, to := range []string{"down", "up"} {
			if n := scrape(t, c1.Metrics, "meshd_peer_transitions_total", "site", "onprem", "to", to); n < 1 {
				t.Errorf("meshd_peer_transitions_total{site=onprem,to=%s} = %v after the drill", to, n)
			}
		}
		ok := scrape(t, c1.Metrics, "meshd_drills_total", "site", "onprem", "result", "ok")
		failed := scrape(t, c1.Metrics, "meshd_drills_total", "site", "onprem", "result", "failed")
		if ok < 0 || failed < 0 || ok+failed != 1 {
			t.Errorf("meshd_drills_total{site=onprem}: ok %v, failed %v; want one drill", ok, failed)
		}
		var dr statuspage.Drills
		if err := getJSON(base+"/api/drills", &dr); err != nil || len(dr.Drills) != 1 || len(dr.Drills[0].Services) != 1 {
			t.Fatalf("/api/drills: %+v %v", dr, err)
		}
		want := float64(dr.Drills[0].Services[0].RTOMS) / 1000
		if got := scrape(t, c1.Metrics, "meshd_drill_rto_seconds", "site", "onprem", "service", "echo"); math.Abs(got-want) > 0.0015 {
			t.Errorf("meshd_drill_rto_seconds{site=onprem,service=echo} = %v, the report says %v s", got, want)
		}
	})

	t.Run("examples use served metrics", func(t *testing.T) {
		// Per-peer series are bounded by the sessions a node holds, not the
		// mesh: cloud-2 exchanges traffic with cloud-1 only (SPEC §12).
		for _, p := range peerLabels(t, "http://"+c2.Metrics+"/metrics") {
			if p != "cloud-1" {
				t.Errorf("cloud-2 serves per-peer series for %s, with which it exchanges no traffic", p)
			}
		}
		if ps := peerLabels(t, base+"/metrics"); len(ps) == 0 {
			t.Errorf("cloud-1, importing from all three exporters, serves no per-peer series")
		}
		// An importer (after a drill) and an exporter serve every family.
		served := scrapeFamilies(t, base+"/metrics")
		for name := range scrapeFamilies(t, "http://"+c2.Metrics+"/metrics") {
			served[name] = true
		}
		for _, file := range []string{"../examples/grafana/meshd.json", "../examples/prometheus/alerts.yml"} {
			exprs := exampleExprs(t, file)
			if len(exprs) < 5 {
				t.Fatalf("%s: only %d expressions", file, len(exprs))
			}
			checked := map[string]bool{}
			for _, e := range exprs {
				for _, name := range metricNames(e) {
					if name == "up" || !strings.HasPrefix(name, "meshd_") {
						continue // Prometheus's own series for the scrape of the node; label names
					}
					checked[name] = true
					if !served[familyOf(name, served)] {
						t.Errorf("%s uses %s, which the node does not serve (expr %q)", file, name, e)
					}
				}
			}
			if len(checked) < 5 {
				t.Errorf("%s: only %d meshd_ names found in %d expressions: %v", file, len(checked), len(exprs), checked)
			}
		}
		promtool, err := exec.LookPath("promtool")
		if err != nil {
			t.Log("promtool not installed (Debian's prometheus package has it): skipping `promtool check rules`")
			return
		}
		out, err := exec.Command(promtool, "check", "rules", "../examples/prometheus/alerts.yml").CombinedOutput()
		if err != nil {
			t.Errorf("promtool check rules: %v\n%s", err, out)
		}
	})
}

// pageStatusFields are the /api/status fields the page's script reads.
var pageStatusFields = []string{
	"node.name", "node.site", "node.version", "node.mode", "node.mesh_ip", "node.relay", "node.maintenance",
	"peers.0.name", "peers.0.site", "peers.0.state", "peers.0.path", "peers.0.up", "peers.0.session", "peers.0.rtt_ms",
	"peers.0.streams", "peers.0.endpoint", "peers.0.relay_via",
	"services.0.name", "services.0.endpoints.0.node", "services.0.endpoints.0.site",
	"services.0.endpoints.0.healthy", "services.0.endpoints.0.active",
	"imports.0.name", "imports.0.listen", "imports.0.endpoint", "imports.0.active", "imports.0.total", "imports.0.failed",
}

// lookup follows a dotted path (numbers index arrays) through decoded JSON.
func lookup(v any, path string) (any, bool) {
	for _, k := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[k]; !ok {
				return nil, false
			}
		case []any:
			var i int
			if _, err := fmt.Sscan(k, &i); err != nil || i >= len(x) {
				return nil, false
			}
			v = x[i]
		default:
			return nil, false
		}
	}
	return v, true
}

func getJSON(url string, v any) error {
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 8<<20)).Decode(v)
}

func findChromium() string {
	for _, b := range []string{"chromium", "chromium-browser", "google-chrome", "headless_shell"} {
		if p, err := exec.LookPath(b); err == nil {
			return p
		}
	}
	return ""
}

// chromiumArgs run a throwaway headless browser: its own profile dir, no
// sandbox (tests run as root), nothing fetched but the page.
func chromiumArgs(t *testing.T, extra ...string) []string {
	return append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--disable-extensions", "--disable-background-networking", "--disable-sync",
		"--user-data-dir=" + t.TempDir()}, extra...)
}

// renderDOM loads url, lets its scripts run (virtual time: the page's
// fetches complete and it renders) and returns the serialized DOM.
func renderDOM(t *testing.T, browser, url string) string {
	t.Helper()
	out, err := runBrowser(t, browser, chromiumArgs(t, "--virtual-time-budget=4000", "--window-size=1280,1600", "--dump-dom", url)...)
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v\n%s", err, out)
	}
	return out
}

// screenshot saves a PNG of url in the test's temp dir and returns its path.
func screenshot(t *testing.T, browser, url, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	out, err := runBrowser(t, browser, chromiumArgs(t, "--virtual-time-budget=4000", "--window-size=1280,1800", "--hide-scrollbars", "--screenshot="+p, url)...)
	if err != nil {
		t.Fatalf("chromium --screenshot: %v\n%s", err, out)
	}
	if fi, err := os.Stat(p); err != nil || fi.Size() < 1000 {
		t.Fatalf("screenshot %s: %v %v", p, fi, err)
	}
	return p
}

func runBrowser(t *testing.T, browser string, args ...string) (string, error) {
	cmd := exec.Command(browser, args...)
	cmd.SysProcAttr = childAttr()
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return stdout.String() + stderr.String(), err
		}
		return stdout.String(), nil
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		return stderr.String(), fmt.Errorf("%s did not finish in 30s", filepath.Base(browser))
	}
}

// scrapeFamilies returns the metric family names the node serves, and
// logs how many meshd_ series it serves and how many of them are per peer.
func scrapeFamilies(t *testing.T, url string) map[string]bool {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/plain")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	series, perPeer := 0, 0
	for name, f := range fams {
		out[name] = true
		if !strings.HasPrefix(name, "meshd_") {
			continue
		}
		for _, m := range f.GetMetric() {
			n := 1
			if h := m.GetHistogram(); h != nil {
				b := h.GetBucket()
				n = len(b) + 2 // _bucket, _sum, _count
				if len(b) == 0 || !math.IsInf(b[len(b)-1].GetUpperBound(), 1) {
					n++ // the +Inf bucket
				}
			}
			series += n
			for _, l := range m.GetLabel() {
				if l.GetName() == "peer" {
					perPeer += n
				}
			}
		}
	}
	t.Logf("%s: %d meshd_ series, %d of them per peer", url, series, perPeer)
	return out
}

// peerLabels returns the values of the peer label in a node's meshd_
// series, sorted, each once.
func peerLabels(t *testing.T, url string) []string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/plain")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	tp := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := tp.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for name, f := range fams {
		if !strings.HasPrefix(name, "meshd_") {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "peer" && !slices.Contains(out, l.GetValue()) {
					out = append(out, l.GetValue())
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// familyOf maps a histogram's _bucket/_sum/_count series to its family.
func familyOf(name string, served map[string]bool) string {
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if f, ok := strings.CutSuffix(name, suf); ok && served[f] {
			return f
		}
	}
	return name
}

// exampleExprs returns the PromQL expressions of a Grafana dashboard
// (targets[].expr, and the template variables' queries) or of a Prometheus
// rules file (rules[].expr).
func exampleExprs(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var exprs []string
	if strings.HasSuffix(file, ".json") {
		var walk func(v any)
		walk = func(v any) {
			switch x := v.(type) {
			case map[string]any:
				for k, vv := range x {
					if s, ok := vv.(string); ok && (k == "expr" || k == "definition") {
						exprs = append(exprs, s)
					}
					walk(vv)
				}
			case []any:
				for _, vv := range x {
					walk(vv)
				}
			}
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		walk(v)
		return exprs
	}
	var rf struct {
		Groups []struct {
			Rules []struct {
				Expr string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	return exprs
}

var (
	promIdent   = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promStrings = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|\{[^}]*\}|\[[^\]]*\]`)
)

// metricNames returns the metric names in a PromQL expression: the
// identifiers outside label matchers, strings and ranges that are not
// functions, aggregations, keywords or label names after by/without.
func metricNames(expr string) []string {
	e := promStrings.ReplaceAllString(expr, " ")
	e = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`).ReplaceAllString(e, " ")
	var out []string
	for _, loc := range promIdent.FindAllStringIndex(e, -1) {
		id := e[loc[0]:loc[1]]
		rest := strings.TrimLeft(e[loc[1]:], " \t\n")
		if strings.HasPrefix(rest, "(") || promKeywords[id] || strings.HasPrefix(id, "$") {
			continue // a function or aggregation call, or a keyword
		}
		if loc[0] > 0 && (e[loc[0]-1] == '$' || e[loc[0]-1] == '.') {
			continue // a Grafana variable or a number's fraction
		}
		out = append(out, id)
	}
	return out
}

var promKeywords = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true,
	"group_right": true, "bool": true, "and": true, "or": true, "unless": true, "offset": true}

// copyFile copies a screenshot out of the test's temp dir (set
// MESHD_SCREENSHOTS=DIR to keep them).
func copyFile(t *testing.T, from, to string) {
	b, err := os.ReadFile(from)
	if err == nil {
		err = os.WriteFile(to, b, 0o644)
	}
	if err != nil {
		t.Errorf("keep screenshot: %v", err)
	}
}

// TestMetricNames: the examples' check finds every meshd_ metric name in
// an expression (so a name the node does not serve cannot slip through)
// and no label name or string as one (other identifiers it may return,
// such as a duration's unit, are not meshd_ names and are ignored).
func TestMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`up{job="meshd"} == 0`:                 nil,
		`sum by (meshd_x) (up{job="meshd_y"})`: nil,
		`sum by (instance, import) (rate(meshd_import_connections_total{result="failed"}[5m])) / sum by (instance, import) (rate(meshd_bogus_total[5m])) > 0.05`: {
			"meshd_import_connections_total", "meshd_bogus_total"},
		`histogram_quantile(0.99, sum by (le, import) (rate(meshd_import_connect_seconds_bucket{instance=~"$instance"}[$__rate_interval])))`: {
			"meshd_import_connect_seconds_bucket"},
		`max by (instance, peer, site) (meshd_peer_path{path="relay"}) == 1 and on (instance) meshd_node_info offset 5m`: {
			"meshd_peer_path", "meshd_node_info"},
		`label_values(meshd_node_info, instance)`: {"meshd_node_info"},
	} {
		var got []string
		for _, n := range metricNames(expr) {
			if strings.HasPrefix(n, "meshd_") {
				got = append(got, n)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("metricNames(%q) = %q, want %q", expr, got, want)
		}
	}
}
