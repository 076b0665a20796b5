package node

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/meshd/meshd/failover"
	"github.com/meshd/meshd/gossip"
	"github.com/meshd/meshd/internal/cert"
	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/key"
)

// Identity and policy (README "Identity and policy") in the node.
//
// Without pki the node's WireGuard key is data_dir/node.key and its record
// signing key data_dir/sign.key; gossip pins the first signing key seen for
// a name. With pki both come from pki.key, every other node's record must
// carry a certificate that the configured CAs vouch for (checked by gossip
// through vetRecord before the record is stored, and again by admit on every
// reconcile, so that expiry and a reloaded CA file or blocklist apply to
// nodes already known), and each node's exports are cut down to those its
// certificate names. A refused node gets no tunnel peer (so WireGuard drops
// its packets: no session, no stream) and no catalog entry.

// refusalEvery bounds the log lines about one refused node or export.
const refusalEvery = time.Minute

// maxRefusalKeys bounds the refusal log's memory; beyond it the table is
// cleared (a few repeated lines at worst).
const maxRefusalKeys = 4096

// refusalLog logs a refusal once per key per refusalEvery, and at once when
// the reason changes.
type refusalLog struct {
	mu   sync.Mutex
	last map[string]refusal
}

type refusal struct {
	reason string
	at     time.Time
}

func (r *refusalLog) allow(key, reason string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil || len(r.last) >= maxRefusalKeys {
		r.last = make(map[string]refusal)
	}
	p, ok := r.last[key]
	if ok && p.reason == reason && now.Sub(p.at) < refusalEvery {
		return false
	}
	r.last[key] = refusal{reason: reason, at: now}
	return true
}

// loadKeys sets the node's WireGuard and signing keys and, with pki, its
// certificate bundle.
func (n *Node) loadKeys() error {
	if set := n.cfg.PKI.Set; set != nil {
		if err := os.MkdirAll(n.cfg.DataDir, 0o700); err != nil { // the control socket's default home
			return fmt.Errorf("node: create data dir: %w", err)
		}
		n.priv, n.signKey = set.Key.WG, set.Key.Sign
		n.pki.Store(set)
		for _, e := range n.cfg.Exports {
			if !set.Cert.MayExport(e.Name) {
				n.log.Warn("export not allowed by this node's certificate: other nodes will not list it",
					"export", e.Name, "cert", n.cfg.PKI.Cert)
			}
		}
	} else {
		var err error
		if n.priv, err = key.LoadOrCreate(n.cfg.DataDir); err != nil {
			return fmt.Errorf("node: %w", err)
		}
		if n.signKey, err = cert.LoadOrCreateSignKey(n.cfg.DataDir); err != nil {
			return fmt.Errorf("node: %w", err)
		}
	}
	n.pub = n.priv.Public()
	return nil
}

// ownCert returns this node's certificate in wire form (nil without pki).
func (n *Node) ownCert() []byte {
	if set := n.pki.Load(); set != nil {
		return set.Cert.Raw()
	}
	return nil
}

// identityCheck is the gossip Identity hook with pki, nil without.
func (n *Node) identityCheck() func(string, gossip.Meta, []byte, ed25519.PublicKey) error {
	if n.cfg.PKI.Set == nil {
		return nil
	}
	return n.vetRecord
}

// vetRecord accepts a node's record only if its certificate is valid now,
// names the node, binds its site and WireGuard key, and its signing key
// signed the record. Refusals are logged here (rate-limited).
func (n *Node) vetRecord(name string, m gossip.Meta, raw []byte, signKey ed25519.PublicKey) error {
	now := time.Now()
	c, err := n.verifyPeer(name, m, raw, now)
	if err == nil && !c.SigningKey.Equal(signKey) {
		err = errors.New("record not signed by the certificate's key")
	}
	if err != nil {
		n.logRefusal(name, err, now)
	}
	return err
}

// verifyPeer parses and checks a peer's certificate against the pool in
// force.
func (n *Node) verifyPeer(name string, m gossip.Meta, raw []byte, now time.Time) (*cert.Certificate, error) {
	set := n.pki.Load()
	if set == nil {
		return nil, nil
	}
	if len(raw) == 0 {
		return nil, &cert.Error{Reason: cert.NoCertificate}
	}
	c, err := n.certs.parse(raw)
	if err != nil {
		return nil, err
	}
	if err := set.Pool.VerifyPeer(c, name, m.Site, m.PublicKey, now); err != nil {
		return nil, err
	}
	return c, nil
}

func (n *Node) logRefusal(name string, err error, now time.Time) {
	if n.refusals.allow("node:"+name, err.Error(), now) {
		n.log.Warn("identity refused: no tunnel, no catalog entry, no streams from this record", "node", name, "reason", err.Error())
	}
}

// admit returns the members this node may deal with, and records their
// certificates in certs (by WireGuard key). Without pki every member is
// admitted, with an identity made of its signed name and site. With pki a
// member is admitted only with a valid certificate, and its exports are
// cut down to the names the certificate allows.
func (n *Node) admit(members []gossip.Member) (out []gossip.Member, certs map[key.PublicKey]*cert.Certificate) {
	now := time.Now()
	certs = make(map[key.PublicKey]*cert.Certificate, len(members))
	if n.pki.Load() == nil {
		for _, m := range members {
			if m.Signed && !m.Meta.PublicKey.IsZero() {
				certs[m.Meta.PublicKey] = &cert.Certificate{Name: m.Name, Site: m.Meta.Site}
			}
		}
		return members, certs
	}
	out = make([]gossip.Member, 0, len(members))
	for _, m := range members {
		if !m.Signed {
			continue // no record yet (or only refused ones): nothing to admit
		}
		c, err := n.verifyPeer(m.Name, m.Meta, m.Cert, now)
		if err != nil {
			n.logRefusal(m.Name, err, now)
			continue
		}
		kept := m.Exports[:0:0]
		for _, x := range m.Exports {
			if c.MayExport(x.Name) {
				kept = append(kept, x)
			} else if n.refusals.allow("export:"+m.Name+"/"+x.Name, "", now) {
				n.log.Warn("export refused: the node's certificate does not allow it", "node", m.Name, "export", x.Name)
			}
		}
		if m.Exports != nil {
			m.Exports = kept
		}
		out = append(out, m)
		certs[m.Meta.PublicKey] = c
	}
	return out, certs
}

// peerIdentity returns the certificate of the admitted node whose
// WireGuard key is pub (the session a stream came in on), or nil.
func (n *Node) peerIdentity(pub key.PublicKey) *cert.Certificate {
	c := n.catalog.Load()
	if c == nil {
		return nil
	}
	return c.certs[pub]
}

// mayConnect is the exporter's per-stream check of an export's allow list
// against the importing node's certificate.
func (n *Node) mayConnect(peer key.PublicKey, allow []string) (bool, string) {
	if len(allow) == 0 {
		return true, ""
	}
	c := n.peerIdentity(peer)
	if !cert.Allow(allow, c) {
		who := "unknown node " + peer.ShortString()
		if c != nil {
			who = c.Name
		}
		return false, who
	}
	return true, ""
}

// authorizeDrill accepts a drill order only if it is signed by the key of
// its origin, an admitted member: with pki the signing key in the origin's
// certificate, which must have the drill capability; without, the key that
// signs the origin's gossip record.
func (n *Node) authorizeDrill(o failover.DrillOrder, sealed, sig []byte) error {
	if sig == nil {
		return errors.New("unsigned drill order")
	}
	c := n.catalog.Load()
	m, ok := c.byName[o.Origin]
	if !ok {
		return fmt.Errorf("origin %q is not an admitted member", o.Origin)
	}
	pub := ed25519.PublicKey(m.SignKey)
	if n.pki.Load() != nil {
		crt := c.certs[m.Meta.PublicKey]
		if crt == nil {
			return errors.New("the origin has no valid certificate")
		}
		if !crt.Drill {
			return errors.New("the origin's certificate lacks the drill capability")
		}
		pub = crt.SigningKey
	}
	if !failover.VerifyDrillSignature(sealed, sig, pub) {
		return errors.New("not signed by the origin's key")
	}
	return nil
}

// openDrillOrder opens a sealed order with any of the cluster keys in
// force (rotation).
func (n *Node) openDrillOrder(sealed []byte) (failover.DrillOrder, error) {
	keys := n.Config().Cluster.Keys
	if len(keys) == 0 {
		keys = [][]byte{n.Config().Cluster.Key} // a config built in code (demo)
	}
	err := failover.ErrDrillAuth
	for _, k := range keys {
		var o failover.DrillOrder
		if o, err = failover.OpenDrillOrder(sealed, k, time.Now()); !errors.Is(err, failover.ErrDrillAuth) {
			return o, err
		}
	}
	return failover.DrillOrder{}, err
}

// reloadClusterKeys applies a changed cluster key file (rotation, README "Identity and policy"):
// the first key encrypts gossip and signs probes, relay handshakes and
// drill orders from now on; every listed key is accepted. A new set that
// shares no key with the running one would cut this node off the mesh at
// once, so it is refused: rotate in steps (README).
func (n *Node) reloadClusterKeys(old, cfg *config.Config) (func(), func(), error) {
	oldKeys, newKeys := old.Cluster.Keys, cfg.Cluster.Keys
	if len(newKeys) == 0 {
		newKeys = [][]byte{cfg.Cluster.Key}
	}
	if len(oldKeys) == 0 {
		oldKeys = [][]byte{old.Cluster.Key}
	}
	if slices.EqualFunc(oldKeys, newKeys, bytes.Equal) {
		return nil, nil, nil
	}
	shared := false
	for _, k := range newKeys {
		shared = shared || slices.ContainsFunc(oldKeys, func(o []byte) bool { return bytes.Equal(o, k) })
	}
	if !shared {
		return nil, nil, errors.New("cluster.key_file: the new keys share none with the running ones, which would cut this node off; " +
			"rotate in steps: add the new key as a second line, reload every node, move it first, reload, remove the old one, reload")
	}
	commit := func() {
		if err := n.gsp.SetKeys(newKeys); err != nil {
			n.log.Error("reload: gossip keys", "err", err)
		}
		n.tun.SetClusterKeys(newKeys)
		if n.rly != nil {
			n.rly.srv.SetClusterKeys(newKeys)
		}
		n.log.Info("cluster keys changed", "keys", len(newKeys))
	}
	return commit, nil, nil
}

// certCache keeps parsed certificates by their wire form, bounded.
type certCache struct {
	mu sync.Mutex
	m  map[string]*cert.Certificate
}

const maxCachedCerts = 4096

func (cc *certCache) parse(raw []byte) (*cert.Certificate, error) {
	cc.mu.Lock()
	c := cc.m[string(raw)]
	cc.mu.Unlock()
	if c != nil {
		return c, nil
	}
	c, err := cert.Parse(raw)
	if err != nil {
		return nil, err
	}
	cc.mu.Lock()
	if cc.m == nil || len(cc.m) >= maxCachedCerts {
		cc.m = make(map[string]*cert.Certificate)
	}
	cc.m[string(raw)] = c
	cc.mu.Unlock()
	return c, nil
}

// reloadPKI is the reload step for pki: a new CA file (several CAs during
// a rotation), blocklist or renewed certificate for the same keys applies
// at once; turning pki on or off, or new keys, needs a restart.
func (n *Node) reloadPKI(old, cfg *config.Config) (func(), func(), error) {
	oldSet, newSet := n.pki.Load(), cfg.PKI.Set
	switch {
	case oldSet == nil && newSet == nil:
		return nil, nil, nil
	case oldSet == nil || newSet == nil:
		return nil, nil, &RestartError{Key: "pki", Old: onOff(oldSet != nil), New: onOff(newSet != nil)}
	case newSet.Key.WG != oldSet.Key.WG || !newSet.Key.Sign.Equal(oldSet.Key.Sign):
		return nil, nil, &RestartError{Key: "pki.key", Old: "the running keys", New: "other keys"}
	}
	commit := func() {
		n.pki.Store(newSet)
		if err := n.gsp.SetCert(newSet.Cert.Raw()); err != nil {
			n.log.Warn("reload: certificate not gossiped", "err", err)
		}
		if newSet.Cert.Fingerprint() != oldSet.Cert.Fingerprint() {
			n.log.Info("certificate renewed", "fingerprint", newSet.Cert.Fingerprint().String(),
				"not_after", newSet.Cert.NotAfter.Format(time.RFC3339))
		}
		n.reconcile() // CAs or blocklist may admit or refuse known nodes
	}
	return commit, nil, nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// IdentityInfo describes this node's certificate for status (nil without
// pki).
func (n *Node) identityInfo() *cert.Info {
	set := n.pki.Load()
	if set == nil {
		return nil
	}
	in := set.Cert.Describe(time.Now())
	return &in
}
