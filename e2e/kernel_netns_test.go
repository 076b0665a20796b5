//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/lab"
	"github.com/meshd/meshd/tunnel"
)

// TestKernelNetns runs two meshd nodes in tunnel.mode kernel, each in its
// own network namespace (its own TUN device, address and mesh route),
// joined by a veth pair (10.97.0.1 and 10.97.0.2). The edge node imports
// the onprem node's echo: a checksummed 16 MiB transfer and 50 concurrent
// request/response connections pass, and status reports mode "kernel".
// In kernel mode the mesh address answers a peer only on the session port,
// and a local process on the edge host dialling it (from edge's mesh
// address) gets no session: it cannot prove edge's WireGuard key.
// The same runs in userspace mode as a baseline; each logs its
// single-stream throughput.
//
//	edge (edge-1, import) 10.97.0.1 ── veth ── 10.97.0.2 onprem (onprem-1, export)
func TestKernelNetns(t *testing.T) {
	netnsSkipUnlessPossible(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("kernel-mode test: no /dev/net/tun (%v)", err)
	}
	removeStale(t, staleNetns)
	mbps := map[string]float64{}
	for _, mode := range []string{"kernel", "userspace"} {
		t.Run(mode, func(t *testing.T) { mbps[mode] = kernelNetnsRun(t, mode) })
	}
	if mbps["kernel"] > 0 && mbps["userspace"] > 0 {
		t.Logf("single-stream echo through an import, 256 MiB each way: kernel %.0f MB/s, userspace %.0f MB/s", mbps["kernel"], mbps["userspace"])
	}
}

// kernelNetnsRun builds the two namespaces, runs the nodes in mode and the
// checks, and returns the measured throughput in MB/s (0 if skipped).
func kernelNetnsRun(t *testing.T, mode string) float64 {
	prefix := fmt.Sprintf("%s%d-", netnsPrefix, os.Getpid())
	edgeNS, onpremNS := prefix+"edge", prefix+"onprem"
	// ---- topology: one veth pair, private addresses only in our namespaces
	ctx := context.Background()
	tp := newNetnsTopo(t)
	tp.must(tp.Add(ctx, edgeNS))
	tp.must(tp.Add(ctx, onpremNS))
	tp.must(tp.Veth(ctx, edgeNS, "eth0", "10.97.0.1/24", onpremNS, "eth0", "10.97.0.2/24"))

	const echoAddr = "127.0.0.1:7000" // onprem's own loopback
	startNetnsEcho(t, onpremNS, echoAddr, "onprem-1")

	c := newCluster(t)
	importAddr := "10.97.0.1:15000"
	mk := func(name, site, ns, ip string, join []string, exports []lab.Export, imports []lab.Import) *meshNode {
		n, cfg := c.netnsNode(name, site, ip, join)
		cfg.TunnelMode, cfg.Exports, cfg.Imports = mode, exports, imports
		startInNetns(t, c, ns, n, cfg)
		return n
	}
	b1 := mk("onprem-1", "onprem", onpremNS, "10.97.0.2", nil, []lab.Export{{Name: "echo", Target: echoAddr}}, nil)
	waitUp(t, b1, 20*time.Second)
	a1 := mk("edge-1", "edge", edgeNS, "10.97.0.1", []string{"10.97.0.2:7946"}, nil,
		[]lab.Import{{Name: "echo", Listen: importAddr, Sites: []string{"onprem"}}})
	waitMesh(t, 30*time.Second, a1, b1)
	waitFor(t, 15*time.Second, "edge-1 to see echo healthy and onprem-1 up", func() (bool, string) {
		st, err := tryStatus(t, a1)
		if err != nil {
			return false, err.Error()
		}
		svc, ok := service(st, "echo")
		if !ok || len(svc.Endpoints) != 1 || !svc.Endpoints[0].Healthy {
			return false, fmt.Sprintf("echo: %+v", svc)
		}
		if p, _ := peer(st, b1.Name); !p.Up {
			return false, fmt.Sprintf("onprem-1: %+v", p)
		}
		return true, ""
	})

	// ---- status and devices
	for _, n := range []struct {
		m  *meshNode
		ns string
	}{{a1, edgeNS}, {b1, onpremNS}} {
		st := status(t, n.m)
		if st.Node.Mode != mode {
			t.Errorf("%s: status mode %q, want %q", n.m.Name, st.Node.Mode, mode)
		}
		routes := inNetns(t, n.ns, "ip", "-6", "route", "show", "fd7a:6d65:7368::/48")
		addrs := inNetns(t, n.ns, "ip", "-6", "addr", "show")
		hasDev := strings.Contains(routes, "dev meshd") && strings.Contains(addrs, st.Node.MeshIP+"/128")
		if hasDev != (mode == "kernel") {
			t.Errorf("%s (%s): mesh route %q, addresses:\n%s", n.m.Name, mode, strings.TrimSpace(routes), addrs)
		}
	}

	nsPath := netnsPath(edgeNS)
	if mode == "kernel" {
		// ---- the mesh address is filtered: a host service listening on all
		// addresses of onprem is reachable over the veth, not over the mesh.
		const anyAddr = "[::]:7001"
		startNetnsEcho(t, onpremNS, anyAddr, "onprem-any")
		if c, err := dialInNetns(nsPath, "10.97.0.2:7001", 5*time.Second); err != nil {
			t.Errorf("control: onprem's all-address listener over the veth: %v", err)
		} else {
			c.Close()
		}
		meshAddr := net.JoinHostPort(status(t, b1).Node.MeshIP, "7001")
		if c, err := dialInNetns(nsPath, meshAddr, 1500*time.Millisecond); err == nil {
			c.Close()
			t.Errorf("kernel mode: a peer reached %s, a non-session port on the mesh address", meshAddr)
		} else {
			t.Logf("kernel mode: %s from a peer refused as it should be: %v", meshAddr, err)
		}

		// ---- any local process on edge can dial onprem's session port,
		// and the kernel gives it edge's mesh address as the source: it
		// gets no session without edge's WireGuard key (a bad hello is
		// closed at once), and edge's own session is not replaced (the
		// transfers below run on it).
		if p, _ := peer(status(t, a1), b1.Name); p.Session != "up" {
			t.Errorf("edge-1's session to onprem-1 before the impostor: %q, want up", p.Session)
		}
		sessAddr := net.JoinHostPort(status(t, b1).Node.MeshIP, strconv.Itoa(tunnel.SessionPort))
		if c, err := dialInNetns(nsPath, sessAddr, 5*time.Second); err != nil {
			t.Errorf("control: the session port %s from a peer: %v", sessAddr, err)
		} else {
			start := time.Now()
			c.SetDeadline(start.Add(10 * time.Second))
			c.Write(bytes.Repeat([]byte("x"), 68)) // a hello and a proof's worth of garbage
			n, _ := io.Copy(io.Discard, c)
			c.Close()
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("kernel mode: an impostor's session connection stayed open %v", d)
			}
			if n > 36+32 {
				t.Errorf("kernel mode: onprem-1 sent an impostor %d bytes, more than its handshake", n)
			}
			waitFor(t, 5*time.Second, "onprem-1 to log refusing the impostor's session", func() (bool, string) {
				return strings.Contains(b1.logText(), "tunnel: refused a session that did not prove the peer's key"), "no refusal logged"
			})
		}
	}

	// ---- a checksummed 16 MiB transfer
	if err := echoTransfer(nsPath, importAddr, 16<<20); err != nil {
		t.Fatalf("16 MiB transfer: %v", err)
	}

	// ---- 50 concurrent request/response connections
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := echoRequest(nsPath, importAddr, i); err != nil {
				errs <- fmt.Errorf("connection %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return 0
	}

	// ---- single-stream throughput
	const big = 256 << 20
	start := time.Now()
	if err := echoTransfer(nsPath, importAddr, big); err != nil {
		t.Fatalf("256 MiB transfer: %v", err)
	}
	el := time.Since(start)
	mbps := float64(big) / 1e6 / el.Seconds()
	t.Logf("%s mode: 256 MiB echoed through the import in %v: %.0f MB/s each way", mode, el.Round(time.Millisecond), mbps)
	return mbps
}

// echoTransfer sends size random bytes through the echo at addr, dialled
// from inside the namespace at nsPath, and checks that the same bytes come
// back (after the banner) by SHA-256.
func echoTransfer(nsPath, addr string, size int) error {
	cn, err := dialInNetns(nsPath, addr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer cn.Close()
	cn.SetDeadline(time.Now().Add(2 * time.Minute))
	chunk := make([]byte, 1<<20)
	rand.Read(chunk)
	sent := sha256.New()
	werr := make(chan error, 1)
	go func() {
		for left := size; left > 0; {
			b := chunk[:min(left, len(chunk))]
			chunk[0]++ // every chunk differs
			sent.Write(b)
			if _, err := cn.Write(b); err != nil {
				werr <- err
				return
			}
			left -= len(b)
		}
		werr <- cn.(*net.TCPConn).CloseWrite()
	}()
	br := bufio.NewReaderSize(cn, 1<<20)
	if name, err := br.ReadString('\n'); err != nil || name != "onprem-1\n" {
		return fmt.Errorf("banner %q, %v", name, err)
	}
	got := sha256.New()
	n, err := io.Copy(got, br)
	if err != nil {
		return fmt.Errorf("read after %d bytes: %w", n, err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if n != int64(size) || string(got.Sum(nil)) != string(sent.Sum(nil)) {
		return fmt.Errorf("echoed %d bytes, want %d; checksums equal: %v", n, size, string(got.Sum(nil)) == string(sent.Sum(nil)))
	}
	return nil
}

// echoRequest makes one request/response exchange through the echo.
func echoRequest(nsPath, addr string, i int) error {
	cn, err := dialInNetns(nsPath, addr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer cn.Close()
	cn.SetDeadline(time.Now().Add(20 * time.Second))
	msg := fmt.Sprintf("request-%d\n", i)
	if _, err := io.WriteString(cn, msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	br := bufio.NewReader(cn)
	if name, err := br.ReadString('\n'); err != nil || name != "onprem-1\n" {
		return fmt.Errorf("banner %q, %v", name, err)
	}
	if echo, err := br.ReadString('\n'); err != nil || echo != msg {
		return fmt.Errorf("response %q, %v; want %q", echo, err, msg)
	}
	if err := cn.(*net.TCPConn).CloseWrite(); err != nil {
		return fmt.Errorf("CloseWrite: %w", err)
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		return fmt.Errorf("after CloseWrite want EOF, got %q, %v", rest, err)
	}
	return nil
}
