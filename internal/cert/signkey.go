package cert

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// SignKeyFile is the node's record-signing key inside data_dir, used when
// pki is not configured (README "Identity and policy", last paragraph).
const SignKeyFile = "sign.key"

const pemSignKey = "MESHD SIGNING KEY"

// LoadOrCreateSignKey reads dir/sign.key, or creates it (0600) with a new
// Ed25519 key when it does not exist. A file readable by others is refused.
func LoadOrCreateSignKey(dir string) (ed25519.PrivateKey, error) {
	path := filepath.Join(dir, SignKeyFile)
	b, err := readSecret(path)
	if err == nil {
		seed, err := decodeKey(b, pemSignKey, ed25519.SeedSize)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return ed25519.NewKeyFromSeed(seed), nil
	}
	if _, statErr := os.Stat(path); !errors.Is(statErr, os.ErrNotExist) {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cert: create data dir: %w", err)
	}
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("cert: generate signing key: %w", err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: pemSignKey, Bytes: append([]byte{keyVersion}, k.Seed()...)})
	if err := writeNew(path, data, 0o600); err != nil {
		return nil, err
	}
	return k, nil
}
