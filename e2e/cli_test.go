package e2e

import (
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// oneLine reports whether s is exactly one non-empty line.
func oneLine(s string) bool {
	s = strings.TrimSuffix(s, "\n")
	return s != "" && !strings.Contains(s, "\n")
}

// TestBadConfig: every bad config makes `meshd join` exit non-zero at
// once with one line naming the file, the line and the key, and leaves
// nothing listening.
func TestBadConfig(t *testing.T) {
	c := newCluster(t)
	gossipPort, tunnelPort := freePort(t), freePort(t)
	imp1, imp2 := addr(freePort(t)), addr(freePort(t))

	// base is a valid config; each case edits it. Line numbers below are
	// those of this template (1-based).
	base := func(dataDir string) []string {
		return []string{
			/* 1 */ "name: bad-1",
			/* 2 */ "site: onprem",
			/* 3 */ "data_dir: " + dataDir,
			/* 4 */ "cluster:",
			/* 5 */ "  key_file: " + c.keyFile,
			/* 6 */ "gossip:",
			/* 7 */ "  bind: " + addr(gossipPort),
			/* 8 */ "tunnel:",
			/* 9 */ "  listen: " + addr(tunnelPort),
			/* 10 */ "exports:",
			/* 11 */ "  - name: echo",
			/* 12 */ "    target: 127.0.0.1:7",
			/* 13 */ "    check:",
			/* 14 */ "      interval: 2s",
			/* 15 */ "      timeout: 1s",
			/* 16 */ "imports:",
			/* 17 */ "  - name: echo",
			/* 18 */ "    listen: " + imp1,
			/* 19 */ "  - name: other",
			/* 20 */ "    listen: " + imp2,
		}
	}
	// A key file others may read: refused by join and config check alike.
	openKey := filepath.Join(c.dir, "open.key")
	if k, err := os.ReadFile(c.keyFile); err != nil || os.WriteFile(openKey, k, 0o644) != nil || os.Chmod(openKey, 0o644) != nil {
		t.Fatalf("open key file: %v", err)
	}
	cases := []struct {
		name string
		edit func(l []string) []string
		line int    // expected line in the message; 0: the key is missing, no line
		key  string // expected key in the message
	}{
		{"unknown key", func(l []string) []string { return insert(l, 5, "colour: blue") }, 6, "colour"},
		{"unknown nested key", func(l []string) []string { return insert(l, 9, "  mtu: 1280") }, 10, "mtu"},
		{"bad address", func(l []string) []string { l[6] = "  bind: 127.0.0.1:notaport"; return l }, 7, "gossip.bind"},
		{"bad ip", func(l []string) []string { l[8] = "  listen: 300.1.2.3:51820"; return l }, 9, "tunnel.listen"},
		{"bad duration", func(l []string) []string { l[13] = "      interval: 5 parsecs"; return l }, 14, "interval"},
		{"missing site", func(l []string) []string { return remove(l, 2) }, 0, "site"},
		{"missing cluster key", func(l []string) []string { return remove(l, 5) }, 4, "cluster.key"},
		{"duplicate export names", func(l []string) []string {
			return insert(l, 15, "  - name: echo", "    target: 127.0.0.1:8")
		}, 16, "exports[1].name"},
		{"two imports on one listen address", func(l []string) []string { l[19] = "    listen: " + imp1; return l }, 20, "imports[1].listen"},
		{"cluster key readable by others", func(l []string) []string { l[4] = "  key_file: " + openKey; return l }, 5, "cluster.key_file"},
	}
	for i, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			cfg := filepath.Join(c.dir, "bad-"+strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			dataDir := filepath.Join(c.dir, fmt.Sprintf("bad%d", i))
			text := strings.Join(tc.edit(base(dataDir)), "\n") + "\n"
			if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			out, errOut, code := runMeshd(t, 10*time.Second, "join", "--config", cfg)
			took := time.Since(start)
			t.Logf("stderr: %s", strings.TrimSpace(errOut))
			if code == 0 {
				t.Fatalf("exit 0 for a bad config:\n%s", text)
			}
			if took > 3*time.Second {
				t.Errorf("took %s to reject the config", took)
			}
			if !oneLine(errOut) {
				t.Errorf("stderr is not one line:\n%s", errOut)
			}
			if out != "" {
				t.Errorf("stdout not empty: %q", out)
			}
			if !strings.Contains(errOut, cfg) {
				t.Errorf("stderr does not name the file %s: %s", cfg, errOut)
			}
			if tc.line > 0 && !strings.Contains(errOut, fmt.Sprintf("%s:%d:", cfg, tc.line)) {
				t.Errorf("stderr does not point at %s:%d: %s", filepath.Base(cfg), tc.line, errOut)
			}
			if strings.Contains(errOut, "invalid YAML") {
				t.Errorf("the test's config is not even YAML: %s", errOut)
			}
			if !strings.Contains(errOut, tc.key) {
				t.Errorf("stderr does not name the key %q: %s", tc.key, errOut)
			}
			// meshd config check (issue #12 problem 8) finds the same error
			// without starting anything: exit 1, the same line.
			cout, cerr, ccode := runMeshd(t, 10*time.Second, "config", "check", "--config", cfg)
			if ccode != 1 || cout != "" || !oneLine(cerr) || cerr != errOut {
				t.Errorf("config check: exit %d, stdout %q, stderr %q; want exit 1 and the line join printed, %q", ccode, cout, cerr, errOut)
			}
			for _, p := range []int{gossipPort, tunnelPort} {
				if err := portFree(p); err != nil {
					t.Errorf("port %d not free after the failed start: %v", p, err)
				}
			}
			for _, a := range []string{imp1, imp2} {
				l, err := net.Listen("tcp", a)
				if err != nil {
					t.Errorf("import address %s not free after the failed start: %v", a, err)
					continue
				}
				l.Close()
			}
			if _, err := os.Stat(filepath.Join(dataDir, "meshd.sock")); err == nil {
				t.Errorf("a control socket was left behind")
			}
		})
	}

	// config check reads the node key in data_dir when there is one: a
	// corrupt one fails the check (and would fail the start), naming data_dir.
	t.Run("config_check_node_key", func(t *testing.T) {
		dataDir := filepath.Join(c.dir, "badkey")
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			t.Fatal(err)
		}
		cfg := filepath.Join(c.dir, "badkey.yaml")
		if err := os.WriteFile(cfg, []byte(strings.Join(base(dataDir), "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if out, errOut, code := runMeshd(t, 10*time.Second, "config", "check", "--config", cfg); code != 0 || !strings.Contains(out, ": ok (node bad-1, site onprem, 1 exports, 2 imports)") {
			t.Fatalf("config check of the good base: exit %d, %q %q", code, out, errOut)
		}
		if err := os.WriteFile(filepath.Join(dataDir, "node.key"), []byte("not a key\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, errOut, code := runMeshd(t, 10*time.Second, "config", "check", "--config", cfg)
		if code != 1 || !oneLine(errOut) || !strings.Contains(errOut, cfg+": data_dir: ") {
			t.Errorf("config check with a corrupt node key: exit %d, stderr %q; want 1 and one line naming data_dir", code, errOut)
		}
	})

	// A valid config whose start fails half-way (an import's port is
	// taken) must also exit at once, with one line, releasing what it had
	// opened already.
	t.Run("start_fails_halfway", func(t *testing.T) {
		busy, err := net.Listen("tcp", imp2)
		if err != nil {
			t.Fatal(err)
		}
		defer busy.Close()
		cfg := filepath.Join(c.dir, "busy.yaml")
		dataDir := filepath.Join(c.dir, "busy")
		if err := os.WriteFile(cfg, []byte(strings.Join(base(dataDir), "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, errOut, code := runMeshd(t, 20*time.Second, "join", "--config", cfg)
		if code == 0 {
			t.Fatal("exit 0 although an import's listen address is in use")
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("took %s to fail", took)
		}
		// Logs go to stderr too (the export's check may already have
		// warned); the error is the last line.
		lines := strings.Split(strings.TrimRight(errOut, "\n"), "\n")
		if last := lines[len(lines)-1]; !strings.HasPrefix(last, "meshd: ") || !strings.Contains(last, imp2) {
			t.Errorf("want the last line of stderr to be the error naming %s, got:\n%s", imp2, errOut)
		}
		for _, p := range []int{gossipPort, tunnelPort} {
			if err := portFree(p); err != nil {
				t.Errorf("port %d not free after the failed start: %v", p, err)
			}
		}
		if _, err := os.Stat(filepath.Join(dataDir, "meshd.sock")); err == nil {
			t.Errorf("a control socket was left behind")
		}
	})
}

func insert(l []string, at int, lines ...string) []string {
	out := append([]string{}, l[:at]...)
	out = append(out, lines...)
	return append(out, l[at:]...)
}

// remove deletes the 1-based line n.
func remove(l []string, n int) []string {
	return append(append([]string{}, l[:n-1]...), l[n:]...)
}

// TestCLI checks the commands' help, keygen, version and usage errors.
func TestCLI(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"keygen", "join", "status", "demo", "version"}},
		{[]string{"join", "--help"}, []string{"--config", "--name", "--site", "--join", "--data-dir"}},
		{[]string{"status", "--help"}, []string{"--json", "--config", "--socket"}},
		{[]string{"keygen", "--help"}, []string{"keygen"}},
		{[]string{"version", "--help"}, []string{"version"}},
	} {
		out, errOut, code := runMeshd(t, 10*time.Second, tc.args...)
		if code != 0 {
			t.Errorf("meshd %s: exit %d: %s", strings.Join(tc.args, " "), code, errOut)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("meshd %s: output lacks %q:\n%s", strings.Join(tc.args, " "), w, out)
			}
		}
	}

	var keys []string
	for range 2 {
		out, errOut, code := runMeshd(t, 10*time.Second, "keygen")
		if code != 0 || errOut != "" {
			t.Fatalf("meshd keygen: exit %d stderr %q", code, errOut)
		}
		if !oneLine(out) || !strings.HasSuffix(out, "\n") {
			t.Errorf("keygen output is not one line: %q", out)
		}
		k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out))
		if err != nil || len(k) != 32 {
			t.Errorf("keygen output %q is not base64 of 32 bytes (%d bytes, %v)", out, len(k), err)
		}
		keys = append(keys, out)
	}
	if keys[0] == keys[1] {
		t.Errorf("two keygen runs printed the same key")
	}

	out, errOut, code := runMeshd(t, 10*time.Second, "version")
	if code != 0 {
		t.Errorf("meshd version: exit %d: %s", code, errOut)
	}
	for _, w := range []string{"meshd", "go1.", "wireguard-go", "memberlist", "yamux"} {
		if !strings.Contains(out, w) {
			t.Errorf("meshd version lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "unknown") {
		t.Errorf("meshd version has an unknown dependency version:\n%s", out)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"join"}, "config"},
		{[]string{"status", "--socket", "/nonexistent"}, "/nonexistent"},
		{[]string{"status", "--json", "--socket", "/nonexistent"}, "/nonexistent"},
		{[]string{"status", "--config", "/nonexistent.yaml"}, "/nonexistent.yaml"},
		{[]string{"no-such-command"}, "no-such-command"},
		{[]string{"status", "--no-such-flag"}, "no-such-flag"},
		{[]string{"join", "--config", "/nonexistent.yaml"}, "/nonexistent.yaml"},
		{[]string{"keygen", "extra-arg"}, "argument"},
	} {
		out, errOut, code := runMeshd(t, 10*time.Second, tc.args...)
		name := "meshd " + strings.Join(tc.args, " ")
		if code == 0 {
			t.Errorf("%s: exit 0, want an error", name)
		}
		if !oneLine(errOut) || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: want one line on stderr mentioning %q, got:\n%s", name, tc.want, errOut)
		}
		if strings.Contains(errOut, "panic") || strings.Contains(out, "goroutine ") {
			t.Errorf("%s: panicked:\n%s%s", name, out, errOut)
		}
	}
}
