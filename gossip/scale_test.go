package gossip

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/meshd/meshd/internal/cert"
	"github.com/meshd/meshd/internal/key"
)

// Gossip at fleet scale (issue 10, README "Scale"). A push/pull exchanges
// memberlist's node states and our catalog state (LocalState): both grow
// with the mesh. The catalog state is capped at maxStateBytes and
// maxStateRecords; past that, records are left out (and learnt from
// broadcasts instead). These tests encode the state of a mesh of a given
// size with realistic records: signed, with the node's certificate (pki
// set: the larger case), 5 exports per node.

// scaleRecords returns n signed records of nodes with exports exports each
// and, when withCert, a CA-issued certificate of realistic size.
func scaleRecords(t testing.TB, n, exports int, withCert bool) []*record {
	t.Helper()
	var ca *cert.CA
	if withCert {
		var err error
		if ca, err = cert.NewCA("fleet-ca", time.Now().Add(-time.Hour), 365*24*time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	recs := make([]*record, 0, n)
	for i := range n {
		name := fmt.Sprintf("node-%04d.dc%d", i, i%4)
		site := fmt.Sprintf("site-%d", i%4)
		var exps []Export
		for j := range exports {
			exps = append(exps, Export{Name: fmt.Sprintf("service-%02d", (i+j)%50), Weight: 1 + j, Healthy: true})
		}
		wg, err := key.NewPrivate()
		if err != nil {
			t.Fatal(err)
		}
		_, sk, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		var certRaw []byte
		if withCert {
			svc := make([]string, 0, len(exps))
			for _, e := range exps {
				svc = append(svc, e.Name)
			}
			c, err := ca.Sign(cert.Template{Name: name, Site: site, Groups: []string{"prod", "db"}, Exports: svc,
				NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(90 * 24 * time.Hour)},
				cert.NodeKey{WG: wg, Sign: sk})
			if err != nil {
				t.Fatal(err)
			}
			certRaw = c.Raw()
		}
		r := &record{name: name, version: uint64(time.Now().UnixNano()), exports: exps}
		m := Meta{Site: site, PublicKey: wg.Public(),
			Tunnel: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 51820)}
		signRecord(r, m, certRaw, sk)
		recs = append(recs, r)
	}
	return recs
}

// memberlistNodeStateBytes estimates one node's entry in memberlist's
// push/pull (a msgpack-encoded pushNodeState: Name, Addr, Port, Meta,
// Incarnation, State, Vsn, with their field names), from its name and meta
// lengths: 7 field names (41 bytes) and their headers, a map header, the
// values (IPv4 address, port, incarnation, state, 6 version bytes).
func memberlistNodeStateBytes(nameLen, metaLen int) int {
	return 1 + 41 + 7 + (2 + nameLen) + (2 + 4) + 3 + (3 + metaLen) + 5 + 1 + (1 + 6)
}

// TestStateAtFleetScale: the catalog state of 1,000 nodes with 5 exports
// each, signed and with certificates, encodes whole within the limits and
// decodes to the same verified records; so does memberlist's node state.
// It logs the sizes for 1,000 and 5,000 nodes (README's estimate).
func TestStateAtFleetScale(t *testing.T) {
	meta, err := encodeMeta(Meta{Site: "site-1", PublicKey: key.PublicKey{1}, Version: "v1.2.3+0123456789ab",
		Tunnel: netip.MustParseAddrPort("10.1.2.3:51820")})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		nodes    int
		withCert bool
		mustFit  bool
	}{
		{1000, false, true},
		{1000, true, true},
		{5000, false, false},
		{5000, true, false},
	} {
		t.Run(fmt.Sprintf("%d nodes cert=%v", tc.nodes, tc.withCert), func(t *testing.T) {
			if testing.Short() && tc.nodes > 1000 {
				t.Skip("short")
			}
			recs := scaleRecords(t, tc.nodes, 5, tc.withCert)
			b, dropped := encodeState(recs[0], recs[1:])
			perRecord := float64(len(b)) / float64(tc.nodes-dropped)
			mlState := tc.nodes * memberlistNodeStateBytes(len(recs[0].name), len(meta))
			t.Logf("FIGURES gossip state: %d nodes × 5 exports, cert %v: catalog state %d bytes (%.0f per node, limit %d bytes / %d records), %d records left out; memberlist node state ≈ %d bytes; push/pull ≈ %d bytes each way",
				tc.nodes, tc.withCert, len(b), perRecord, maxStateBytes, maxStateRecords, dropped, mlState, len(b)+mlState)
			if !tc.mustFit {
				return
			}
			if dropped != 0 || len(b) > maxStateBytes {
				t.Fatalf("%d nodes: state %d bytes, %d records left out; want all within %d", tc.nodes, len(b), dropped, maxStateBytes)
			}
			got, err := decodeState(b)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.nodes {
				t.Fatalf("decoded %d records, want %d", len(got), tc.nodes)
			}
			for i, r := range got {
				if r.name != recs[i].name || len(r.exports) != 5 || !r.verifySig() || r.meta.PublicKey != recs[i].meta.PublicKey ||
					(tc.withCert && len(r.cert) == 0) {
					t.Fatalf("record %d: %q, %d exports, signature ok %v", i, r.name, len(r.exports), r.verifySig())
				}
			}
			// memberlist caps a push/pull at 20 MiB (maxPushStateBytes)
			// and a node's meta at MetaMaxSize; the guard refuses a stream
			// declaring more than guardMaxMessage before reading it.
			if len(meta) > memberlist.MetaMaxSize || mlState+len(b) > min(20<<20, guardMaxMessage) {
				t.Fatalf("push/pull %d bytes, meta %d", mlState+len(b), len(meta))
			}
			// One record must travel as a broadcast message, too.
			if n := len(encodeRecordMsg(recs[0])); n > maxMessageBytes {
				t.Fatalf("record message %d bytes > %d", n, maxMessageBytes)
			}
		})
	}
}

// TestOwnRecordEchoIsQuiet: a node's own record, echoed back by the peers
// that rebroadcast it, does not bump its version (which would re-announce
// it, forever): an idle mesh's catalog stays still, and its gossip costs
// probes and acks only.
func TestOwnRecordEchoIsQuiet(t *testing.T) {
	var ns []*testNode
	for _, name := range []string{"a", "b", "c", "d"} {
		ns = append(ns, newNode(t, name))
	}
	for _, n := range ns[1:] {
		n.join(t, ns[0])
	}
	version := func(n *testNode) uint64 {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.version
	}
	waitFor(t, 10*time.Second, "the catalog to settle", func() string {
		v := version(ns[0])
		time.Sleep(500 * time.Millisecond)
		if w := version(ns[0]); w != v {
			return fmt.Sprintf("version %d -> %d", v, w)
		}
		return ""
	})
	v0, s0, at := version(ns[0]), ns[0].Stats(), time.Now()
	time.Sleep(2 * time.Second)
	s1 := ns[0].Stats()
	rate := float64(s1.BytesSent-s0.BytesSent) / time.Since(at).Seconds()
	t.Logf("idle gossip of one of 4 nodes: %.0f B/s sent", rate)
	if v := version(ns[0]); v != v0 {
		t.Fatalf("own record version moved %d -> %d in an idle mesh", v0, v)
	}
	if s1.BytesSent == s0.BytesSent || s1.BytesReceived == s0.BytesReceived {
		t.Fatalf("no gossip counted in 2 s: %+v -> %+v", s0, s1)
	}
}
