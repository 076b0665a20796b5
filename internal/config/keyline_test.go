package config

import (
	"os"
	"path/filepath"
	"testing"
)

func TestKeyLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "n.yaml")
	text := "# a node\nname: n1\nsite: s1\ngossip:\n  bind: 127.0.0.1:7946\n\n  advertise: 10.0.0.1:7946\ntunnel: {listen: '127.0.0.1:51820'}\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]int{
		"name": 2, "site": 3, "gossip": 4, "gossip.bind": 5, "gossip.advertise": 7, "tunnel.listen": 8,
		"data_dir": 0, "gossip.nope": 0, "site.x": 0, "": 0,
	} {
		if got := KeyLine(path, key); got != want {
			t.Errorf("KeyLine(%q) = %d; want %d", key, got, want)
		}
	}
	if got := KeyLine(filepath.Join(t.TempDir(), "missing.yaml"), "site"); got != 0 {
		t.Errorf("KeyLine of a missing file = %d; want 0", got)
	}
	os.WriteFile(path, []byte("site: [unclosed\n"), 0o600)
	if got := KeyLine(path, "site"); got != 0 {
		t.Errorf("KeyLine of a broken file = %d; want 0", got)
	}
}
