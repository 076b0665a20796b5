package config

import "testing"

// TestNewClusterKey: a key DecodeClusterKey accepts, 32 bytes, new each time.
func TestNewClusterKey(t *testing.T) {
	a, err := NewClusterKey()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewClusterKey()
	k, err := DecodeClusterKey(a)
	if err != nil || len(k) != 32 || a == b {
		t.Errorf("NewClusterKey = %q (%d bytes, %v), then %q", a, len(k), err, b)
	}
}
