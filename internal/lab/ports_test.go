package lab

import (
	"net"
	"testing"
)

// TestFreePorts: the ports are distinct, bindable for TCP and UDP, and
// never handed out twice in one process.
func TestFreePorts(t *testing.T) {
	a, err := FreePorts(20)
	if err != nil {
		t.Fatal(err)
	}
	b, err := FreePorts(20)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range append(a, b...) {
		if seen[p] {
			t.Fatalf("port %d handed out twice: %v %v", p, a, b)
		}
		seen[p] = true
		ln, err := net.Listen("tcp", Loopback(p))
		if err != nil {
			t.Fatalf("port %d not free for TCP: %v", p, err)
		}
		ln.Close()
		pc, err := net.ListenPacket("udp", Loopback(p))
		if err != nil {
			t.Fatalf("port %d not free for UDP: %v", p, err)
		}
		pc.Close()
	}
	if len(a) != 20 || len(b) != 20 {
		t.Fatalf("got %d and %d ports, want 20 each", len(a), len(b))
	}
}

// TestFreePortsSkipsUDPTaken: a port held for UDP is not returned.
func TestFreePortsSkipsUDPTaken(t *testing.T) {
	var held []net.PacketConn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	taken := map[int]bool{}
	for range 50 {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		taken[c.LocalAddr().(*net.UDPAddr).Port] = true
	}
	ps, err := FreePorts(50)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if taken[p] {
			t.Errorf("port %d is held for UDP but was returned", p)
		}
	}
}
