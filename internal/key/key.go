// Package key holds a node's WireGuard (Curve25519) key pair and the mesh
// address derived from its public key. It is shared by every other package.
package key

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/curve25519"
)

// Len is the length in bytes of a private or public key.
const Len = 32

// FileName is the node key's file name inside data_dir.
const FileName = "node.key"

// MeshPrefix is the ULA /48 every mesh address lives in ("mesh" in ASCII).
var MeshPrefix = netip.MustParsePrefix("fd7a:6d65:7368::/48")

// PrivateKey is a Curve25519 private key, clamped.
type PrivateKey [Len]byte

// PublicKey is a Curve25519 public key; it names a node in the tunnel layer.
type PublicKey [Len]byte

// NewPrivate returns a new random, clamped private key.
func NewPrivate() (PrivateKey, error) {
	var k PrivateKey
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("key: random: %w", err)
	}
	k.clamp()
	return k, nil
}

func (k *PrivateKey) clamp() {
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
}

// Public returns the public key of k.
func (k PrivateKey) Public() PublicKey {
	var p PublicKey
	curve25519.ScalarBaseMult((*[32]byte)(&p), (*[32]byte)(&k))
	return p
}

// String returns k in standard base64.
func (k PrivateKey) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// Hex returns k in hex, as wireguard-go's UAPI wants it.
func (k PrivateKey) Hex() string { return hex.EncodeToString(k[:]) }

// String returns p in standard base64, the form shown to users.
func (p PublicKey) String() string { return base64.StdEncoding.EncodeToString(p[:]) }

// Hex returns p in hex, as wireguard-go's UAPI wants it.
func (p PublicKey) Hex() string { return hex.EncodeToString(p[:]) }

// IsZero reports whether p is unset.
func (p PublicKey) IsZero() bool { return p == PublicKey{} }

// Less orders public keys bytewise; the smaller key dials the session.
func (p PublicKey) Less(o PublicKey) bool {
	for i := range p {
		if p[i] != o[i] {
			return p[i] < o[i]
		}
	}
	return false
}

// ShortString returns the first 8 base64 characters, for logs.
func (p PublicKey) ShortString() string { return p.String()[:8] }

// ParsePublic parses a base64 public key.
func ParsePublic(s string) (PublicKey, error) {
	var p PublicKey
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != Len {
		return p, fmt.Errorf("key: %q is not a base64 %d-byte public key", s, Len)
	}
	copy(p[:], b)
	return p, nil
}

// ParsePublicHex parses a hex public key (wireguard-go UAPI form).
func ParsePublicHex(s string) (PublicKey, error) {
	var p PublicKey
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != Len {
		return p, fmt.Errorf("key: %q is not a hex %d-byte public key", s, Len)
	}
	copy(p[:], b)
	return p, nil
}

// ParsePrivate parses a base64 private key.
func ParsePrivate(s string) (PrivateKey, error) {
	var k PrivateKey
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != Len {
		return k, errors.New("key: not a base64 32-byte private key")
	}
	copy(k[:], b)
	k.clamp()
	return k, nil
}

// MeshIP returns the node's mesh address: MeshPrefix followed by the first
// 80 bits of SHA-256 of the public key. Unique without coordination.
func (p PublicKey) MeshIP() netip.Addr {
	sum := sha256.Sum256(p[:])
	var a [16]byte
	pfx := MeshPrefix.Addr().As16()
	copy(a[:6], pfx[:6])
	copy(a[6:], sum[:10])
	return netip.AddrFrom16(a)
}

// LoadOrCreate reads dir/node.key, or creates it (mode 0600, dir 0700) with
// a new key when it does not exist. A key file readable by others is refused.
func LoadOrCreate(dir string) (PrivateKey, error) {
	path := filepath.Join(dir, FileName)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		fi, err := os.Stat(path)
		if err == nil && fi.Mode().Perm()&0o077 != 0 {
			return PrivateKey{}, fmt.Errorf("key: %s has mode %v; want 0600 (chmod 600 %s)", path, fi.Mode().Perm(), path)
		}
		k, err := ParsePrivate(string(b))
		if err != nil {
			return k, fmt.Errorf("key: %s: %w", path, err)
		}
		return k, nil
	case !errors.Is(err, os.ErrNotExist):
		return PrivateKey{}, fmt.Errorf("key: read %s: %w", path, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return PrivateKey{}, fmt.Errorf("key: create data dir: %w", err)
	}
	k, err := NewPrivate()
	if err != nil {
		return k, err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(k.String()+"\n"), 0o600); err != nil {
		return k, fmt.Errorf("key: write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return k, fmt.Errorf("key: install %s: %w", path, err)
	}
	return k, nil
}
