package node

import (
	"bytes"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/echo"
)

// TestRelayWhenDirectFails: A and B advertise tunnel addresses nobody
// listens on, so no direct UDP path exists between them (or to R); R runs
// a relay. Probes find the direct paths dead, traffic moves to the relay,
// and an import on A reaches B's export through it, bytes intact.
func TestRelayWhenDirectFails(t *testing.T) {
	backend, err := echo.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	a, stop := relayMesh(t, backend.Addr(), nil)
	defer stop()
	payload := make([]byte, 4<<20)
	rand.Read(payload)
	c, err := net.Dial("tcp", a.ImportAddr("echo"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	go func() { c.Write(payload); c.(*net.TCPConn).CloseWrite() }()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("relayed echo: %d of %d bytes, %v", len(got), len(payload), err)
	}
	// A's metrics show the relay in use (README "Metrics"; the
	// MeshdRelayInUseTooLong alert reads meshd_peer_path).
	for _, w := range []struct {
		name   string
		labels []string
		ok     func(float64) bool
	}{
		{"meshd_relay_connected", nil, func(v float64) bool { return v == 1 }},
		{"meshd_relay_client_packets_total", []string{"kind", "sent"}, func(v float64) bool { return v > 0 }},
		{"meshd_relay_client_packets_total", []string{"kind", "received"}, func(v float64) bool { return v > 0 }},
		{"meshd_peer_path", []string{"peer", "b", "site", "cloud", "path", "relay"}, func(v float64) bool { return v == 1 }},
		{"meshd_peer_path", []string{"peer", "b", "site", "cloud", "path", "direct"}, func(v float64) bool { return v == 0 }},
		{"meshd_peers_by_path", []string{"path", "relay"}, func(v float64) bool { return v >= 1 }},
	} {
		if v := metricValue(t, a, w.name, w.labels...); !w.ok(v) {
			t.Errorf("%s%v = %v on the relayed importer", w.name, w.labels, v)
		}
	}
}

// relayMesh starts a relay node r and nodes a (import echo) and b (export
// echo → target) whose advertised tunnel addresses are dead, and waits
// until a reaches b through the relay.
func relayMesh(tb testing.TB, target string, lg *slog.Logger) (*Node, func()) {
	tb.Helper()
	dir, err := os.MkdirTemp("", "meshd-relay")
	if err != nil {
		tb.Fatal(err)
	}
	var stops []func()
	stop := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		os.RemoveAll(dir)
	}
	ck := make([]byte, 32)
	rand.Read(ck)
	dead := func() netip.AddrPort { // a UDP port nobody listens on
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			tb.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	t := &testing.T{}
	start := func(cfg *config.Config) *Node {
		n, err := New(cfg, lg)
		if err != nil {
			tb.Fatal(err)
		}
		if err := n.Start(); err != nil {
			stop()
			tb.Fatal(err)
		}
		stops = append(stops, func() { n.Close() })
		return n
	}
	rc := testConfig(t, dir, "r", "core", ck)
	rc.Relay = config.Relay{Enabled: true, Listen: loop}
	r := start(rc)
	join := []string{r.GossipAddr().String()}

	bc := testConfig(t, dir, "b", "cloud", ck)
	bc.Tunnel.Advertise = dead()
	bc.Cluster.Join = join
	bc.Exports = []config.Export{{Name: "echo", Target: target, Weight: 1}}
	start(bc)

	ac := testConfig(t, dir, "a", "onprem", ck)
	ac.Tunnel.Advertise = dead()
	ac.Cluster.Join = join
	ac.Imports = []config.Import{{Name: "echo", Listen: loop}}
	a := start(ac)

	deadline := time.Now().Add(20 * time.Second)
	for {
		ok := false
		for _, p := range a.Status().Peers {
			if p.Name == "b" && p.Path == PathRelay && p.RelayVia == "r" && p.RTT() > 0 {
				ok = true
			}
		}
		if ok {
			return a, stop
		}
		if time.Now().After(deadline) {
			stop()
			tb.Fatalf("no relayed session to b: %+v", a.Status().Peers)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
