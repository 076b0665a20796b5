package cert

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/meshd/meshd/internal/key"
)

// Reason says why a certificate is refused. Its String is what logs show.
type Reason int

// Refusal reasons (README "Identity and policy").
const (
	OK Reason = iota
	NoCertificate
	UnknownCA
	BadSignature
	Expired
	NotYetValid
	Blocklisted
	NameMismatch
	SiteMismatch
	KeyMismatch
	NotANode
)

var reasonText = [...]string{
	OK:            "ok",
	NoCertificate: "no certificate",
	UnknownCA:     "certificate from an unknown CA",
	BadSignature:  "bad CA signature",
	Expired:       "certificate expired",
	NotYetValid:   "certificate not yet valid",
	Blocklisted:   "certificate blocklisted",
	NameMismatch:  "certificate name does not match the node name",
	SiteMismatch:  "certificate site does not match the node's site",
	KeyMismatch:   "WireGuard key does not match the certificate",
	NotANode:      "a CA certificate used as a node certificate",
}

func (r Reason) String() string {
	if r >= 0 && int(r) < len(reasonText) {
		return reasonText[r]
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// Error is a refusal: the reason and the certificate's subject.
type Error struct {
	Reason Reason
	Detail string
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return "cert: " + e.Reason.String()
	}
	return "cert: " + e.Reason.String() + " (" + e.Detail + ")"
}

// ReasonOf returns the Reason of err (OK for nil, NoCertificate for other errors).
func ReasonOf(err error) Reason {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return NoCertificate
}

// Pool is a set of trusted CAs and a blocklist. It is immutable once built,
// so it can be shared and replaced whole on reload.
type Pool struct {
	cas   map[Fingerprint]*Certificate
	block map[Fingerprint]bool
}

// NewPool builds a pool from CA certificates and blocklisted fingerprints.
// A certificate that is not a self-signed CA is an error.
func NewPool(cas []*Certificate, blocklist []Fingerprint) (*Pool, error) {
	p := &Pool{cas: make(map[Fingerprint]*Certificate), block: make(map[Fingerprint]bool)}
	for _, c := range cas {
		if !c.IsCA {
			return nil, fmt.Errorf("cert: %q is not a CA certificate", c.Name)
		}
		if !c.CheckSignature(c.SigningKey) {
			return nil, fmt.Errorf("cert: CA %q: self-signature does not verify", c.Name)
		}
		p.cas[c.Fingerprint()] = c
	}
	if len(p.cas) == 0 {
		return nil, errors.New("cert: no CA certificate")
	}
	for _, f := range blocklist {
		p.block[f] = true
	}
	return p, nil
}

// CAs returns the number of trusted CAs.
func (p *Pool) CAs() int { return len(p.cas) }

// Verify checks that c is a node certificate signed by a trusted CA, valid
// at now, and neither it nor its CA is blocklisted.
func (p *Pool) Verify(c *Certificate, now time.Time) error {
	if c == nil {
		return &Error{Reason: NoCertificate}
	}
	subj := fmt.Sprintf("%s, fingerprint %.16s", c.Name, c.Fingerprint())
	if c.IsCA {
		return &Error{Reason: NotANode, Detail: subj}
	}
	if p.block[c.Fingerprint()] {
		return &Error{Reason: Blocklisted, Detail: subj}
	}
	ca := p.cas[c.Issuer]
	if ca == nil {
		return &Error{Reason: UnknownCA, Detail: subj}
	}
	if p.block[c.Issuer] {
		return &Error{Reason: Blocklisted, Detail: "its CA " + ca.Name}
	}
	if !c.CheckSignature(ca.SigningKey) {
		return &Error{Reason: BadSignature, Detail: subj}
	}
	switch {
	case now.Before(c.NotBefore):
		return &Error{Reason: NotYetValid, Detail: subj + ", valid from " + c.NotBefore.Format(time.RFC3339)}
	case !now.Before(c.NotAfter):
		return &Error{Reason: Expired, Detail: subj + ", expired " + c.NotAfter.Format(time.RFC3339)}
	case now.Before(ca.NotBefore):
		return &Error{Reason: NotYetValid, Detail: "its CA " + ca.Name}
	case !now.Before(ca.NotAfter):
		return &Error{Reason: Expired, Detail: "its CA " + ca.Name + ", expired " + ca.NotAfter.Format(time.RFC3339)}
	}
	return nil
}

// VerifyPeer checks c as the certificate of the node that gossips as name
// in site with WireGuard key wg: Verify plus the bindings.
func (p *Pool) VerifyPeer(c *Certificate, name, site string, wg key.PublicKey, now time.Time) error {
	if err := p.Verify(c, now); err != nil {
		return err
	}
	switch {
	case c.Name != name:
		return &Error{Reason: NameMismatch, Detail: fmt.Sprintf("certificate for %q", c.Name)}
	case c.Site != site:
		return &Error{Reason: SiteMismatch, Detail: fmt.Sprintf("certificate for site %q, node in %q", c.Site, site)}
	case c.WGKey != wg:
		return &Error{Reason: KeyMismatch}
	}
	return nil
}

// MayExport reports whether c allows serving an export named name: one of
// its glob patterns (path.Match syntax) matches.
func (c *Certificate) MayExport(name string) bool {
	if c == nil {
		return false
	}
	for _, pat := range c.Exports {
		if ok, err := path.Match(pat, name); err == nil && ok {
			return true
		}
	}
	return false
}

// InGroup reports whether c lists group g.
func (c *Certificate) InGroup(g string) bool {
	for _, x := range c.Groups {
		if x == g {
			return true
		}
	}
	return false
}

// ValidSelector reports whether s is an allow selector: "*", "site:S",
// "group:G" or "node:N" with a non-empty value.
func ValidSelector(s string) error {
	if s == "*" {
		return nil
	}
	kind, v, ok := strings.Cut(s, ":")
	if ok && v != "" {
		switch kind {
		case "site", "group", "node":
			return nil
		}
	}
	return fmt.Errorf("cert: selector %q: want \"*\", site:NAME, group:NAME or node:NAME", s)
}

// Allow is the policy check of an export's allow list: whether the node
// holding c may connect. An empty list allows everyone (the default "*");
// a nil certificate matches only "*". Invalid selectors match nothing.
func Allow(selectors []string, c *Certificate) bool {
	if len(selectors) == 0 {
		return true
	}
	for _, s := range selectors {
		if s == "*" {
			return true
		}
		if c == nil {
			continue
		}
		kind, v, _ := strings.Cut(s, ":")
		switch {
		case v == "":
		case kind == "site" && c.Site == v:
			return true
		case kind == "group" && c.InGroup(v):
			return true
		case kind == "node" && c.Name == v:
			return true
		}
	}
	return false
}

// Bundle is a node's loaded pki: the CAs it trusts (with the blocklist),
// its own certificate and its private keys. Immutable; replaced on reload.
type Bundle struct {
	Pool *Pool
	Cert *Certificate
	Key  NodeKey
}

// NewBundle checks that crt belongs to nk and is valid for the node named
// name in site at now, and returns the bundle.
func NewBundle(pool *Pool, crt *Certificate, nk NodeKey, name, site string, now time.Time) (*Bundle, error) {
	if err := pool.VerifyPeer(crt, name, site, crt.WGKey, now); err != nil {
		return nil, err
	}
	if crt.WGKey != nk.WG.Public() || !crt.SigningKey.Equal(nk.Sign.Public()) {
		return nil, errors.New("cert: the key file does not hold the keys the certificate binds")
	}
	return &Bundle{Pool: pool, Cert: crt, Key: nk}, nil
}
