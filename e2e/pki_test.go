package e2e

import (
	"bufio"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/meshd/meshd/failover"
	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/lab"
	"github.com/meshd/meshd/internal/tcpserver"
	"github.com/meshd/meshd/node"
)

// pkiEnv holds the CAs of a test and issues node identities with the real
// `meshd ca` / `meshd cert` commands.
type pkiEnv struct {
	t   *testing.T
	dir string
}

func newPKI(t *testing.T, dir string, cas ...string) *pkiEnv {
	t.Helper()
	p := &pkiEnv{t: t, dir: dir}
	for _, ca := range cas {
		if _, errOut, code := runMeshd(t, 20*time.Second, "ca", "init", "--out", filepath.Join(dir, ca), "--name", ca); code != 0 {
			t.Fatalf("ca init %s: %s", ca, errOut)
		}
	}
	return p
}

// issue signs a node identity with ca and returns the pki section for it,
// trusting trust (a CA name, or a path to a CA file).
func (p *pkiEnv) issue(ca, trust, name, site string, args ...string) lab.PKI {
	p.t.Helper()
	out := filepath.Join(p.dir, "certs-"+ca)
	full := append([]string{"cert", "sign", "--ca", filepath.Join(p.dir, ca), "--name", name, "--site", site, "--out", out}, args...)
	if _, errOut, code := runMeshd(p.t, 20*time.Second, full...); code != 0 {
		p.t.Fatalf("cert sign %s: %s", name, errOut)
	}
	caFile := trust
	if !strings.Contains(trust, "/") {
		caFile = filepath.Join(p.dir, trust, "ca.crt")
	}
	return lab.PKI{CA: caFile, Cert: filepath.Join(out, name+".crt"), Key: filepath.Join(out, name+".key")}
}

// issueInto re-issues name's certificate with ca into the directory of
// the certificates of from, keeping its keys (renewal, or a CA rotation).
func (p *pkiEnv) issueInto(ca, from, name, site string, args ...string) {
	p.t.Helper()
	out := filepath.Join(p.dir, "certs-"+from)
	full := append([]string{"cert", "sign", "--ca", filepath.Join(p.dir, ca), "--name", name, "--site", site, "--out", out}, args...)
	if stdout, errOut, code := runMeshd(p.t, 20*time.Second, full...); code != 0 || !strings.Contains(stdout, "renewed") {
		p.t.Fatalf("cert sign %s with %s into %s: exit %d: %s %s", name, ca, out, code, stdout, errOut)
	}
}

// countingBackend is a foBackend that counts the connections that sent it
// data (health checks and drill probes connect and close without any).
type countingBackend struct {
	*tcpserver.Server
	fo    *foBackend
	conns atomic.Int64
}

// countingConn counts its conn once, at the first byte read.
type countingConn struct {
	net.Conn
	n    *atomic.Int64
	seen bool
}

func (c *countingConn) Read(p []byte) (int, error) {
	k, err := c.Conn.Read(p)
	if k > 0 && !c.seen {
		c.seen = true
		c.n.Add(1)
	}
	return k, err
}

func (c *countingConn) CloseWrite() error { return c.Conn.(*net.TCPConn).CloseWrite() }

func startCountingBackend(t *testing.T, name string) *countingBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &countingBackend{fo: &foBackend{name: name}}
	b.Server = tcpserver.Serve(ln, func(c net.Conn) { b.fo.handle(&countingConn{Conn: c, n: &b.conns}) })
	t.Cleanup(func() { b.Close() })
	return b
}

// scrape returns the value of the series name{labels} on a node's
// /metrics (-1 if absent).
func scrape(t *testing.T, addr, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	var want []string
	for i := 0; i+1 < len(labels); i += 2 {
		want = append(want, labels[i]+`="`+labels[i+1]+`"`)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(line, w)
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err == nil {
			return v
		}
	}
	return -1
}

// forger is a gossip client holding the cluster key (memberlist, not
// meshd): what an attacker with one node's files could run.
type forger struct {
	ml  *memberlist.Memberlist
	key ed25519.PrivateKey // signs its forgeries
}

// newForger joins the mesh through via's gossip port; it leaves at the end
// of the test.
func newForger(t *testing.T, c *cluster, via *meshNode) *forger {
	t.Helper()
	key, err := os.ReadFile(c.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := config.DecodeClusterKey(string(key))
	if err != nil {
		t.Fatal(err)
	}
	mc := memberlist.DefaultLocalConfig()
	mc.Name, mc.BindAddr, mc.BindPort, mc.AdvertisePort = "forger", "127.0.0.1", 0, 0
	mc.SecretKey = ck
	mc.Logger = log.New(io.Discard, "", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ml.Shutdown() })
	if _, err := ml.Join([]string{addr(via.GossipPort)}); err != nil {
		t.Fatalf("forger join: %v", err)
	}
	_, k, _ := ed25519.GenerateKey(nil)
	return &forger{ml: ml, key: k}
}

// send sends msg over TCP to each of the named members.
func (f *forger) send(t *testing.T, msg []byte, to ...string) {
	t.Helper()
	sent := 0
	for _, m := range f.ml.Members() {
		if slices.Contains(to, m.Name) {
			if err := f.ml.SendReliable(m, msg); err != nil {
				t.Fatalf("send forged record to %s: %v", m.Name, err)
			}
			sent++
		}
	}
	if sent != len(to) {
		t.Fatalf("forger: sent to %d of %v", sent, to)
	}
}

// peerKey returns the WireGuard public key (32 bytes) st lists for name.
func peerKey(t *testing.T, st node.Status, name string) []byte {
	t.Helper()
	pe, _ := peer(st, name)
	k, err := base64.StdEncoding.DecodeString(pe.PublicKey)
	if err != nil || len(k) != 32 {
		t.Fatalf("%s's public key %q: %v", name, pe.PublicKey, err)
	}
	return k
}

// forgeRecordMsg hand-encodes a gossip catalog record message (gossip's
// wire format, kind 1) for node name in site with WireGuard key wg (32
// bytes) carrying certificate crt (nil: none), signed by k, so that a test
// can inject what an attacker holding the cluster key could send.
func forgeRecordMsg(name, site string, wg, crt []byte, version uint64, exports []string, k ed25519.PrivateKey) []byte {
	str := func(b []byte, s string) []byte { return append(binary.AppendUvarint(b, uint64(len(s))), s...) }
	var in []byte
	in = str(in, name)
	in = binary.AppendUvarint(in, version)
	in = append(in, 0) // flags
	in = binary.AppendUvarint(in, uint64(len(exports)))
	for _, e := range exports {
		ex := str(nil, e)
		ex = binary.AppendVarint(ex, 1000)
		ex = append(ex, 1) // healthy
		in = binary.AppendUvarint(in, uint64(len(ex)))
		in = append(in, ex...)
	}
	in = str(in, site)
	in = str(in, string(wg))
	in = append(in, 0, 0) // tunnel, relay: none
	in = str(in, string(k.Public().(ed25519.PublicKey)))
	in = str(in, string(crt))
	in = append(in, ed25519.Sign(k, append([]byte("meshd-record-v1\x00"), in...))...)
	msg := []byte{1, 1}
	msg = binary.AppendUvarint(msg, uint64(len(in)))
	return append(msg, in...)
}

const yIntrRefused = `identity refused: no tunnel, no catalog entry, no streams from this record" node=y-intr`

// refusedBy reports whether one of nodes logged refusing y-intr.
func refusedBy(nodes ...*meshNode) bool {
	for _, n := range nodes {
		if countLines(n.logText(), yIntrRefused) > 0 {
			return true
		}
	}
	return false
}

// TestPKI: a three-site mesh with certificates (README "Identity and policy"). An intruder with
// the cluster key but a certificate from another CA, and an impersonator
// whose certificate does not allow the service it exports, get no
// connection; the intruder, which trusts the mesh CA too, gets no stream to
// an export open to all; an importer the export's allow list refuses is
// denied at once, without trying the other endpoint, counted on both sides;
// records forged by a gossip client holding the cluster key (without a
// certificate, and with the victim's own certificate) are dropped; a drill
// ordered by a node without the drill capability cuts nothing.
func TestPKI(t *testing.T) {
	c := newCluster(t)
	p := newPKI(t, c.dir, "mesh", "other")
	bA, bB := startCountingBackend(t, "a-1"), startCountingBackend(t, "b-1")
	bX, bY := startCountingBackend(t, "x-imp"), startCountingBackend(t, "y-intr")
	bB2 := startCountingBackend(t, "b-1") // b-1's svc2: no allow list
	// The intruder trusts the mesh CA as well as its own, so it lists the
	// mesh's nodes and tries to reach them.
	intruderTrust := filepath.Join(c.dir, "intruder-trust.crt")
	var trustPEM []byte
	for _, ca := range []string{"mesh", "other"} {
		b, err := os.ReadFile(filepath.Join(c.dir, ca, "ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		trustPEM = append(trustPEM, b...)
	}
	if err := os.WriteFile(intruderTrust, trustPEM, 0o644); err != nil {
		t.Fatal(err)
	}

	a1PKI := p.issue("mesh", "mesh", "a-1", "a", "--exports", "svc")
	a1 := c.start(nodeSpec{Name: "a-1", Site: "a",
		Exports: []exportSpec{{Name: "svc", Target: bA.Addr(), Allow: []string{"group:ok", "node:b-1"}}},
		PKI:     a1PKI, Metrics: true})
	b1 := c.start(nodeSpec{Name: "b-1", Site: "b",
		Exports: []exportSpec{{Name: "svc", Target: bB.Addr()}, {Name: "svc2", Target: bB2.Addr()}},
		PKI:     p.issue("mesh", "mesh", "b-1", "b", "--exports", "sv*")})
	cOKSpec := nodeSpec{Name: "c-ok", Site: "c",
		Imports: []importSpec{{Name: "svc", Sites: []string{"x", "y", "a", "b"}}, {Name: "svc2", Sites: []string{"b"}, ConnectTimeout: 2 * time.Second}},
		PKI:     p.issue("mesh", "mesh", "c-ok", "c", "--groups", "ok")}
	cOK := c.start(cOKSpec)
	cNo := c.start(nodeSpec{Name: "c-no", Site: "c",
		Imports: []importSpec{{Name: "svc", Sites: []string{"a", "b"}}},
		PKI:     p.issue("mesh", "mesh", "c-no", "c", "--groups", "web"), Metrics: true})
	c.start(nodeSpec{Name: "x-imp", Site: "x", // its certificate allows "other", not "svc"
		Exports: []exportSpec{{Name: "svc", Target: bX.Addr()}},
		PKI:     p.issue("mesh", "mesh", "x-imp", "x", "--exports", "other")})
	yIntr := c.start(nodeSpec{Name: "y-intr", Site: "y", // cluster key, but a certificate from another CA
		Exports: []exportSpec{{Name: "svc", Target: bY.Addr()}},
		Imports: []importSpec{{Name: "svc2", Sites: []string{"b"}, ConnectTimeout: 3 * time.Second}},
		PKI:     p.issue("other", intruderTrust, "y-intr", "y", "--exports", "*")})

	// c-ok lists the certified nodes and only the allowed exports.
	waitFor(t, 20*time.Second, "c-ok's view of the mesh", func() (bool, string) {
		st, err := tryStatus(t, cOK)
		if err != nil {
			return false, err.Error()
		}
		for _, name := range []string{"a-1", "b-1", "c-no", "x-imp"} {
			if pe, ok := peer(st, name); !ok || pe.State != "alive" {
				return false, name + " not alive yet"
			}
		}
		sv, _ := service(st, "svc")
		var eps []string
		for _, e := range sv.Endpoints {
			eps = append(eps, e.Node)
		}
		if strings.Join(eps, ",") != "a-1,b-1" {
			return false, fmt.Sprintf("svc endpoints %v, want a-1,b-1", eps)
		}
		// y-intr joins quietly (its record is held back until its name is
		// known to be free), so its record spreads by broadcast only, and
		// no refusing node passes it on: some nodes may never see it.
		if !refusedBy(a1, b1, cOK, cNo) {
			return false, "no node has refused y-intr yet"
		}
		if ok, why := foSeesUp(t, cOK, "svc", "a-1"); !ok {
			return false, why
		}
		return foSeesUp(t, cNo, "svc", "a-1")
	})
	st := status(t, cOK)
	if _, ok := peer(st, "y-intr"); ok {
		t.Errorf("c-ok lists the intruder y-intr as a peer")
	}
	if st.Node.Identity == nil || len(st.Node.Identity.Fingerprint) != 64 || st.Node.Identity.Groups[0] != "ok" {
		t.Errorf("c-ok's status node.identity = %+v", st.Node.Identity)
	}
	// At most one line on each refusing node (a node sees y-intr's record
	// only if gossip brought it: nobody passes it on).
	for _, n := range []*meshNode{cOK, cNo, a1, b1} {
		log := n.logText()
		got := countLines(log, yIntrRefused)
		if got > 1 || (got == 1 && !strings.Contains(log, "certificate from an unknown CA")) {
			t.Errorf("%s: %d refusal lines for y-intr (want at most one, naming the unknown CA)", n.Name, got)
		}
	}
	if !strings.Contains(cOK.logText(), `export refused: the node's certificate does not allow it" node=x-imp export=svc`) {
		t.Errorf("c-ok did not log refusing x-imp's svc")
	}

	// Every connection through c-ok lands on a-1, though it prefers the
	// impostor's and the intruder's sites.
	for i := range 5 {
		name, _, err := foExchange(cOK.Imports["svc"], i, 10*time.Second)
		if err != nil || name != "a-1" {
			t.Fatalf("c-ok connection %d: served by %q, %v; want a-1", i, name, err)
		}
	}

	// svc2 on b-1 is open to every node: c-ok gets it, the intruder, which
	// lists b-1's svc2 (it trusts the mesh CA), gets no stream.
	if name, _, err := foExchange(cOK.Imports["svc2"], 1, 10*time.Second); err != nil || name != "b-1" {
		t.Fatalf("c-ok svc2: served by %q, %v; want b-1", name, err)
	}
	waitFor(t, 15*time.Second, "y-intr lists b-1's svc2", func() (bool, string) {
		st, err := tryStatus(t, yIntr)
		if err != nil {
			return false, err.Error()
		}
		sv, _ := service(st, "svc2")
		ep, ok := serviceEndpoint(sv, "b-1")
		return ok && ep.Healthy, fmt.Sprintf("svc2 %+v", sv)
	})
	before := bB2.conns.Load()
	for i := range 2 {
		if _, _, name, err := foDial(yIntr.Imports["svc2"], 15*time.Second); err == nil || name != "" {
			t.Errorf("y-intr svc2 connection %d: served by %q; want no stream", i, name)
		}
	}
	if n := bB2.conns.Load() - before; n != 0 {
		t.Errorf("%d of the intruder's connections reached b-1's svc2 backend", n)
	}

	// c-no is refused by a-1's allow list: closed at once, b-1 not tried.
	for i := range 3 {
		start := time.Now()
		_, _, name, err := foDial(cNo.Imports["svc"], 10*time.Second)
		if err == nil || name != "" {
			t.Fatalf("c-no connection %d: served by %q; want it closed", i, name)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("c-no connection %d took %v to be closed", i, d)
		}
	}
	if got := scrape(t, cNo.Metrics, "meshd_import_connections_total", "import", "svc", "result", "denied"); got != 3 {
		t.Errorf("c-no import_connections_total{result=denied} = %v, want 3", got)
	}
	if got := scrape(t, a1.Metrics, "meshd_export_denied_total", "export", "svc"); got != 3 {
		t.Errorf("a-1 export_denied_total = %v, want 3", got)
	}
	if st := status(t, cNo); st.Imports[0].Denied != 3 {
		t.Errorf("c-no status denied = %d, want 3", st.Imports[0].Denied)
	}

	// A gossip client with the cluster key forges a-1's record: withdrawn
	// svc, highest version. c-ok drops it.
	fg := newForger(t, c, cOK)
	forgerKey := fg.key
	a1WG := peerKey(t, st, "a-1")
	a1PEM, err := os.ReadFile(a1PKI.Cert)
	if err != nil {
		t.Fatal(err)
	}
	a1Cert, _ := pem.Decode(a1PEM)
	if a1Cert == nil {
		t.Fatalf("%s: no PEM block", a1PKI.Cert)
	}
	send := func(msg []byte) { t.Helper(); fg.send(t, msg, "c-ok") }
	// Without a certificate, then with a-1's own (public) certificate, site
	// and WireGuard key: only the signature is the forger's.
	send(forgeRecordMsg("a-1", "a", make([]byte, 32), nil, math.MaxUint64, nil, forgerKey))
	waitFor(t, 5*time.Second, "c-ok drops the forged record", func() (bool, string) {
		return strings.Contains(cOK.logText(), `identity refused: no tunnel, no catalog entry, no streams from this record" node=a-1 reason="cert: no certificate"`), "no drop logged"
	})
	send(forgeRecordMsg("a-1", "a", a1WG, a1Cert.Bytes, math.MaxUint64, nil, forgerKey))
	waitFor(t, 5*time.Second, "c-ok drops the record forged with a-1's certificate", func() (bool, string) {
		return strings.Contains(cOK.logText(), `identity refused: no tunnel, no catalog entry, no streams from this record" node=a-1 reason="record not signed by the certificate's key"`), "no drop logged"
	})
	time.Sleep(500 * time.Millisecond)
	sv, _ := service(status(t, cOK), "svc")
	if ep, ok := serviceEndpoint(sv, "a-1"); !ok || !ep.Healthy {
		t.Errorf("after the forgery c-ok lists a-1's svc as %+v, %v", ep, ok)
	}
	if name, _, err := foExchange(cOK.Imports["svc"], 99, 10*time.Second); err != nil || name != "a-1" {
		t.Errorf("after the forgery: served by %q, %v", name, err)
	}

	// c-ok's certificate lacks the drill capability: a-1 refuses its order.
	out, errOut, code := runMeshd(t, 30*time.Second, "drill", "--site", "a", "--service", "svc", "--duration", "1500ms", "--json", "--config", cOK.Config)
	if code != 0 {
		t.Fatalf("drill: exit %d: %s", code, errOut)
	}
	var rep failover.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("drill report: %v: %s", err, out)
	}
	if len(rep.Services) != 1 || rep.Services[0].During != "a-1" || rep.Services[0].Failed != 0 {
		t.Errorf("drill without capability changed something: %+v", rep.Services)
	}
	if !strings.Contains(a1.logText(), `drill order refused: nothing cut" origin=c-ok`) {
		t.Errorf("a-1 did not log refusing c-ok's drill order")
	}
	if strings.Contains(a1.logText(), "drill: cutting") {
		t.Errorf("a-1 cut its links on c-ok's order")
	}

	// A stolen node: c-ok blocklists b-1's certificate (reload). b-1, with
	// a session to c-ok since the svc2 connection above, is refused at
	// once: gone from c-ok's peers and catalog, and no stream reaches it.
	fpB := status(t, b1).Node.Identity.Fingerprint
	cOKSpec.PKI.Blocklist = []string{fpB}
	c.writeConfig(cOK, cOKSpec, "")
	if _, errOut, code := runMeshd(t, 20*time.Second, "reload", "--config", cOK.Config); code != 0 {
		t.Fatalf("reload c-ok with b-1 blocklisted: exit %d: %s", code, errOut)
	}
	waitFor(t, 5*time.Second, "c-ok refuses the blocklisted b-1", func() (bool, string) {
		st := status(t, cOK)
		if _, ok := peer(st, "b-1"); ok {
			return false, "b-1 still a peer"
		}
		if sv, _ := service(st, "svc2"); len(sv.Endpoints) != 0 {
			return false, fmt.Sprintf("svc2 endpoints %+v", sv.Endpoints)
		}
		return strings.Contains(cOK.logText(), `node=b-1 reason="cert: certificate blocklisted`), "no refusal logged"
	})
	before = bB2.conns.Load()
	if _, _, name, err := foDial(cOK.Imports["svc2"], 10*time.Second); err == nil || name != "" {
		t.Errorf("c-ok svc2 after blocklisting b-1: served by %q", name)
	}
	if n := bB2.conns.Load() - before; n != 0 {
		t.Errorf("%d connections reached the blocklisted b-1's svc2", n)
	}

	if n := bX.conns.Load() + bY.conns.Load(); n != 0 {
		t.Errorf("%d connections reached the impostor's or the intruder's backend", n)
	}
	if n := bB.conns.Load(); n != 0 {
		t.Errorf("%d connections reached b-1 (c-no must not fall back to it, c-ok prefers a)", n)
	}
}

// TestForgedRecordNoPKI: without pki (README "Identity and policy", signed
// records), a gossip client holding the cluster key forges a-1's record —
// signed by its own key, a-1's site and WireGuard key, no exports, the
// highest version — and sends it to the importer and to a-1 itself. Both
// drop it with one line; the importer keeps a-1's svc and its connections
// land there; a-1's own record changes (maint on, off) still reach the
// importer, so its version was neither taken over nor wrapped.
func TestForgedRecordNoPKI(t *testing.T) {
	c := newCluster(t)
	bA := startCountingBackend(t, "a-1")
	a1 := c.start(nodeSpec{Name: "a-1", Site: "a", Exports: []exportSpec{{Name: "svc", Target: bA.Addr()}}})
	c1 := c.start(nodeSpec{Name: "c-1", Site: "c", Imports: []importSpec{{Name: "svc", Sites: []string{"a"}}}})
	waitFor(t, 20*time.Second, "c-1 sees a-1's svc", func() (bool, string) { return foSeesUp(t, c1, "svc", "a-1") })

	fg := newForger(t, c, c1)
	forged := forgeRecordMsg("a-1", "a", peerKey(t, status(t, c1), "a-1"), nil, math.MaxUint64, nil, fg.key)
	fg.send(t, forged, "c-1", "a-1")
	const dropped = `gossip: dropped a record" node=a-1 reason="record signed by another key than the node's"`
	waitFor(t, 5*time.Second, "c-1 and a-1 drop the forged record", func() (bool, string) {
		return strings.Contains(c1.logText(), dropped) && strings.Contains(a1.logText(), dropped), "no drop logged"
	})
	fg.send(t, forged, "c-1", "a-1") // again: no second line
	time.Sleep(500 * time.Millisecond)
	for _, n := range []*meshNode{c1, a1} {
		if got := countLines(n.logText(), dropped); got != 1 {
			t.Errorf("%s: %d lines about the forged records, want 1", n.Name, got)
		}
	}
	sv, _ := service(status(t, c1), "svc")
	if ep, ok := serviceEndpoint(sv, "a-1"); !ok || !ep.Healthy {
		t.Fatalf("after the forgery c-1 lists a-1's svc as %+v, %v", ep, ok)
	}
	for i := range 3 {
		if name, _, err := foExchange(c1.Imports["svc"], i, 10*time.Second); err != nil || name != "a-1" {
			t.Fatalf("after the forgery: connection %d served by %q, %v", i, name, err)
		}
	}
	// a-1's own changes still win at c-1.
	for _, step := range []struct {
		mode string
		want bool
	}{{"on", false}, {"off", true}} {
		if _, errOut, code := runMeshd(t, 10*time.Second, "maint", step.mode, "--config", a1.Config); code != 0 {
			t.Fatalf("maint %s: exit %d: %s", step.mode, code, errOut)
		}
		waitFor(t, 10*time.Second, "c-1 sees a-1's maint "+step.mode, func() (bool, string) {
			sv, _ := service(status(t, c1), "svc")
			ep, ok := serviceEndpoint(sv, "a-1")
			return (ok && ep.Healthy) == step.want, fmt.Sprintf("svc %+v", sv)
		})
	}
}
