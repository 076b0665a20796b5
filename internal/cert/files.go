package cert

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/meshd/meshd/internal/key"
)

// PEM block types of the files this package writes.
const (
	pemCert    = "MESHD CERTIFICATE"
	pemCAKey   = "MESHD CA KEY"
	pemNodeKey = "MESHD NODE KEY"
)

// File names written by WriteCA and WriteNode.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// Key file bodies: version u8 (= 1), then
//
//	CA key:   Ed25519 seed (32 bytes)
//	node key: WireGuard private key (32 bytes), Ed25519 seed (32 bytes)
const keyVersion = 1

// CA is a certificate authority: its self-signed certificate and key.
type CA struct {
	Cert *Certificate
	Key  ed25519.PrivateKey
}

// NodeKey is a node's private keys: WireGuard and Ed25519 signing.
type NodeKey struct {
	WG   key.PrivateKey
	Sign ed25519.PrivateKey
}

// NewNodeKey returns fresh random node keys.
func NewNodeKey() (NodeKey, error) {
	wg, err := key.NewPrivate()
	if err != nil {
		return NodeKey{}, err
	}
	_, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return NodeKey{}, fmt.Errorf("cert: generate signing key: %w", err)
	}
	return NodeKey{WG: wg, Sign: sk}, nil
}

// NewCA creates a CA named name, valid from now for validity.
func NewCA(name string, now time.Time, validity time.Duration) (*CA, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("cert: generate CA key: %w", err)
	}
	c := &Certificate{IsCA: true, Name: name, SigningKey: pub,
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(validity)} // a minute of clock skew
	if err := c.sign(priv); err != nil {
		return nil, err
	}
	return &CA{Cert: c, Key: priv}, nil
}

// Template holds what a node certificate binds, besides keys and issuer.
type Template struct {
	Name, Site string
	Groups     []string
	Exports    []string
	Drill      bool
	NotBefore  time.Time
	NotAfter   time.Time
}

// Sign issues a node certificate for t binding the public halves of nk.
// A node certificate never outlives its CA.
func (ca *CA) Sign(t Template, nk NodeKey) (*Certificate, error) {
	if ca == nil || ca.Cert == nil || !ca.Cert.IsCA {
		return nil, errors.New("cert: not a CA")
	}
	if t.NotAfter.After(ca.Cert.NotAfter) {
		t.NotAfter = ca.Cert.NotAfter
	}
	c := &Certificate{Name: t.Name, Site: t.Site, Groups: t.Groups, Exports: t.Exports, Drill: t.Drill,
		WGKey: nk.WG.Public(), SigningKey: nk.Sign.Public().(ed25519.PublicKey),
		NotBefore: t.NotBefore, NotAfter: t.NotAfter, Issuer: ca.Cert.Fingerprint()}
	if err := c.sign(ca.Key); err != nil {
		return nil, err
	}
	return c, nil
}

// EncodePEM returns c as a PEM block.
func (c *Certificate) EncodePEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCert, Bytes: c.raw})
}

// ParsePEM decodes every certificate block of data (a CA file may hold
// several). Other block types are an error; so is data holding none.
func ParsePEM(data []byte) ([]*Certificate, error) {
	var out []*Certificate
	for {
		var blk *pem.Block
		blk, data = pem.Decode(data)
		if blk == nil {
			break
		}
		if blk.Type != pemCert {
			return nil, fmt.Errorf("cert: unexpected PEM block %q (want %q)", blk.Type, pemCert)
		}
		c, err := Parse(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
		if len(out) > 64 {
			return nil, errors.New("cert: more than 64 certificates in one file")
		}
	}
	if len(out) == 0 {
		return nil, errors.New("cert: no MESHD CERTIFICATE block found")
	}
	return out, nil
}

// ReadCertFile reads the one certificate in path.
func ReadCertFile(path string) (*Certificate, error) {
	cs, err := ReadCertsFile(path)
	if err != nil {
		return nil, err
	}
	if len(cs) != 1 {
		return nil, fmt.Errorf("cert: %s holds %d certificates; want 1", path, len(cs))
	}
	return cs[0], nil
}

// ReadCertsFile reads every certificate in path.
func ReadCertsFile(path string) ([]*Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cert: %w", err)
	}
	cs, err := ParsePEM(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cs, nil
}

// EncodeNodeKey returns nk as a PEM block.
func EncodeNodeKey(nk NodeKey) []byte {
	b := []byte{keyVersion}
	b = append(b, nk.WG[:]...)
	b = append(b, nk.Sign.Seed()...)
	return pem.EncodeToMemory(&pem.Block{Type: pemNodeKey, Bytes: b})
}

// ParseNodeKey decodes a node key file.
func ParseNodeKey(data []byte) (NodeKey, error) {
	b, err := decodeKey(data, pemNodeKey, key.Len+ed25519.SeedSize)
	if err != nil {
		return NodeKey{}, err
	}
	var nk NodeKey
	copy(nk.WG[:], b[:key.Len])
	wg, err := key.ParsePrivate(nk.WG.String()) // clamps
	if err != nil {
		return NodeKey{}, err
	}
	nk.WG = wg
	nk.Sign = ed25519.NewKeyFromSeed(b[key.Len:])
	return nk, nil
}

func decodeKey(data []byte, typ string, n int) ([]byte, error) {
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != typ {
		return nil, fmt.Errorf("cert: no %s block found", typ)
	}
	if len(blk.Bytes) != 1+n || blk.Bytes[0] != keyVersion {
		return nil, fmt.Errorf("cert: %s: bad length or unknown version", typ)
	}
	return blk.Bytes[1:], nil
}

// ReadNodeKeyFile reads a node key file, refusing one readable by others.
func ReadNodeKeyFile(path string) (NodeKey, error) {
	b, err := readSecret(path)
	if err != nil {
		return NodeKey{}, err
	}
	nk, err := ParseNodeKey(b)
	if err != nil {
		return NodeKey{}, fmt.Errorf("%s: %w", path, err)
	}
	return nk, nil
}

func readSecret(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("cert: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("cert: %s has mode %v; want 0600 (chmod 600 %s)", path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cert: %w", err)
	}
	return b, nil
}

// WriteCA writes dir/ca.crt and dir/ca.key (0600). It refuses to overwrite
// an existing CA key.
func WriteCA(dir string, ca *CA) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cert: %w", err)
	}
	kb := pem.EncodeToMemory(&pem.Block{Type: pemCAKey, Bytes: append([]byte{keyVersion}, ca.Key.Seed()...)})
	if err := writeNew(filepath.Join(dir, CAKeyFile), kb, 0o600); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, CACertFile), ca.Cert.EncodePEM(), 0o644)
}

// ReadCA reads a CA written by WriteCA.
func ReadCA(dir string) (*CA, error) {
	c, err := ReadCertFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, err
	}
	if !c.IsCA {
		return nil, fmt.Errorf("cert: %s is not a CA certificate", filepath.Join(dir, CACertFile))
	}
	kp := filepath.Join(dir, CAKeyFile)
	b, err := readSecret(kp)
	if err != nil {
		return nil, err
	}
	seed, err := decodeKey(b, pemCAKey, ed25519.SeedSize)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", kp, err)
	}
	k := ed25519.NewKeyFromSeed(seed)
	if !k.Public().(ed25519.PublicKey).Equal(c.SigningKey) {
		return nil, fmt.Errorf("cert: %s does not belong to %s", kp, filepath.Join(dir, CACertFile))
	}
	return &CA{Cert: c, Key: k}, nil
}

// WriteNode writes dir/NAME.crt and dir/NAME.key (0600). It refuses to
// overwrite an existing key file.
func WriteNode(dir string, c *Certificate, nk NodeKey) (certPath, keyPath string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("cert: %w", err)
	}
	certPath = filepath.Join(dir, c.Name+".crt")
	keyPath = filepath.Join(dir, c.Name+".key")
	if err := writeNew(keyPath, EncodeNodeKey(nk), 0o600); err != nil {
		return "", "", err
	}
	if err := writeFile(certPath, c.EncodePEM(), 0o644); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// writeNew creates path with data; an existing file is an error.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("cert: %s exists; not overwriting a key", path)
		}
		return fmt.Errorf("cert: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("cert: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("cert: write %s: %w", path, err)
	}
	return nil
}

// writeFile replaces path atomically.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("cert: write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("cert: install %s: %w", path, err)
	}
	return nil
}
