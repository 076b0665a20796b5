package cert

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Default validities of `meshd ca init` and `meshd cert sign`.
const (
	DefaultCAValidity   = 87600 * time.Hour // 10 years
	DefaultNodeValidity = 8760 * time.Hour  // 1 year
)

// InitCA creates a CA in dir (ca.crt, ca.key 0600), for `meshd ca init`.
func InitCA(dir, name string, validity time.Duration, now time.Time) (*CA, error) {
	if validity <= 0 {
		return nil, fmt.Errorf("cert: validity %v must be positive", validity)
	}
	if name == "" {
		name = "meshd-ca"
	}
	if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); err == nil {
		return nil, fmt.Errorf("cert: %s exists; not overwriting a CA", filepath.Join(dir, CAKeyFile))
	}
	ca, err := NewCA(name, now, validity)
	if err != nil {
		return nil, err
	}
	if err := WriteCA(dir, ca); err != nil {
		return nil, err
	}
	return ca, nil
}

// SignNode issues a node identity with the CA in caDir, for `meshd cert
// sign`: outDir/NAME.crt and outDir/NAME.key (0600). If outDir/NAME.key
// exists, its keys are kept and only the certificate is replaced: that is a
// renewal, picked up by `meshd reload` without changing the node's keys.
func SignNode(caDir, outDir string, t Template, validity time.Duration, now time.Time) (c *Certificate, renewed bool, err error) {
	if validity <= 0 {
		return nil, false, fmt.Errorf("cert: validity %v must be positive", validity)
	}
	ca, err := ReadCA(caDir)
	if err != nil {
		return nil, false, err
	}
	if err := checkName("name", t.Name); err != nil {
		return nil, false, err
	}
	t.NotBefore, t.NotAfter = now.Add(-time.Minute), now.Add(validity) // a minute of clock skew
	keyPath := filepath.Join(outDir, t.Name+".key")
	var nk NodeKey
	switch _, statErr := os.Stat(keyPath); {
	case statErr == nil:
		if nk, err = ReadNodeKeyFile(keyPath); err != nil {
			return nil, false, err
		}
		renewed = true
	case errors.Is(statErr, os.ErrNotExist):
		if nk, err = NewNodeKey(); err != nil {
			return nil, false, err
		}
	default:
		return nil, false, fmt.Errorf("cert: %w", statErr)
	}
	if c, err = ca.Sign(t, nk); err != nil {
		return nil, false, err
	}
	if renewed {
		if err := os.MkdirAll(outDir, 0o700); err != nil {
			return nil, false, fmt.Errorf("cert: %w", err)
		}
		return c, true, writeFile(filepath.Join(outDir, t.Name+".crt"), c.EncodePEM(), 0o644)
	}
	if _, _, err := WriteNode(outDir, c, nk); err != nil {
		return nil, false, err
	}
	return c, false, nil
}

// SplitList splits a comma-separated flag value, dropping empty items.
func SplitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// Info is what `meshd cert show` prints, and status's node.identity.
type Info struct {
	Kind        string   `json:"kind"` // "node" | "ca"
	Name        string   `json:"name"`
	Site        string   `json:"site,omitempty"`
	Groups      []string `json:"groups"`
	Exports     []string `json:"exports"`
	Drill       bool     `json:"drill"`
	PublicKey   string   `json:"public_key,omitempty"` // WireGuard, base64
	SigningKey  string   `json:"signing_key"`          // Ed25519, base64
	NotBefore   string   `json:"not_before"`
	NotAfter    string   `json:"not_after"`
	Issuer      string   `json:"issuer,omitempty"` // CA fingerprint
	Fingerprint string   `json:"fingerprint"`
	ExpiresIn   string   `json:"expires_in"` // from now; "expired" once past
	Expired     bool     `json:"expired"`
}

// Describe returns c's Info as seen at now.
func (c *Certificate) Describe(now time.Time) Info {
	in := Info{Kind: "node", Name: c.Name, Site: c.Site, Groups: c.Groups, Exports: c.Exports, Drill: c.Drill,
		SigningKey: base64.StdEncoding.EncodeToString(c.SigningKey),
		NotBefore:  c.NotBefore.Format(time.RFC3339), NotAfter: c.NotAfter.Format(time.RFC3339),
		Fingerprint: c.Fingerprint().String()}
	if c.IsCA {
		in.Kind = "ca"
	} else {
		in.PublicKey = c.WGKey.String()
		in.Issuer = Fingerprint(c.Issuer).String()
	}
	if left := c.NotAfter.Sub(now); left > 0 {
		in.ExpiresIn = left.Truncate(time.Second).String()
	} else {
		in.ExpiresIn, in.Expired = "expired", true
	}
	return in
}

// Text renders in as aligned "key: value" lines.
func (in Info) Text() string {
	var b strings.Builder
	row := func(k, v string) { fmt.Fprintf(&b, "%-12s %s\n", k+":", v) }
	row("kind", in.Kind)
	row("name", in.Name)
	if in.Kind == "node" {
		row("site", in.Site)
		row("groups", strings.Join(in.Groups, ","))
		row("exports", strings.Join(in.Exports, ","))
		row("drill", fmt.Sprint(in.Drill))
		row("public key", in.PublicKey)
	}
	row("signing key", in.SigningKey)
	row("not before", in.NotBefore)
	row("not after", in.NotAfter)
	row("expires in", in.ExpiresIn)
	if in.Issuer != "" {
		row("issuer", in.Issuer)
	}
	row("fingerprint", in.Fingerprint)
	return b.String()
}

// Show writes `meshd cert show` of certs as seen at now: each one's Text,
// an empty line between two, or with asJSON each Info as an indented JSON
// object.
func Show(w io.Writer, certs []*Certificate, now time.Time, asJSON bool) {
	for i, c := range certs {
		in := c.Describe(now)
		if asJSON {
			b, _ := json.MarshalIndent(in, "", "  ")
			fmt.Fprintln(w, string(b))
			continue
		}
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprint(w, in.Text())
	}
}
