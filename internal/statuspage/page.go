// Package statuspage serves a node's status page next to /metrics on
// metrics.listen (README "Status page and metrics"):
//
//	GET /             one self-contained HTML page (embedded; no external
//	                  scripts, fonts or CDNs) that fetches the two APIs
//	                  below every few seconds and redraws: sites with their
//	                  nodes, this node's peer links, services, imports,
//	                  maintenance and a timeline of the last drills
//	GET /api/status   the node's docs/formats.md status JSON
//	GET /api/drills   the last drill reports (a bounded Ring) and the one
//	                  running now, if any
//
// The package knows nothing of the node: the node passes its status as a
// function and records drills in a Ring. Anyone who can reach the address
// can read the page, so everything it shows is the same as /metrics and
// `meshd status` show; the status is computed at most once per
// statusEvery however many clients poll.
package statuspage

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

//go:embed index.html
var indexHTML []byte

// statusEvery is how old a served status may be: the page polls every
// 2 s, and a status reads WireGuard's UAPI dump.
const statusEvery = time.Second

// Source is what the page shows.
type Source struct {
	Status func() any // docs/formats.md status, marshalled as JSON
	Drills *Ring      // nil: no drills
}

// Handler returns the handler for GET /, /api/status and /api/drills.
// Other paths are 404.
func Handler(src Source) http.Handler {
	return newHandler(src, statusEvery)
}

func newHandler(src Source, every time.Duration) http.Handler {
	h := &handler{src: src, every: every, csp: contentSecurityPolicy(indexHTML)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", h.index)
	mux.HandleFunc("GET /api/status", h.status)
	mux.HandleFunc("GET /api/drills", h.drills)
	return mux
}

type handler struct {
	src   Source
	every time.Duration // how long a status is reused
	csp   string

	mu   sync.Mutex
	at   time.Time // guarded by mu; when status was made
	body []byte    // guarded by mu; the last status JSON
}

func (h *handler) index(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Content-Security-Policy", h.csp)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-cache")
	w.Write(indexHTML)
}

func (h *handler) status(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	if h.body == nil || time.Since(h.at) >= h.every {
		var v any = struct{}{}
		if h.src.Status != nil {
			v = h.src.Status()
		}
		b, err := json.Marshal(v)
		if err != nil {
			h.mu.Unlock()
			http.Error(w, "status: "+err.Error(), http.StatusInternalServerError)
			return
		}
		h.body, h.at = b, time.Now()
	}
	b := h.body
	h.mu.Unlock()
	writeJSON(w, b)
}

func (h *handler) drills(w http.ResponseWriter, r *http.Request) {
	var d Drills
	if h.src.Drills != nil {
		d = h.src.Drills.Snapshot()
	} else {
		d.Drills = []Drill{}
	}
	b, err := json.Marshal(d)
	if err != nil {
		http.Error(w, "drills: "+err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, b)
}

func writeJSON(w http.ResponseWriter, b []byte) {
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Cache-Control", "no-store")
	w.Write(b)
}

// contentSecurityPolicy allows the page's own inline script and style
// (by hash) and requests to its own origin, nothing else: no external
// asset could load even if a name in the status tried to inject one.
func contentSecurityPolicy(page []byte) string {
	hash := func(open, close string) string {
		_, rest, ok := bytes.Cut(page, []byte(open))
		if !ok {
			return "'none'"
		}
		body, _, _ := bytes.Cut(rest, []byte(close))
		sum := sha256.Sum256(body)
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	return "default-src 'none'; connect-src 'self'; img-src 'self' data:; " +
		"script-src " + hash("<script>", "</script>") + "; style-src " + hash("<style>", "</style>") +
		"; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}
