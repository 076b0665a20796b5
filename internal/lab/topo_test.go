package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/bench"
	"github.com/meshd/meshd/internal/netns"
)

func skipUnlessTopo(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, veth)")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
}

// TestTopoStar builds a router with two hosts for real: host 1 reaches
// host 2 through the router, an nftables rule in the router cuts that and
// its removal restores it, and Close kills what runs inside and leaves no
// namespace.
func TestTopoStar(t *testing.T) {
	skipUnlessTopo(t)
	ctx := context.Background()
	prefix := fmt.Sprintf("ltt-%d-", os.Getpid())
	var tp Topo
	tp.Progress = t.Logf
	defer tp.Close()
	hosts, err := tp.Star(ctx, prefix+"rt", "10.216", prefix+"h1", prefix+"h2")
	if errors.Is(err, ErrNoNamespace) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 2 || hosts[0].IP != "10.216.1.2" || hosts[0].Gateway != "10.216.1.1" || hosts[1].IP != "10.216.2.2" || hosts[1].NS != prefix+"h2" {
		t.Fatalf("hosts %+v", hosts)
	}
	if got := tp.Namespaces(); !slices.Equal(got, []string{prefix + "rt", prefix + "h1", prefix + "h2"}) {
		t.Fatalf("Namespaces() = %v", got)
	}
	if out, err := tp.Run(ctx, prefix+"rt", "cat", "/proc/sys/net/ipv4/ip_forward"); err != nil || strings.TrimSpace(out) != "1" {
		t.Fatalf("router ip_forward %q, %v; want 1", out, err)
	}
	t.Setenv(childEnv, "1")
	srv, err := bench.StartWorker("server", tp.Exec(hosts[1].NS, os.Args[0]), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if _, err := srv.Call(ctx, bench.WorkerRequest{Op: bench.OpServe, Echo: "0.0.0.0:5002"}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	client, err := bench.StartWorker("client", tp.Exec(hosts[0].NS, os.Args[0]), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	// ping waits up to d for a round trip to host 2 to succeed (want ok)
	// or to fail (!ok), and returns the last error ("" on success).
	ping := func(d time.Duration, ok bool) string {
		end := time.Now().Add(d)
		for {
			r, err := client.Call(ctx, bench.WorkerRequest{Op: bench.OpPing, Addr: hosts[1].IP + ":5002"}, 20*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if (r.Errors == 0) == ok || time.Now().After(end) {
				return r.FirstErr
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if e := ping(10*time.Second, true); e != "" {
		t.Fatalf("round trip through the router: %s", e)
	}
	cut := fmt.Sprintf("table inet ltt_cut {\n\tchain forward {\n\t\ttype filter hook forward priority 0; policy accept;\n\t\tip daddr %s drop\n\t}\n}\n", hosts[1].IP)
	if err := tp.CheckNft(ctx, prefix+"rt", cut); err != nil {
		t.Skipf("nftables not usable here: %v", err)
	}
	if err := tp.CheckNft(ctx, prefix+"rt", "table inet x { nonsense }\n"); err == nil {
		t.Error("CheckNft accepted a bad ruleset")
	}
	if err := tp.Nft(ctx, prefix+"rt", cut); err != nil {
		t.Fatal(err)
	}
	if e := ping(10*time.Second, false); e == "" {
		t.Fatal("round trip through the router succeeded across the cut")
	}
	if _, err := tp.Run(ctx, prefix+"rt", "nft", "delete", "table", "inet", "ltt_cut"); err != nil {
		t.Fatal(err)
	}
	if e := ping(10*time.Second, true); e != "" {
		t.Fatalf("round trip after the cut was lifted: %s", e)
	}
	// Close with the workers still running inside: it kills them.
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	names, _ := netns.List(ctx)
	for _, ns := range []string{prefix + "rt", prefix + "h1", prefix + "h2"} {
		if slices.Contains(names, ns) {
			t.Errorf("Close left namespace %s", ns)
		}
	}
}

// TestTopoHalfWay: a topology that fails half-way (a host name given
// twice) returns the error, and Close removes what was made.
func TestTopoHalfWay(t *testing.T) {
	skipUnlessTopo(t)
	ctx := context.Background()
	prefix := fmt.Sprintf("ltt-%d-", os.Getpid())
	var tp Topo
	_, err := tp.Star(ctx, prefix+"rt2", "10.217", prefix+"x", prefix+"x")
	if errors.Is(err, ErrNoNamespace) {
		t.Skip(err)
	}
	if err == nil {
		tp.Close()
		t.Fatal("Star with a host given twice: no error")
	}
	if errors.Is(err, ErrNoNamespace) || !strings.Contains(err.Error(), prefix+"x") {
		t.Errorf("error %v: want it to name %sx and not be ErrNoNamespace", err, prefix)
	}
	made := tp.Namespaces()
	if !slices.Equal(made, []string{prefix + "rt2", prefix + "x"}) {
		t.Errorf("made %v before the failure", made)
	}
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	names, _ := netns.List(ctx)
	for _, ns := range made {
		if slices.Contains(names, ns) {
			t.Errorf("Close left namespace %s", ns)
		}
	}
}
