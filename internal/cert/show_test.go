package cert

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestShow: text blocks separated by one empty line, or one JSON object
// per certificate; expiry as seen at now.
func TestShow(t *testing.T) {
	ca := newCA(t, "test-ca")
	c, _ := issue(t, ca, Template{Name: "n1", Site: "a", Groups: []string{"g"}, Drill: true})
	var b strings.Builder
	Show(&b, []*Certificate{c, ca.Cert}, t0.Add(time.Hour), false)
	blocks := strings.Split(b.String(), "\n\n")
	if len(blocks) != 2 || !strings.HasPrefix(blocks[0], "kind:        node\nname:        n1\nsite:        a\ngroups:      g\n") ||
		!strings.Contains(blocks[0], "expires in:  23h0m0s\n") || !strings.HasPrefix(blocks[1], "kind:        ca\nname:        test-ca\n") ||
		!strings.HasSuffix(blocks[1], "fingerprint: "+ca.Cert.Fingerprint().String()+"\n") {
		t.Errorf("Show text:\n%s", b.String())
	}
	b.Reset()
	Show(&b, []*Certificate{c, ca.Cert}, t0.Add(48*time.Hour), true)
	dec := json.NewDecoder(strings.NewReader(b.String()))
	var kinds []string
	for dec.More() {
		var in Info
		if err := dec.Decode(&in); err != nil {
			t.Fatalf("Show JSON: %v\n%s", err, b.String())
		}
		if in.Kind == "node" && (!in.Expired || in.ExpiresIn != "expired" || !in.Drill) {
			t.Errorf("node at +48h: %+v", in)
		}
		kinds = append(kinds, in.Kind)
	}
	if strings.Join(kinds, ",") != "node,ca" || !strings.HasPrefix(b.String(), "{\n  \"kind\": \"node\",") {
		t.Errorf("Show JSON: kinds %v\n%s", kinds, b.String())
	}
}
