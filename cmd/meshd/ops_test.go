package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/failover"
	"github.com/meshd/meshd/internal/cliargs"
	"github.com/meshd/meshd/node"
)

// fakeNode serves a node's control API on a unix socket with canned
// answers and records the request bodies.
func fakeNode(t *testing.T) (sock string, bodies map[string]string) {
	t.Helper()
	bodies = map[string]string{}
	mux := http.NewServeMux()
	reply := func(pattern string, f func(body []byte) (int, any)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			var b bytes.Buffer
			b.ReadFrom(r.Body)
			bodies[r.URL.Path] = b.String()
			code, v := f(b.Bytes())
			if code != http.StatusOK {
				http.Error(w, v.(string), code)
				return
			}
			json.NewEncoder(w).Encode(v)
		})
	}
	reply("GET /status", func([]byte) (int, any) {
		return 200, node.Status{Node: node.NodeStatus{Name: "n1", Site: "a", Mode: "userspace"}}
	})
	reply("POST /maint", func(b []byte) (int, any) {
		var req node.MaintRequest
		json.Unmarshal(b, &req)
		return 200, req
	})
	reply("POST /reload", func([]byte) (int, any) { return http.StatusBadRequest, "f.yaml:2: site: required" })
	reply("POST /ping", func(b []byte) (int, any) {
		var req node.PingRequest
		json.Unmarshal(b, &req)
		if req.Peer == "gone" {
			return 200, node.PingResult{Peer: "gone", Sent: req.Count}
		}
		return 200, node.PingResult{Peer: req.Peer, Site: "b", Sent: 1, Received: 1,
			Replies: []node.PingReply{{Seq: 1, OK: true, RTTMs: 1, Path: "direct", Endpoint: "10.0.0.2:1"}}}
	})
	reply("POST /drill", func(b []byte) (int, any) { return 200, failover.Report{Site: "b"} })
	sock = filepath.Join(t.TempDir(), "n.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sock, bodies
}

// run runs meshd with args as main does: stdout, the error line and the
// exit code.
func run(args ...string) (out, errLine string, code int) {
	app := newApp()
	var b bytes.Buffer
	app.Writer = &b
	err := app.Run(cliargs.Interspersed(app, append([]string{"meshd"}, args...)))
	if err != nil {
		code = 1
		var ec cli.ExitCoder
		if errors.As(err, &ec) {
			code = ec.ExitCode()
		}
		errLine = err.Error()
	}
	return b.String(), errLine, code
}

// TestNodeCommands: the commands that talk to a node send what their
// flags say and print the node's answers, with their exit codes.
func TestNodeCommands(t *testing.T) {
	sock, bodies := fakeNode(t)
	for _, tc := range []struct {
		args     []string
		out, err string // prefixes; err "" means no error
		code     int
		path     string // the request, and its body
		body     string
	}{
		{args: []string{"status"}, out: "node n1  site a  mesh   mode userspace\n"},
		{args: []string{"status", "--json"}, out: "{\n  \"node\": {\n    \"name\": \"n1\","},
		{args: []string{"maint", "on", "--reason", "disk swap"}, out: "maintenance on (disk swap): exports withdrawn, new streams refused\n",
			path: "/maint", body: `{"on":true,"reason":"disk swap"}`},
		{args: []string{"maint", "off", "--json"}, out: `{"on":false}` + "\n", path: "/maint", body: `{"on":false}`},
		{args: []string{"reload"}, err: "reload refused; nothing changed: f.yaml:2: site: required", code: 1},
		{args: []string{"ping", "n2", "--count", "1", "--interval", "10ms"}, out: "PING n2 (site b) through the tunnel\nseq=1 rtt=1.000ms",
			path: "/ping", body: `{"peer":"n2","count":1,"interval_ms":10}`},
		{args: []string{"ping", "gone", "-n", "2"}, out: "PING gone", code: 1, err: "", path: "/ping", body: `{"peer":"gone","count":2,"interval_ms":1000}`},
		{args: []string{"drill", "--site", "a"}, err: "--site a is this node's own site", code: 2},
		{args: []string{"drill", "--site", "b", "--duration", "2s", "--service", "echo", "--json"}, out: "{\n  \"site\": \"b\",",
			path: "/drill", body: `{"site":"b","service":"echo","duration_ms":2000}`},
		{args: []string{"ping", "n2", "--count", "0"}, err: "--count 0 not allowed: use 1..100", code: 2},
		{args: []string{"status", "x"}, err: `status takes no arguments, got "x"`, code: 2},
	} {
		delete(bodies, tc.path)
		out, errLine, code := run(append(tc.args, "--socket", sock)...)
		name := strings.Join(tc.args, " ")
		if code != tc.code || !strings.HasPrefix(out, tc.out) || !strings.HasPrefix(errLine, tc.err) || (tc.err == "" && tc.code == 0 && errLine != "") {
			t.Errorf("meshd %s: exit %d, error %q, out:\n%s\nwant exit %d, error %q, out %q...", name, code, errLine, out, tc.code, tc.err, tc.out)
		}
		if tc.path != "" && strings.TrimSpace(bodies[tc.path]) != tc.body {
			t.Errorf("meshd %s: sent %s %q, want %q", name, tc.path, bodies[tc.path], tc.body)
		}
	}
}
