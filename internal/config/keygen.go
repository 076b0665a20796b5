package config

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
)

// NewClusterKey returns a new random 32-byte cluster key in the form
// cluster.key and cluster.key_file take (base64, `meshd keygen`).
func NewClusterKey() (string, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return "", fmt.Errorf("config: cluster key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(k), nil
}
