package control

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/node"
)

// TestTypedRequests: each typed request reaches its path with its body and
// decodes the node's answer; a refused reload says nothing changed.
func TestTypedRequests(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(node.Status{Node: node.NodeStatus{Name: "n1", Site: "a"}})
	})
	reloadOK := true
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) {
		if !reloadOK {
			http.Error(w, "f.yaml:3: site: required", http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(node.ReloadResult{OK: true, File: "f.yaml", Changes: []string{"import x added"}})
	})
	mux.HandleFunc("POST /maint", func(w http.ResponseWriter, r *http.Request) {
		var req node.MaintRequest
		json.NewDecoder(r.Body).Decode(&req)
		json.NewEncoder(w).Encode(req) // the node answers the state it is in
	})
	mux.HandleFunc("POST /ping", func(w http.ResponseWriter, r *http.Request) {
		var req node.PingRequest
		json.NewDecoder(r.Body).Decode(&req)
		json.NewEncoder(w).Encode(node.PingResult{Peer: req.Peer, Sent: req.Count, Received: req.Count})
	})
	mux.HandleFunc("POST /drill", func(w http.ResponseWriter, r *http.Request) {
		var req node.DrillRequest
		json.NewDecoder(r.Body).Decode(&req)
		w.Write([]byte(`{"site":"` + req.Site + `"}`))
	})
	sock := serve(t, mux)
	ctx := context.Background()

	if st, err := Status(ctx, sock); err != nil || st.Node.Name != "n1" {
		t.Errorf("Status = %+v, %v", st.Node, err)
	}
	if res, err := Reload(ctx, sock); err != nil || res.File != "f.yaml" || len(res.Changes) != 1 {
		t.Errorf("Reload = %+v, %v", res, err)
	}
	reloadOK = false
	if _, err := Reload(ctx, sock); err == nil || err.Error() != "reload refused; nothing changed: f.yaml:3: site: required" {
		t.Errorf("refused Reload: %v", err)
	}
	if res, err := Maint(ctx, sock, true, "disk"); err != nil || !res.On || res.Reason != "disk" {
		t.Errorf("Maint on = %+v, %v", res, err)
	}
	if res, err := Ping(ctx, sock, node.PingRequest{Peer: "n2", Count: 3, IntervalMS: 10}); err != nil || res.Peer != "n2" || res.Received != 3 {
		t.Errorf("Ping = %+v, %v", res, err)
	}
	if rep, err := Drill(ctx, sock, node.DrillRequest{Site: "b", DurationMS: 1000}); err != nil || rep.Site != "b" {
		t.Errorf("Drill = %+v, %v", rep, err)
	}
}

func TestPingTimeout(t *testing.T) {
	if got, want := PingTimeout(node.PingRequest{Count: 4, IntervalMS: 1000}), 4*4*time.Second+10*time.Second; got != want {
		t.Errorf("PingTimeout = %v, want %v", got, want)
	}
}

// TestFindSocket: --socket wins, then the config's control.socket, then
// the default; a broken config is an error, except for the lenient form,
// which reads the socket from it anyway.
func TestFindSocket(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key := "key: " + strings.Repeat("A", 43) + "="
	good := write("good.yaml", "site: a\ndata_dir: "+dir+"\ncluster:\n  "+key+"\ncontrol:\n  socket: /run/good.sock\n")
	broken := write("broken.yaml", "site: a\ncolour: blue\ndata_dir: /var/lib/x\ncluster:\n  "+key+"\n")
	notYAML := write("notyaml.yaml", "site: [\n")
	for _, tc := range []struct {
		socket, file string
		lenient      bool
		want         string // "" : an error
	}{
		{"/s.sock", good, false, "/s.sock"},
		{"/s.sock", "/nonexistent.yaml", true, "/s.sock"},
		{"", "", false, DefaultSocket},
		{"", "", true, DefaultSocket},
		{"", good, false, "/run/good.sock"},
		{"", good, true, "/run/good.sock"},
		{"", broken, false, ""},
		{"", broken, true, "/var/lib/x/meshd.sock"},
		{"", notYAML, true, ""},
		{"", "/nonexistent.yaml", false, ""},
		{"", "/nonexistent.yaml", true, ""},
	} {
		find := FindSocket
		if tc.lenient {
			find = FindSocketLenient
		}
		got, err := find(tc.socket, tc.file)
		if tc.want == "" {
			if err == nil {
				t.Errorf("(%q, %q, lenient %v) = %q, want an error", tc.socket, tc.file, tc.lenient, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("(%q, %q, lenient %v) = %q, %v; want %q", tc.socket, tc.file, tc.lenient, got, err, tc.want)
		}
	}
}
