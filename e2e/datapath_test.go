package e2e

import (
	"bytes"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshd/meshd/node"
)

// TestDataPath runs three nodes in two sites and pushes traffic through an
// import: bulk, many concurrent connections, half-close, preferred-site
// selection and failover to the next candidate when a backend refuses.
func TestDataPath(t *testing.T) {
	c := newCluster(t)
	beOnprem := startBackend(t, "127.0.0.1:0")
	beCloud := startBackend(t, "127.0.0.1:0")

	o1 := c.start(nodeSpec{Name: "onprem-1", Site: "onprem",
		Imports: []importSpec{{Name: "echo", Sites: []string{"onprem", "cloud"}}}})
	// No health check on onprem-2: when its backend goes away it must
	// answer "backend refused" and the import must try the next candidate.
	o2 := c.start(nodeSpec{Name: "onprem-2", Site: "onprem",
		Exports: []exportSpec{{Name: "echo", Target: beOnprem.Addr()}}})
	c1 := c.start(nodeSpec{Name: "cloud-1", Site: "cloud",
		Exports: []exportSpec{{Name: "echo", Target: beCloud.Addr(), CheckInterval: time.Second, CheckTimeout: time.Second}}})
	imp := o1.Imports["echo"]

	waitFor(t, 30*time.Second, "onprem-1 to see both peers alive/direct and echo with 2 healthy endpoints", func() (bool, string) {
		st, err := tryStatus(t, o1)
		if err != nil {
			return false, err.Error()
		}
		for _, n := range []*meshNode{o2, c1} {
			p, ok := peer(st, n.Name)
			if !ok || p.State != "alive" || p.Path != node.PathDirect {
				return false, fmt.Sprintf("peer %s: %+v", n.Name, p)
			}
		}
		s, ok := service(st, "echo")
		if !ok || len(s.Endpoints) != 2 {
			return false, fmt.Sprintf("service echo: %+v", s)
		}
		for _, e := range s.Endpoints {
			if !e.Healthy {
				return false, fmt.Sprintf("endpoint %+v not healthy", e)
			}
		}
		return true, ""
	})
	// Selection uses a peer once its session answers pings: wait for an
	// RTT so that the first connection already sees both endpoints usable.
	waitFor(t, 15*time.Second, "onprem-1 to measure an RTT to both peers (sessions up)", func() (bool, string) {
		st, err := tryStatus(t, o1)
		if err != nil {
			return false, err.Error()
		}
		for _, n := range []*meshNode{o2, c1} {
			if p, _ := peer(st, n.Name); p.RTT() <= 0 {
				return false, fmt.Sprintf("%s: %+v", n.Name, p)
			}
		}
		return true, ""
	})

	conns := 0 // client connections made through the import

	t.Run("bulk64MiB", func(t *testing.T) {
		conns++
		const size = 64 << 20
		sent, got, n := bulkEcho(t, imp, size, 90*time.Second)
		if n != size {
			t.Fatalf("echoed %d bytes, want %d", n, size)
		}
		if !bytes.Equal(sent, got) {
			t.Fatalf("SHA-256 of echoed data %x != sent %x", got, sent)
		}
		// The client->backend direction on its own: the backend hashed what it read.
		if !beOnprem.received(sent, size) {
			t.Fatalf("onprem-2's backend did not receive the %d bytes intact (SHA-256 %x)", size, sent)
		}
	})

	t.Run("concurrent200", func(t *testing.T) {
		const (
			clients = 200
			rounds  = 10
			msg     = 1 << 10
		)
		conns += clients
		errs := make(chan error, clients)
		var wg sync.WaitGroup
		for i := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- exchange(imp, i, rounds, msg, 60*time.Second)
			}()
		}
		wg.Wait()
		close(errs)
		failed := 0
		for err := range errs {
			if err != nil {
				failed++
				if failed <= 5 {
					t.Error(err)
				}
			}
		}
		if failed > 0 {
			t.Fatalf("%d of %d concurrent connections failed", failed, clients)
		}
	})

	t.Run("halfClose", func(t *testing.T) {
		// Echo: what is still in flight after our FIN comes back, then EOF.
		conns++
		payload := make([]byte, 64<<10)
		crand.Read(payload)
		cn, err := net.DialTimeout("tcp", imp, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer cn.Close()
		cn.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := cn.Write(payload); err != nil {
			t.Fatalf("write: %v", err)
		}
		if err := cn.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatalf("CloseWrite: %v", err)
		}
		got, err := io.ReadAll(cn)
		if err != nil {
			t.Fatalf("read after CloseWrite: %v (got %d of %d bytes)", err, len(got), len(payload))
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("reply after half-close differs: got %d bytes, want %d", len(got), len(payload))
		}

		// Digest: the backend answers only after it has seen our FIN.
		conns++
		payload = make([]byte, 1<<20)
		crand.Read(payload)
		cn2, err := net.DialTimeout("tcp", imp, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer cn2.Close()
		cn2.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := cn2.Write(append(append([]byte{}, digestMagic...), payload...)); err != nil {
			t.Fatalf("write: %v", err)
		}
		if err := cn2.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatalf("CloseWrite: %v", err)
		}
		reply, err := io.ReadAll(cn2)
		if err != nil {
			t.Fatalf("read the reply sent after our FIN: %v (got %q)", err, reply)
		}
		if want := fmt.Sprintf("%x %d\n", sha256.Sum256(payload), len(payload)); string(reply) != want {
			t.Fatalf("reply after half-close: %q, want %q", reply, want)
		}
	})

	t.Run("status", func(t *testing.T) {
		// Poll: gossip may briefly suspect a peer while the machine is
		// busy; the status must settle to the healthy picture.
		var problems []string
		waitFor(t, 15*time.Second, "onprem-1's status to show the healthy mesh", func() (bool, string) {
			st, err := tryStatus(t, o1)
			if err != nil {
				return false, err.Error()
			}
			problems = checkStatus(st, o1, []*meshNode{o2, c1}, imp, conns)
			return len(problems) == 0, "\n\t" + strings.Join(problems, "\n\t")
		})

		out, errOut, code := runMeshd(t, 15*time.Second, "status", "--config", o1.Config)
		if code != 0 {
			t.Fatalf("meshd status: exit %d: %s", code, errOut)
		}
		for _, want := range []string{"onprem-2", "cloud-1", "echo"} {
			if !strings.Contains(out, want) {
				t.Errorf("plain status lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("preferredSite", func(t *testing.T) {
		on, cl := beOnprem.dataConns.Load(), beCloud.dataConns.Load()
		if on+cl < int64(conns) {
			t.Errorf("the backends served %d+%d connections, want >= %d", on, cl, conns)
		}
		if cl != 0 {
			preferenceError(t, o1, 0, "onprem-2", "cloud-1's backend served %d of %d connections, want 0 while onprem-2 is healthy (onprem is preferred)", cl, conns)
		}
	})

	t.Run("failover", func(t *testing.T) {
		const k = 20
		onAddr := beOnprem.Addr()
		beOnprem.Close() // onprem-2 now answers "backend refused"
		cloudBefore := beCloud.dataConns.Load()
		for i := range k {
			if err := exchange(imp, i, 3, 512, 20*time.Second); err != nil {
				t.Fatalf("connection %d with onprem-2's backend down: %v", i, err)
			}
		}
		if got := beCloud.dataConns.Load() - cloudBefore; got != k {
			t.Errorf("cloud-1's backend served %d of %d connections while onprem-2's backend was down", got, k)
		}

		// The backend comes back on the same address. onprem-1 may hold
		// onprem-2 off for a while (circuit breaker cooldown after the
		// refusals), but new connections must fail back to it, every
		// one succeeding meanwhile.
		be2 := startBackend(t, onAddr)
		restarted := time.Now()
		for i := 0; be2.dataConns.Load() == 0; i++ {
			if time.Since(restarted) > 35*time.Second {
				t.Fatalf("no connection went back to onprem-2 within %s of its backend's restart", time.Since(restarted).Round(time.Second))
			}
			if err := exchange(imp, i, 3, 512, 20*time.Second); err != nil {
				t.Fatalf("connection %d after onprem-2's backend came back: %v", i, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("failback to onprem-2 %s after its backend's restart", time.Since(restarted).Round(time.Millisecond))
		before, cloudBefore := be2.dataConns.Load(), beCloud.dataConns.Load()
		logAt := len(o1.logText())
		for i := range k {
			if err := exchange(imp, i, 3, 512, 20*time.Second); err != nil {
				t.Fatalf("connection %d after failback: %v", i, err)
			}
		}
		if got := beCloud.dataConns.Load() - cloudBefore; got != 0 || be2.dataConns.Load()-before != k {
			preferenceError(t, o1, logAt, "onprem-2", "after failback onprem-2 served %d and cloud-1 %d of %d connections, want all on onprem-2 (onprem preferred)",
				be2.dataConns.Load()-before, got, k)
		}
		st := status(t, o1)
		if len(st.Imports) == 1 && st.Imports[0].Failed != 0 {
			t.Errorf("import failed = %d, want 0: failover should hide the refused backend", st.Imports[0].Failed)
		}
	})

	// onprem-2 crashes (SIGKILL, no leave): new connections must keep
	// working through cloud-1, slowly at most until the crash is
	// detected, promptly afterwards.
	t.Run("nodeCrash", func(t *testing.T) {
		o2.kill(t)
		crashed := time.Now()
		cloudBefore := beCloud.dataConns.Load()
		made := 0
		detected := false
		for i := 0; i < 60 && !detected; i++ {
			start := time.Now()
			if err := exchange(imp, i, 2, 256, 20*time.Second); err != nil {
				t.Fatalf("connection %d, %s after onprem-2 crashed: %v", i, time.Since(crashed).Round(time.Millisecond), err)
			}
			made++
			t.Logf("connection %d after the crash took %s", i, time.Since(start).Round(time.Millisecond))
			st := status(t, o1)
			if p, _ := peer(st, "onprem-2"); p.State != "alive" {
				detected = true
				t.Logf("onprem-1 sees onprem-2 %s (path %s) %s after the crash", p.State, p.Path, time.Since(crashed).Round(time.Millisecond))
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !detected {
			t.Fatalf("onprem-1 still sees onprem-2 alive %s after it was killed", time.Since(crashed).Round(time.Second))
		}
		// Once detected, the dead endpoint is skipped: no attempt timeout.
		for i := range 5 {
			start := time.Now()
			if err := exchange(imp, i, 2, 256, 20*time.Second); err != nil {
				t.Fatalf("connection %d after the crash was detected: %v", i, err)
			}
			made++
			if d := time.Since(start); d > time.Second {
				t.Errorf("connection %d took %s although onprem-2 is known to be down", i, d.Round(time.Millisecond))
			}
		}
		if got := beCloud.dataConns.Load() - cloudBefore; got != int64(made) {
			t.Errorf("cloud-1's backend served %d of %d connections after onprem-2 crashed", got, made)
		}
		st := status(t, o1)
		if len(st.Imports) == 1 && st.Imports[0].Failed != 0 {
			t.Errorf("import failed = %d, want 0: cloud-1 was healthy all along", st.Imports[0].Failed)
		}
	})
}

// bulkEcho sends size random bytes through addr, half-closes, reads the
// echo to EOF, and returns the SHA-256 of what was sent and of what came
// back, and how many bytes came back.
func bulkEcho(t *testing.T, addr string, size int, d time.Duration) (sent, got []byte, n int64) {
	t.Helper()
	cn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	cn.SetDeadline(time.Now().Add(d))
	var seed [32]byte
	crand.Read(seed[:])
	src := rand.NewChaCha8(seed)

	werr := make(chan error, 1)
	hs := sha256.New()
	go func() {
		buf := make([]byte, 64<<10)
		left := size
		for left > 0 {
			b := buf[:min(len(buf), left)]
			src.Read(b)
			hs.Write(b)
			if _, err := cn.Write(b); err != nil {
				werr <- err
				return
			}
			left -= len(b)
		}
		werr <- cn.(*net.TCPConn).CloseWrite()
	}()
	hr := sha256.New()
	n, rerr := io.CopyBuffer(hr, cn, make([]byte, 64<<10))
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if rerr != nil {
		t.Fatalf("read echo: %v after %d bytes", rerr, n)
	}
	return hs.Sum(nil), hr.Sum(nil), n
}

// exchange dials addr and does rounds request/response exchanges of size
// bytes each, checking every reply, then half-closes and expects EOF.
func exchange(addr string, id, rounds, size int, d time.Duration) error {
	cn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("conn %d: dial: %w", id, err)
	}
	defer cn.Close()
	cn.SetDeadline(time.Now().Add(d))
	req := make([]byte, size)
	resp := make([]byte, size)
	for r := range rounds {
		for i := range req {
			req[i] = byte(id*31 + r*7 + i)
		}
		if _, err := cn.Write(req); err != nil {
			return fmt.Errorf("conn %d round %d: write: %w", id, r, err)
		}
		if _, err := io.ReadFull(cn, resp); err != nil {
			return fmt.Errorf("conn %d round %d: read: %w", id, r, err)
		}
		if !bytes.Equal(req, resp) {
			return fmt.Errorf("conn %d round %d: reply differs from request", id, r)
		}
	}
	if err := cn.(*net.TCPConn).CloseWrite(); err != nil {
		return fmt.Errorf("conn %d: CloseWrite: %w", id, err)
	}
	var one [1]byte
	if k, err := cn.Read(one[:]); k != 0 || !errors.Is(err, io.EOF) {
		return fmt.Errorf("conn %d: after CloseWrite want EOF, got %d bytes, %v", id, k, err)
	}
	return nil
}

// checkStatus lists what is wrong in the status st of the importing node
// self (docs/formats.md) after traffic, with peers alive and direct.
func checkStatus(st node.Status, self *meshNode, peers []*meshNode, imp string, conns int) []string {
	var bad []string
	errf := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }
	n := st.Node
	if n.Name != self.Name || n.Site != self.Site || n.Mode != "userspace" || n.Relay {
		errf("node: name %q site %q mode %q relay %v", n.Name, n.Site, n.Mode, n.Relay)
	}
	if n.Version == "" {
		errf("node.version is empty")
	}
	if !strings.HasPrefix(n.MeshIP, "fd7a:6d65:7368") {
		errf("node.mesh_ip %q does not start with fd7a:6d65:7368", n.MeshIP)
	}
	if k, err := base64.StdEncoding.DecodeString(n.PublicKey); err != nil || len(k) != 32 {
		errf("node.public_key %q: not base64 of 32 bytes (%v)", n.PublicKey, err)
	}
	if n.Gossip != addr(self.GossipPort) || n.Tunnel != addr(self.TunnelPort) {
		errf("node.gossip %q tunnel %q, want %s and %s", n.Gossip, n.Tunnel, addr(self.GossipPort), addr(self.TunnelPort))
	}
	if len(st.Peers) != len(peers) {
		errf("%d peers, want %d: %+v", len(st.Peers), len(peers), st.Peers)
	}
	for _, want := range peers {
		p, ok := peer(st, want.Name)
		if !ok {
			errf("peer %s missing", want.Name)
			continue
		}
		if p.Site != want.Site || p.State != "alive" || p.Path != node.PathDirect || p.RelayVia != "" {
			errf("peer %s: site %q state %q path %q relay_via %q", p.Name, p.Site, p.State, p.Path, p.RelayVia)
		}
		if p.Version != n.Version { // every node runs the same binary
			errf("peer %s version %q, want %q", p.Name, p.Version, n.Version)
		}
		if p.Endpoint != addr(want.TunnelPort) {
			errf("peer %s endpoint %q, want its tunnel address %s", p.Name, p.Endpoint, addr(want.TunnelPort))
		}
		if !strings.HasPrefix(p.MeshIP, "fd7a:6d65:7368") || p.MeshIP == n.MeshIP {
			errf("peer %s mesh_ip %q", p.Name, p.MeshIP)
		}
		if k, err := base64.StdEncoding.DecodeString(p.PublicKey); err != nil || len(k) != 32 || p.PublicKey == n.PublicKey {
			errf("peer %s public_key %q", p.Name, p.PublicKey)
		}
		if p.RTT() <= 0 {
			errf("peer %s rtt_ms %v, want > 0", p.Name, p.RTT())
		}
		if hs, err := time.Parse(time.RFC3339, p.LastHandshake); err != nil || time.Since(hs) > 5*time.Minute || time.Until(hs) > time.Minute {
			errf("peer %s last_handshake %q: not a recent RFC 3339 time (%v)", p.Name, p.LastHandshake, err)
		}
		if p.TxBytes == 0 || p.RxBytes == 0 {
			errf("peer %s tx_bytes %d rx_bytes %d, want > 0", p.Name, p.TxBytes, p.RxBytes)
		}
		if since, ok := p.Since(); !ok || time.Since(since) > 5*time.Minute || time.Until(since) > time.Minute {
			errf("peer %s state_since %q: not a recent RFC 3339 time", p.Name, p.StateSince)
		}
	}
	if p, _ := peer(st, "onprem-2"); p.TxBytes < 64<<20 || p.RxBytes < 64<<20 {
		errf("peer onprem-2 carried the bulk transfer but tx_bytes %d rx_bytes %d < 64 MiB", p.TxBytes, p.RxBytes)
	}
	s, ok := service(st, "echo")
	if !ok || len(s.Endpoints) != 2 {
		errf("service echo: %+v, want 2 endpoints", s)
	}
	for _, e := range s.Endpoints {
		if !e.Healthy {
			errf("endpoint %+v not healthy", e)
		}
	}
	if len(st.Imports) != 1 {
		errf("imports: %+v, want 1", st.Imports)
		return bad
	}
	im := st.Imports[0]
	if im.Name != "echo" || im.Listen != imp {
		errf("import: %+v, want echo on %s", im, imp)
	}
	if e, _ := serviceEndpoint(s, im.Endpoint); e.Node == "" {
		errf("import endpoint %q is not an endpoint of echo %+v", im.Endpoint, s.Endpoints)
	}
	if im.Total < uint64(conns) || im.Failed != 0 {
		errf("import total %d failed %d, want total >= %d and failed 0", im.Total, im.Failed, conns)
	}
	return bad
}

// preferenceError reports connections that went to a less preferred site.
// That is an error unless obs's log shows that it saw the preferred peer
// suspect or down meanwhile (a false alarm on a machine busy with the
// traffic itself, or with other tests): then new connections were right to
// avoid it, and the test only logs what happened.
func preferenceError(t *testing.T, obs *meshNode, since int, preferred, format string, args ...any) {
	t.Helper()
	if f := flaps(obs, since, preferred); len(f) > 0 {
		t.Logf("not counted as a selection error, %s saw %s flap meanwhile:\n%s\n%s", obs.Name, preferred, strings.Join(f, "\n"), fmt.Sprintf(format, args...))
		return
	}
	t.Errorf(format, args...)
}

// flaps returns obs's log lines from byte offset since on that say that
// peer was suspect, down or dead.
func flaps(obs *meshNode, since int, peer string) []string {
	var out []string
	log := obs.logText()
	for _, l := range strings.Split(log[min(since, len(log)):], "\n") {
		if !strings.Contains(l, "peer="+peer+" ") && !strings.Contains(l, "name="+peer+" ") && !strings.HasSuffix(l, "name="+peer) {
			continue
		}
		if strings.Contains(l, "suspect") || strings.Contains(l, "down") || strings.Contains(l, "dead") {
			out = append(out, l)
		}
	}
	return out
}
