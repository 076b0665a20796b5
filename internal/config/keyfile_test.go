package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKeyFileMode: a cluster key file group or others may read is refused
// with one line naming the config file, line, key, the key file and its
// mode; a 0600 one is accepted.
func TestKeyFileMode(t *testing.T) {
	dir := t.TempDir()
	kf := filepath.Join(dir, "cluster.key")
	if err := os.WriteFile(kf, []byte(key32+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "m.yaml")
	yaml := []byte("site: a\ncluster:\n  key_file: " + kf + "\n")
	if _, err := Parse(cfgFile, yaml, Overrides{}); err != nil {
		t.Fatalf("0600 key file refused: %v", err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660} {
		if err := os.Chmod(kf, mode); err != nil {
			t.Fatal(err)
		}
		_, err := Parse(cfgFile, yaml, Overrides{})
		if err == nil {
			t.Fatalf("mode %04o accepted", mode)
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, cfgFile+":3: cluster.key_file: "+kf+" is accessible by group or others") ||
			!strings.Contains(msg, "chmod 600") || strings.Contains(msg, "\n") {
			t.Errorf("mode %04o: %q", mode, msg)
		}
		if !strings.Contains(msg, "(mode "+modeOctal(mode)+")") {
			t.Errorf("mode %04o: message does not name the mode: %q", mode, msg)
		}
	}
}

func modeOctal(m os.FileMode) string {
	const digits = "01234567"
	p := uint32(m.Perm())
	return string([]byte{'0', digits[p>>6&7], digits[p>>3&7], digits[p&7]})
}
