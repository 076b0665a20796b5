// Package cert is meshd's node identity (README "Identity and policy"): an offline certificate
// authority signs node certificates that bind a node's name, site, groups,
// the export names it may serve, its drill capability, its WireGuard public
// key and an Ed25519 signing key, for a validity window. Every node checks
// its peers' certificates locally against the CAs it trusts, as in Nebula.
//
// The format is a small versioned binary (below), carried in PEM blocks in
// files. Parsing never panics and bounds every field; it is fuzzed.
//
//	certificate = magic "MDC" u8×3, version u8 (= 1),
//	              tbs    length uvarint, then length bytes (signed),
//	              sig    64 bytes (Ed25519 by the issuer's signing key)
//	tbs         = kind u8 (0: node, 1: CA)
//	              name, site  str
//	              groups      count uvarint, str × count
//	              exports     count uvarint, str × count (glob patterns)
//	              flags       u8 (bit 0: may order drills)
//	              wgkey       32 bytes (zero in a CA certificate)
//	              signkey     32 bytes (Ed25519 public key)
//	              not_before, not_after  i64 big endian, Unix seconds
//	              issuer      32 bytes (SHA-256 fingerprint of the issuing CA
//	                          certificate; zero for a self-signed CA)
//	              …           unknown trailing bytes are ignored (signed, so
//	                          a later version may add fields)
//	str         = length uvarint, then that many bytes (UTF-8)
//
// A certificate's fingerprint is the SHA-256 of its whole binary form.
package cert

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/internal/wire"
)

// Version is the certificate format version this package writes.
const Version = 1

// Limits of the format; anything beyond them is rejected whole.
const (
	MaxNameLen  = 255
	MaxGroups   = 64
	MaxExports  = 256
	MaxCertSize = 16 << 10
)

var magic = []byte("MDC")

const (
	kindNode = 0
	kindCA   = 1

	flagDrill = 1 << 0
)

// ErrMalformed is wrapped by every parse error.
var ErrMalformed = errors.New("cert: malformed certificate")

// Certificate is a parsed node or CA certificate. Treat it as read-only.
type Certificate struct {
	IsCA       bool
	Name       string
	Site       string   // empty for a CA
	Groups     []string // never nil after parsing
	Exports    []string // glob patterns (path.Match) of the export names it may serve
	Drill      bool     // may order failover drills
	WGKey      key.PublicKey
	SigningKey ed25519.PublicKey // 32 bytes
	NotBefore  time.Time         // UTC, second precision
	NotAfter   time.Time
	Issuer     [32]byte // fingerprint of the issuing CA; zero when self-signed
	Signature  []byte   // 64 bytes

	flags byte // as parsed, so that unknown bits survive re-encoding

	raw []byte // the whole binary form, set by Parse and Sign
	tbs []byte // the signed part
}

// Fingerprint is a certificate's SHA-256 fingerprint.
type Fingerprint [32]byte

// String returns the fingerprint in lowercase hex.
func (f Fingerprint) String() string { return hex.EncodeToString(f[:]) }

// ParseFingerprint parses a hex fingerprint (64 characters).
func ParseFingerprint(s string) (Fingerprint, error) {
	var f Fingerprint
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != len(f) {
		return f, fmt.Errorf("cert: %q is not a 64-character hex fingerprint", s)
	}
	copy(f[:], b)
	return f, nil
}

// Raw returns the certificate's binary form (do not modify).
func (c *Certificate) Raw() []byte { return c.raw }

// Fingerprint returns the SHA-256 of the binary form.
func (c *Certificate) Fingerprint() Fingerprint { return sha256.Sum256(c.raw) }

// appendTBS appends the signed part of c.
func (c *Certificate) appendTBS(b []byte) []byte {
	kind := byte(kindNode)
	if c.IsCA {
		kind = kindCA
	}
	b = append(b, kind)
	b = wire.AppendString(b, c.Name)
	b = wire.AppendString(b, c.Site)
	b = binary.AppendUvarint(b, uint64(len(c.Groups)))
	for _, g := range c.Groups {
		b = wire.AppendString(b, g)
	}
	b = binary.AppendUvarint(b, uint64(len(c.Exports)))
	for _, e := range c.Exports {
		b = wire.AppendString(b, e)
	}
	flags := c.flags &^ flagDrill
	if c.Drill {
		flags |= flagDrill
	}
	b = append(b, flags)
	b = append(b, c.WGKey[:]...)
	sk := make([]byte, ed25519.PublicKeySize)
	copy(sk, c.SigningKey)
	b = append(b, sk...)
	b = binary.BigEndian.AppendUint64(b, uint64(c.NotBefore.Unix()))
	b = binary.BigEndian.AppendUint64(b, uint64(c.NotAfter.Unix()))
	return append(b, c.Issuer[:]...)
}

// check validates the fields of a certificate about to be signed.
func (c *Certificate) check() error {
	if err := checkName("name", c.Name); err != nil {
		return err
	}
	if !c.IsCA {
		if err := checkName("site", c.Site); err != nil {
			return err
		}
	}
	if len(c.Groups) > MaxGroups {
		return fmt.Errorf("cert: %d groups (at most %d)", len(c.Groups), MaxGroups)
	}
	for _, g := range c.Groups {
		if err := checkName("group", g); err != nil {
			return err
		}
	}
	if len(c.Exports) > MaxExports {
		return fmt.Errorf("cert: %d export patterns (at most %d)", len(c.Exports), MaxExports)
	}
	for _, e := range c.Exports {
		if err := checkName("export pattern", e); err != nil {
			return err
		}
		if _, err := path.Match(e, ""); err != nil {
			return fmt.Errorf("cert: export pattern %q: %w", e, err)
		}
	}
	if len(c.SigningKey) != ed25519.PublicKeySize {
		return errors.New("cert: signing key missing")
	}
	if !c.NotAfter.After(c.NotBefore) {
		return fmt.Errorf("cert: not_after %s is not after not_before %s", c.NotAfter.UTC().Format(time.RFC3339), c.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

func checkName(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("cert: empty %s", what)
	case len(s) > MaxNameLen:
		return fmt.Errorf("cert: %s %q is longer than %d bytes", what, s, MaxNameLen)
	case strings.ContainsAny(s, ", \t\r\n"):
		return fmt.Errorf("cert: %s %q contains a comma or white space", what, s)
	}
	return nil
}

// sign fills Signature and the binary form of c, signed by signer.
func (c *Certificate) sign(signer ed25519.PrivateKey) error {
	if err := c.check(); err != nil {
		return err
	}
	c.NotBefore = c.NotBefore.UTC().Truncate(time.Second)
	c.NotAfter = c.NotAfter.UTC().Truncate(time.Second)
	if c.Groups == nil {
		c.Groups = []string{}
	}
	if c.Exports == nil {
		c.Exports = []string{}
	}
	tbs := c.appendTBS(nil)
	c.Signature = ed25519.Sign(signer, tbs)
	raw := append([]byte(nil), magic...)
	raw = append(raw, Version)
	raw = binary.AppendUvarint(raw, uint64(len(tbs)))
	raw = append(raw, tbs...)
	raw = append(raw, c.Signature...)
	if len(raw) > MaxCertSize {
		return fmt.Errorf("cert: certificate of %d bytes exceeds %d", len(raw), MaxCertSize)
	}
	c.raw = raw
	c.tbs = raw[len(raw)-ed25519.SignatureSize-len(tbs) : len(raw)-ed25519.SignatureSize]
	return nil
}

// Parse decodes a certificate's binary form. It checks the format, not the
// signature or validity (see Pool.Verify). It never panics.
func Parse(b []byte) (*Certificate, error) {
	if len(b) > MaxCertSize {
		return nil, fmt.Errorf("%w: %d bytes (limit %d)", ErrMalformed, len(b), MaxCertSize)
	}
	if len(b) < len(magic)+1 || !bytes.Equal(b[:len(magic)], magic) {
		return nil, fmt.Errorf("%w: not a meshd certificate", ErrMalformed)
	}
	if b[len(magic)] != Version {
		return nil, fmt.Errorf("%w: unknown version %d", ErrMalformed, b[len(magic)])
	}
	r := newReader(b[len(magic)+1:])
	tbs := r.Bytes("signed part", MaxCertSize)
	sig := r.Fixed("signature", ed25519.SignatureSize)
	if r.Err == nil && len(r.Buf) != 0 {
		r.Fail("%d bytes after the signature", len(r.Buf))
	}
	if r.Err != nil {
		return nil, r.Err
	}
	c := &Certificate{Signature: append([]byte(nil), sig...)}
	t := newReader(tbs)
	switch t.Byte("kind") {
	case kindNode:
	case kindCA:
		c.IsCA = true
	default:
		t.Fail("unknown kind")
	}
	c.Name = t.str("name")
	c.Site = t.str("site")
	c.Groups = t.strs("group", MaxGroups)
	c.Exports = t.strs("export pattern", MaxExports)
	flags := t.Byte("flags")
	c.Drill = flags&flagDrill != 0
	c.flags = flags
	copy(c.WGKey[:], t.Fixed("wireguard key", key.Len))
	c.SigningKey = ed25519.PublicKey(append([]byte(nil), t.Fixed("signing key", ed25519.PublicKeySize)...))
	nb := t.Fixed("not_before", 8)
	na := t.Fixed("not_after", 8)
	copy(c.Issuer[:], t.Fixed("issuer", 32))
	if t.Err != nil {
		return nil, t.Err
	}
	c.NotBefore = time.Unix(int64(binary.BigEndian.Uint64(nb)), 0).UTC()
	c.NotAfter = time.Unix(int64(binary.BigEndian.Uint64(na)), 0).UTC()
	if c.Name == "" || (!c.IsCA && c.Site == "") {
		return nil, fmt.Errorf("%w: empty name or site", ErrMalformed)
	}
	c.raw = append([]byte(nil), b...)
	c.tbs = c.raw[len(c.raw)-ed25519.SignatureSize-len(tbs) : len(c.raw)-ed25519.SignatureSize]
	return c, nil
}

// CheckSignature reports whether c was signed by the holder of pub.
func (c *Certificate) CheckSignature(pub ed25519.PublicKey) bool {
	return len(pub) == ed25519.PublicKeySize && len(c.Signature) == ed25519.SignatureSize &&
		c.tbs != nil && ed25519.Verify(pub, c.tbs, c.Signature)
}

// reader decodes the format (wire.Decoder); the first error sticks.
type reader struct{ wire.Decoder }

func newReader(b []byte) *reader {
	return &reader{wire.Decoder{Buf: b, Malformed: ErrMalformed}}
}

func (r *reader) str(what string) string { return string(r.Bytes(what, MaxNameLen)) }

func (r *reader) strs(what string, limit int) []string {
	n := r.Uvarint(what + " count")
	if r.Err == nil && (n > uint64(limit) || n > uint64(len(r.Buf))) {
		r.Fail("%d %ss (limit %d)", n, what, limit)
	}
	if r.Err != nil {
		return nil
	}
	out := make([]string, 0, n)
	for range n {
		s := r.str(what)
		if r.Err != nil {
			return nil
		}
		if s == "" {
			r.Fail("empty %s", what)
			return nil
		}
		out = append(out, s)
	}
	return out
}
