package control

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "c.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestGetAndDo(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"name":"n1","peers":3}`))
	})
	mux.HandleFunc("POST /drill", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Site string }
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		if req.Site == "" {
			http.Error(w, "drill: no site", http.StatusBadRequest)
			return
		}
		w.Write([]byte(`{"site":"` + req.Site + `"}`))
	})
	sock := serve(t, mux)
	ctx := context.Background()

	var st struct {
		Name  string
		Peers int
	}
	if err := Get(ctx, sock, "/status", &st); err != nil || st.Name != "n1" || st.Peers != 3 {
		t.Fatalf("Get = %+v, %v", st, err)
	}
	var rep struct{ Site string }
	if err := Do(ctx, sock, http.MethodPost, "/drill", map[string]string{"site": "onprem"}, &rep, time.Second); err != nil || rep.Site != "onprem" {
		t.Fatalf("Do = %+v, %v", rep, err)
	}
	// The node's message is the error, as one line.
	err := Do(ctx, sock, http.MethodPost, "/drill", map[string]string{}, &rep, time.Second)
	if err == nil || err.Error() != "drill: no site" {
		t.Fatalf("Do without site: %v, want the node's message", err)
	}
	if err := Get(ctx, sock, "/nothing", &st); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("Get /nothing: %v, want 404", err)
	}
}

func TestUnreachable(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	var v any
	err := Get(context.Background(), sock, "/status", &v)
	if err == nil || !strings.Contains(err.Error(), "cannot reach the node at "+sock) || strings.Contains(err.Error(), "http://") {
		t.Fatalf("Get on a missing socket: %v", err)
	}
}

func TestBadJSON(t *testing.T) {
	sock := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("not json")) }))
	var v map[string]any
	if err := Get(context.Background(), sock, "/status", &v); err == nil || !strings.HasPrefix(err.Error(), "decode /status: ") {
		t.Fatalf("Get of bad JSON: %v", err)
	}
}
