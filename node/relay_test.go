package node

import (
	"bytes"
	"crypto/rand"
	"io"
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
	dir, err := os.MkdirTemp("", "meshd-relay")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	backend, err := echo.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	ck := make([]byte, 32)
	rand.Read(ck)
	dead := func() netip.AddrPort { // a UDP port nobody listens on
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).AddrPort()
	}

	rc := testConfig(t, dir, "r", "core", ck)
	rc.Relay = config.Relay{Enabled: true, Listen: loop}
	r, _ := New(rc, nil)
	if err := r.Start(); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	join := []string{r.GossipAddr().String()}

	bc := testConfig(t, dir, "b", "cloud", ck)
	bc.Tunnel.Advertise = dead()
	bc.Cluster.Join = join
	bc.Exports = []config.Export{{Name: "echo", Target: backend.Addr(), Weight: 1}}
	b, _ := New(bc, nil)
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	ac := testConfig(t, dir, "a", "onprem", ck)
	ac.Tunnel.Advertise = dead()
	ac.Cluster.Join = join
	ac.Imports = []config.Import{{Name: "echo", Listen: loop}}
	a, _ := New(ac, nil)
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Close()

	deadline := time.Now().Add(20 * time.Second)
	for {
		st := a.Status()
		ok := false
		for _, p := range st.Peers {
			if p.Name == "b" && p.Path == PathRelay && p.RelayVia == "r" {
				ok = true
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no relayed session to b: %+v", st.Peers)
		}
		time.Sleep(50 * time.Millisecond)
	}
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
}
