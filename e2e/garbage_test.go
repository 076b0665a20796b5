package e2e

import (
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/node"
)

// TestWrongStreamPeer: garbage sent to a node's gossip TCP and UDP port,
// its WireGuard UDP port and its control socket neither crashes it nor
// breaks the mesh.
func TestWrongStreamPeer(t *testing.T) {
	c := newCluster(t)
	be := startBackend(t, "127.0.0.1:0")
	a := c.start(nodeSpec{Name: "imp-1", Site: "onprem",
		Imports: []importSpec{{Name: "echo", Sites: []string{"cloud"}}}})
	b := c.start(nodeSpec{Name: "exp-1", Site: "cloud",
		Exports: []exportSpec{{Name: "echo", Target: be.Addr()}}})
	waitMesh(t, 20*time.Second, a, b)
	imp := a.Imports["echo"]
	waitFor(t, 10*time.Second, "echo to be importable", func() (bool, string) {
		err := exchange(imp, 0, 1, 64, 5*time.Second)
		return err == nil, fmt.Sprint(err)
	})

	var wg sync.WaitGroup
	for _, n := range []*meshNode{a, b} {
		wg.Add(4)
		go func() { defer wg.Done(); garbageTCP(addr(n.GossipPort), 30) }()
		go func() { defer wg.Done(); garbageUDP(addr(n.GossipPort), 500) }()
		go func() { defer wg.Done(); garbageWireGuard(addr(n.TunnelPort), 500) }()
		go func() { defer wg.Done(); garbageUnix(filepath.Join(n.Dir, "meshd.sock"), 20) }()
	}
	wg.Wait()

	for _, n := range []*meshNode{a, b} {
		if !n.running() {
			t.Fatalf("%s exited after garbage input", n.Name)
		}
	}
	waitMesh(t, 15*time.Second, a, b)
	// Data still flows, including on new connections.
	for i := range 20 {
		if err := exchange(imp, i, 5, 4<<10, 20*time.Second); err != nil {
			t.Fatalf("after garbage input: %v", err)
		}
	}
	sent, got, n := bulkEcho(t, imp, 4<<20, 30*time.Second)
	if n != 4<<20 || string(sent) != string(got) {
		t.Fatalf("bulk echo after garbage input: %d bytes, SHA-256 match %v", n, string(sent) == string(got))
	}
	st := status(t, a)
	if p, _ := peer(st, "exp-1"); p.State != "alive" || p.Path != node.PathDirect {
		t.Fatalf("imp-1 sees exp-1 %+v", p)
	}
	for _, n := range []*meshNode{a, b} {
		if !n.running() {
			t.Fatalf("%s exited", n.Name)
		}
		if k := countLines(n.logText(), "panic"); k > 0 {
			t.Errorf("%s logged a panic", n.Name)
		}
	}
}

// garbageTCP opens conns connections to address and writes random bytes of
// random lengths (some starting like memberlist messages), then hangs up.
func garbageTCP(address string, conns int) {
	for i := range conns {
		cn, err := net.DialTimeout("tcp", address, 2*time.Second)
		if err != nil {
			continue
		}
		cn.SetDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, rand.IntN(64<<10)+1)
		crand.Read(buf)
		buf[0] = byte(i % 16) // memberlist message types are small numbers
		cn.Write(buf)
		if i%3 == 0 {
			// Also leave some hanging around half-read for a moment.
			var one [1]byte
			cn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			cn.Read(one[:])
		}
		cn.Close()
	}
}

// garbageUDP sends n random datagrams to address.
func garbageUDP(address string, n int) {
	cn, err := net.Dial("udp", address)
	if err != nil {
		return
	}
	defer cn.Close()
	for i := range n {
		buf := make([]byte, rand.IntN(1400)+1)
		crand.Read(buf)
		buf[0] = byte(i % 16)
		cn.Write(buf)
		if i%50 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
}

// garbageWireGuard sends n datagrams to a WireGuard port: random bytes,
// and random bodies with the headers and sizes of the four WireGuard
// message types (initiation 148, response 92, cookie 64, transport >= 32).
func garbageWireGuard(address string, n int) {
	cn, err := net.Dial("udp", address)
	if err != nil {
		return
	}
	defer cn.Close()
	sizes := []int{0, 148, 92, 64, 32 + 16*rand.IntN(80)}
	for i := range n {
		typ := i % 5
		size := sizes[typ]
		if typ == 0 {
			size = rand.IntN(1400) + 1
		}
		buf := make([]byte, size)
		crand.Read(buf)
		if typ > 0 {
			binary.LittleEndian.PutUint32(buf, uint32(typ))
		}
		cn.Write(buf)
		if i%50 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
}

// garbageUnix writes random bytes and broken HTTP to a control socket.
func garbageUnix(path string, conns int) {
	for i := range conns {
		cn, err := net.DialTimeout("unix", path, 2*time.Second)
		if err != nil {
			continue
		}
		cn.SetDeadline(time.Now().Add(2 * time.Second))
		if i%2 == 0 {
			buf := make([]byte, rand.IntN(8<<10)+1)
			crand.Read(buf)
			cn.Write(buf)
		} else {
			fmt.Fprintf(cn, "GET /status HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n")
		}
		var b [512]byte
		cn.Read(b[:])
		cn.Close()
	}
}
