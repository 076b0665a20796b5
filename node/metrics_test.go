package node

import (
	"bufio"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/testutil"
	"github.com/meshd/meshd/internal/version"
)

// TestMetricsEndpoint: metrics.listen serves Prometheus text with the
// node's series.
func TestMetricsEndpoint(t *testing.T) {
	dir, err := os.MkdirTemp("", "meshd-metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ck := make([]byte, 32)
	rand.Read(ck)
	cfg := testConfig(t, dir, "m", "onprem", ck)
	cfg.Metrics.Listen = "127.0.0.1:0"
	cfg.Imports = []config.Import{{Name: "db", Listen: netip.MustParseAddrPort("127.0.0.1:0"), ConnectTimeout: time.Second}}
	n, _ := New(cfg, nil)
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	resp, err := http.Get("http://" + n.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`meshd_node_info{node="m",site="onprem",version="` + version.Get().Short() + `"} 1`, `meshd_peers{state="alive"} 0`,
		`meshd_peer_transitions_total{site="onprem",to="down"} 0`, `meshd_gossip_members 1`, `meshd_relay_connected 0`,
		// A fresh node's event counters exist at 0 (increase() sees the first event).
		`meshd_failovers_total{service="db"} 0`, `meshd_import_connections_total{import="db",result="failed"} 0`,
		`meshd_import_connect_seconds_count{import="db"} 0`, `meshd_relay_server_packets_total{result="forwarded"} 0`,
		"go_goroutines",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// The live node's registry is promlint-clean.
	problems, err := promtestutil.GatherAndLint(n.metrics.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// TestMetricsServerBoundsConnections: beyond the cap, as many connections
// are closed at once (the oldest silent ones, to make room), one that
// never sends a request is closed after the
// header timeout, 200 idle keep-alive clients are all closed after the
// idle timeout, and oversized headers are refused (README "Hostile input and limits"). The limits
// are shortened; the node's own are checked for sanity.
func TestMetricsServerBoundsConnections(t *testing.T) {
	if l := metricsLimits; l.readHeader <= 0 || l.read < l.readHeader || l.write <= 0 || l.idle <= 0 || l.idle > time.Minute ||
		l.maxHeaderBytes <= 0 || l.maxHeaderBytes > 64<<10 || l.maxConns <= 0 || l.maxConns > 1024 {
		t.Fatalf("metrics limits %+v", l)
	}
	n := &Node{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	lim := httpLimits{readHeader: 300 * time.Millisecond, read: time.Second, write: time.Second,
		idle: 300 * time.Millisecond, maxHeaderBytes: 1 << 10, maxConns: 20}

	closed := func(c net.Conn, within time.Duration) bool {
		c.SetReadDeadline(time.Now().Add(within))
		_, err := io.Copy(io.Discard, c) // EOF (nil) or reset: closed; timeout: open
		return err == nil || !isTimeout(err)
	}
	dialN := func(addr string, k int) []net.Conn {
		var cs []net.Conn
		for i := 0; i < k; i++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			cs = append(cs, c)
			t.Cleanup(func() { c.Close() })
		}
		return cs
	}

	t.Run("cap and header timeout", func(t *testing.T) {
		lim := lim
		lim.readHeader = 2 * time.Second // longer than checking every connection takes
		ms, err := serveHTTP(n, "127.0.0.1:0", ok, lim)
		if err != nil {
			t.Fatal(err)
		}
		defer ms.close()
		const extra = 10
		conns := dialN(ms.addr, lim.maxConns+extra)
		shut := 0
		for _, c := range conns {
			if closed(c, 20*time.Millisecond) {
				shut++
			}
		}
		if shut != extra {
			t.Fatalf("%d of %d connections closed at once, want as many as beyond the cap, %d", shut, len(conns), extra)
		}
		for _, c := range conns {
			if !closed(c, lim.readHeader+2*time.Second) {
				t.Fatal("a silent connection outlived the header timeout")
			}
		}
		resp, err := http.Get("http://" + ms.addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d after the flood", resp.StatusCode)
		}
		big, _ := http.NewRequest("GET", "http://"+ms.addr+"/", nil)
		big.Header.Set("X-Big", strings.Repeat("a", 8<<10))
		if resp, err := http.DefaultClient.Do(big); err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("oversized header: %v %v", resp, err)
		}
	})

	t.Run("idle keep-alive clients", func(t *testing.T) {
		l := lim
		l.maxConns = 256
		ms, err := serveHTTP(n, "127.0.0.1:0", ok, l)
		if err != nil {
			t.Fatal(err)
		}
		defer ms.close()
		var conns []net.Conn
		for range 200 {
			c := dialN(ms.addr, 1)[0] // one at a time: each sends its request before the header timeout
			conns = append(conns, c)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: m\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != 200 || resp.Close {
				t.Fatalf("keep-alive request: %v %v", resp, err)
			}
			resp.Body.Close()
		}
		start := time.Now()
		for _, c := range conns {
			if !closed(c, l.idle+2*time.Second-time.Since(start)) {
				t.Fatalf("an idle keep-alive connection is still open %v later (idle timeout %v)", time.Since(start), l.idle)
			}
		}
		for end := time.Now().Add(time.Second); ms.open() != 0 && time.Now().Before(end); {
			time.Sleep(10 * time.Millisecond) // the server counts a close just after it closed
		}
		if got := ms.open(); got != 0 {
			t.Errorf("%d connections counted open after all closed", got)
		}
	})

	// Connections someone else holds open (silent ones, idle keep-alive
	// ones) cannot lock a scraper out: when the server is full, a new
	// connection closes the one waiting longest for a request. Only when
	// every connection is serving a request is the new one closed at once.
	t.Run("room for a new client", func(t *testing.T) {
		block := make(chan struct{})
		var serving atomic.Int64
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/block" {
				serving.Add(1)
				<-block
			}
			io.WriteString(w, "ok")
		})
		l := lim
		l.readHeader, l.read, l.write, l.idle = 10*time.Second, 10*time.Second, 10*time.Second, 10*time.Second
		ms, err := serveHTTP(n, "127.0.0.1:0", h, l)
		if err != nil {
			t.Fatal(err)
		}
		defer ms.close()
		unblock := sync.OnceFunc(func() { close(block) })
		defer unblock()
		request := func(c net.Conn, path string) {
			t.Helper()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: m\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
		}
		silent := dialN(ms.addr, l.maxConns/2)
		var idle []net.Conn
		for range l.maxConns - len(silent) {
			c := dialN(ms.addr, 1)[0]
			request(c, "/")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("keep-alive request: %v %v", resp, err)
			}
			resp.Body.Close()
			idle = append(idle, c)
		}
		testutil.Until(t, 2*time.Second, "the server to be full", func() bool { return ms.open() == l.maxConns })

		scraper := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := scraper.Get("http://" + ms.addr + "/metrics")
		if err != nil {
			t.Fatalf("scrape while %d connections are held open: %v", l.maxConns, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("scrape while full: status %d", resp.StatusCode)
		}
		if !closed(silent[0], time.Second) {
			t.Fatal("the oldest silent connection was not closed to make room")
		}
		for _, c := range append(silent[1:], idle...) {
			if closed(c, 10*time.Millisecond) {
				t.Fatal("a connection other than the oldest was closed")
			}
		}
		if got := ms.evicted.Load(); got != 1 {
			t.Fatalf("%d connections closed to make room, want 1", got)
		}

		// Every connection serving a request: a new one is closed at once.
		for _, c := range append(silent, idle...) {
			c.Close()
		}
		testutil.Until(t, 2*time.Second, "the held connections to end", func() bool { return ms.open() == 0 })
		for _, c := range dialN(ms.addr, l.maxConns) {
			request(c, "/block")
		}
		testutil.Until(t, 2*time.Second, "every connection serving", func() bool { return serving.Load() == int64(l.maxConns) })
		c := dialN(ms.addr, 1)[0]
		if !closed(c, time.Second) {
			t.Fatal("a connection beyond the cap stayed open while every one was serving")
		}
		if got := ms.evicted.Load(); got != 1 {
			t.Fatalf("a connection serving a request was closed to make room (%d evicted)", got)
		}
		unblock()
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
