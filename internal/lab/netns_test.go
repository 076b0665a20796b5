package lab

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/bench"
	"github.com/meshd/meshd/internal/netns"
)

// childEnv makes the test binary act as a child process of the lab: a
// bench worker, or (with the argument bench-wgref) a WGRef end.
const childEnv = "LAB_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func runChild(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(args) == 0 || args[0] != "bench-wgref" {
		if err := bench.ServeWorker(ctx, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
	w, err := ParseWGRefFlags(args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, cancel := context.WithCancel(ctx)
	go func() { io.Copy(io.Discard, os.Stdin); cancel() }()
	if err := w.Run(ctx, func() { fmt.Println("ready") }); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestWGRefConfig: the two ends mirror each other, and the flags and the
// UAPI text carry every field.
func TestWGRefConfig(t *testing.T) {
	a, b, err := WireGuardEnds()
	if err != nil {
		t.Fatal(err)
	}
	if a.Peer != b.Private.Public() || b.Peer != a.Private.Public() ||
		a.Endpoint.String() != VethB+":51900" || b.Endpoint.String() != VethA+":51900" ||
		a.Addr.String() != WGA+"/24" || a.Allowed.String() != WGB+"/32" || b.Addr.String() != WGB+"/24" || b.Allowed.String() != WGA+"/32" {
		t.Fatalf("ends do not mirror:\n%+v\n%+v", a, b)
	}
	a.MTU, a.Verbose = 1280, true
	back, err := ParseWGRefFlags(a.Flags())
	if err != nil || back != a {
		t.Fatalf("flags %v read back as %+v (%v), want %+v", a.Flags(), back, err, a)
	}
	u := a.UAPI()
	for _, want := range []string{"private_key=" + a.Private.Hex() + "\n", "listen_port=51900\n", "public_key=" + a.Peer.Hex() + "\n",
		"endpoint=" + VethB + ":51900\n", "allowed_ip=" + WGB + "/32\n", "replace_peers=true\n"} {
		if !strings.Contains(u, want) {
			t.Errorf("UAPI lacks %q:\n%s", want, u)
		}
	}
	keys := WGRef{Dev: "x", Private: a.Private, Peer: a.Peer}
	noPort, bigPort, noEndpoint, noAddr := keys, keys, keys, keys
	bigPort.Port, noEndpoint.Port, noAddr.Port, noAddr.Endpoint = 70000, 1, 1, a.Endpoint
	for _, bad := range []WGRef{{}, {Dev: "x", Port: 1}, noPort, bigPort, noEndpoint, noAddr} {
		if bad.Check() == nil {
			t.Errorf("Check(%+v) = nil", bad)
		}
	}
	for _, args := range [][]string{
		{"--port", "x"},
		{"--private", "nope"},
		append(a.Flags(), "extra"),
		{"--dev", "d"},
	} {
		if _, err := ParseWGRefFlags(args); err == nil {
			t.Errorf("ParseWGRefFlags(%q) = nil error", args)
		}
	}
	if _, err := ParseWGRefFlags([]string{"--private", "nope"}); err == nil || !strings.Contains(err.Error(), "-private") {
		t.Errorf("bad --private: %v, want the flag named", err)
	}
	if err := a.Check(); err != nil {
		t.Errorf("Check of a good end: %v", err)
	}
}

// lossRule reports whether iptables -S output has the UDP drop rule with
// probability p (iptables prints it as a float32: 0.00999999978).
func lossRule(out string, p float64) bool {
	m := regexp.MustCompile(`-A OUTPUT -p udp -m statistic --mode random --probability ([0-9.]+) -j DROP`).FindStringSubmatch(out)
	if m == nil {
		return false
	}
	got, err := strconv.ParseFloat(m[1], 64)
	return err == nil && math.Abs(got-p) < 1e-6
}

// TestNetns builds the lab for real (root, ip, /dev/net/tun): the veth
// carries a round trip, the plain wireguard-go tunnel does too, the loss
// rule is installed, a stale namespace of a dead owner is removed, and
// Close leaves nothing.
func TestNetns(t *testing.T) {
	if why := NetnsPossible(); why != "" {
		t.Skip(why)
	}
	ctx := context.Background()
	// A namespace whose owner is dead, as a killed earlier run leaves it.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := fmt.Sprintf("lt-%d-a", dead.Process.Pid)
	if err := netns.Add(ctx, stale); err != nil {
		t.Fatal(err)
	}
	defer netns.Delete(ctx, stale)

	n, err := NewNetns(ctx, "lt-", t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if names, _ := netns.List(ctx); slices.Contains(names, stale) || !slices.Contains(names, n.A) || !slices.Contains(names, n.B) {
		t.Fatalf("namespaces %v: want %s and %s, not %s", names, n.A, n.B, stale)
	}
	t.Setenv(childEnv, "1")
	srv, err := bench.StartWorker("servers", n.Exec(n.A, os.Args[0]), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if _, err := srv.Call(ctx, bench.WorkerRequest{Op: bench.OpServe, Echo: "0.0.0.0:5002"}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	client, err := bench.StartWorker("client", n.Exec(n.B, os.Args[0]), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ping := func(addr string) string {
		end := time.Now().Add(10 * time.Second)
		for {
			r, err := client.Call(ctx, bench.WorkerRequest{Op: bench.OpPing, Addr: addr}, 20*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if r.Errors == 0 || time.Now().After(end) {
				return r.FirstErr
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if e := ping(VethA + ":5002"); e != "" {
		t.Fatalf("round trip over the veth: %s", e)
	}
	if err := n.StartWireGuard(ctx, os.Args[0], false); err != nil {
		t.Fatal(err)
	}
	if e := ping(WGA + ":5002"); e != "" {
		t.Fatalf("round trip through wireguard-go: %s", e)
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Log("no iptables here: the loss rule (bench --netns-loss) is not checked")
	} else if err := n.DropUDP(ctx, 1); err != nil {
		t.Error(err)
	} else if out, err := netns.Run(ctx, "ip", "netns", "exec", n.A, "iptables", "-S", "OUTPUT"); err != nil || !lossRule(out, 0.01) {
		t.Errorf("loss rule of 1%%: %v\n%s", err, out)
	}
	client.Close()
	srv.Close()
	n.Close()
	if names, _ := netns.List(ctx); slices.Contains(names, n.A) || slices.Contains(names, n.B) {
		t.Errorf("Close left namespaces: %v", names)
	}
}
