package statusfmt

import (
	"strings"
	"testing"

	"github.com/meshd/meshd/node"
)

func ms(f float64) *float64 { return &f }

func TestStatus(t *testing.T) {
	st := node.Status{
		Node: node.NodeStatus{Name: "n1", Site: "a", MeshIP: "fd00::1", Mode: "userspace", Gossip: "127.0.0.1:1",
			Tunnel: "127.0.0.1:2", Maintenance: true, MaintenanceReason: "disk", MaintenanceSince: "2026-12-01T10:00:00Z"},
		Peers: []node.PeerStatus{
			{Name: "n2", Site: "b", State: "alive", Up: true, Path: "relay", Endpoint: "10.0.0.2:51820", RelayVia: "r1",
				RTTMs: ms(1.234), Streams: 3, TxBytes: 1536, RxBytes: 10, LastHandshake: "2026-12-01T10:00:01Z"},
			{Name: "n3", Site: "b", State: "dead", Path: "none"},
		},
		Services: []node.ServiceStatus{{Name: "echo", Endpoints: []node.EndpointStatus{{Node: "n2", Site: "b", Healthy: true, Active: 2}}}},
		Imports:  []node.ImportStatus{{Name: "echo", Listen: "127.0.0.1:9000", Active: 1, Total: 5, Failed: 1}},
	}
	var b strings.Builder
	Status(&b, st)
	want := `node n1  site a  mesh fd00::1  mode userspace
gossip 127.0.0.1:1  tunnel 127.0.0.1:2  relay false
maintenance on (disk) since 2026-12-01T10:00:00Z: exports withdrawn, new streams refused

PEER  SITE  STATE  UP     PATH   ENDPOINT               RTT     STREAMS  TX      RX   HANDSHAKE
n2    b     alive  true   relay  10.0.0.2:51820 via r1  1.23ms  3        1.5KiB  10B  2026-12-01T10:00:01Z
n3    b     dead   false  none   -                      -       0        0B      0B   never

SERVICE  NODE  SITE  HEALTHY  ACTIVE
echo     n2    b     true     2

IMPORT  LISTEN          ACTIVE  TOTAL  FAILED
echo    127.0.0.1:9000  1       5      1
`
	if b.String() != want {
		t.Errorf("Status:\n%s\nwant:\n%s", b.String(), want)
	}

	b.Reset()
	st.Node.Maintenance, st.Imports = false, nil
	Status(&b, st)
	if s := b.String(); strings.Contains(s, "maintenance") || strings.Contains(s, "IMPORT") {
		t.Errorf("no maintenance and no imports, but:\n%s", s)
	}
}

func TestPing(t *testing.T) {
	var b strings.Builder
	Ping(&b, node.PingResult{Peer: "n2", Site: "b", Sent: 3, Received: 2, MinMs: 1, AvgMs: 1.5, MaxMs: 2, Replies: []node.PingReply{
		{Seq: 1, OK: true, RTTMs: 1, Path: "direct", Endpoint: "10.0.0.2:1"},
		{Seq: 2, OK: true, RTTMs: 2, Path: "relay", RelayVia: "r1"},
		{Seq: 3, Path: "none", Error: "timeout"},
	}})
	want := `PING n2 (site b) through the tunnel
seq=1 rtt=1.000ms path=direct endpoint=10.0.0.2:1
seq=2 rtt=2.000ms path=relay via r1 endpoint=-
seq=3 failed: timeout (path none)
3 sent, 2 received, 33% loss; rtt min/avg/max 1.000/1.500/2.000 ms
`
	if b.String() != want {
		t.Errorf("Ping:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	Ping(&b, node.PingResult{Peer: "n2"})
	if !strings.Contains(b.String(), "0 sent, 0 received, 0% loss") {
		t.Errorf("Ping of nothing sent:\n%s", b.String())
	}
}

func TestOneLiners(t *testing.T) {
	for _, tc := range []struct {
		write func(*strings.Builder)
		want  string
	}{
		{func(b *strings.Builder) { Reload(b, node.ReloadResult{File: "/f"}) }, "reloaded /f: nothing to change in exports or imports\n"},
		{func(b *strings.Builder) {
			Reload(b, node.ReloadResult{File: "/f", Changes: []string{"import a added", "log level debug"}})
		},
			"reloaded /f: import a added; log level debug\n"},
		{func(b *strings.Builder) { Maint(b, node.MaintRequest{On: true, Reason: "patch"}) }, "maintenance on (patch): exports withdrawn, new streams refused\n"},
		{func(b *strings.Builder) { Maint(b, node.MaintRequest{On: true}) }, "maintenance on: exports withdrawn, new streams refused\n"},
		{func(b *strings.Builder) { Maint(b, node.MaintRequest{}) }, "maintenance off: exports published\n"},
	} {
		var b strings.Builder
		tc.write(&b)
		if b.String() != tc.want {
			t.Errorf("got %q, want %q", b.String(), tc.want)
		}
	}
}

func TestBytes(t *testing.T) {
	for _, tc := range []struct {
		in   uint64
		want string
	}{{0, "0B"}, {1023, "1023B"}, {1024, "1.0KiB"}, {1536, "1.5KiB"}, {5 << 20, "5.0MiB"}, {3 << 30, "3.0GiB"}, {1 << 62, "4.0EiB"}} {
		if got := Bytes(tc.in); got != tc.want {
			t.Errorf("Bytes(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if RTT(node.PeerStatus{}) != "-" || RTT(node.PeerStatus{RTTMs: ms(0)}) != "-" || RTT(node.PeerStatus{RTTMs: ms(0.5)}) != "0.50ms" {
		t.Error("RTT: want - when unknown or 0, else two decimals")
	}
	if Dash("") != "-" || Dash("x") != "x" || Reason("") != "" || Reason("r") != " (r)" {
		t.Error("Dash/Reason")
	}
}
