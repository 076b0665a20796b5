package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/meshd/meshd/internal/cert"
)

// pki reads the pki mapping (README "Configuration reference", README "Identity and policy"). Files are read by loadPKI.
func (p *parser) pki(n *yaml.Node, path string, cfg *Config, fl *fileLines) error {
	fields, err := p.mapping(n, path, pkiKeys)
	if err != nil {
		return err
	}
	fl.pkiLines = map[string]int{}
	for _, f := range fields {
		fl.pkiLines[f.name] = f.val.Line
		switch f.name {
		case "ca":
			cfg.PKI.CA, err = p.str(f.val, f.path)
		case "cert":
			cfg.PKI.Cert, err = p.str(f.val, f.path)
		case "key":
			cfg.PKI.Key, err = p.str(f.val, f.path)
		case "blocklist":
			var items []*yaml.Node
			if items, err = p.list(f.val, f.path, "certificate fingerprints (hex, from `meshd cert show`)"); err != nil {
				return err
			}
			for i, it := range items {
				key := fmt.Sprintf("%s[%d]", f.path, i)
				s, err := p.str(it, key)
				if err != nil {
					return err
				}
				if _, err := cert.ParseFingerprint(s); err != nil {
					return p.errf(it.Line, key, "%q is not allowed; want a 64-character hex fingerprint (meshd cert show)", s)
				}
				cfg.PKI.Blocklist = append(cfg.PKI.Blocklist, s)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// allow reads an export's allow list of selectors.
func (p *parser) allow(n *yaml.Node, path string) ([]string, error) {
	items, err := p.list(n, path, `selectors like ["site:onprem", "group:web", "node:api-1"] or ["*"]`)
	if err != nil {
		return nil, err
	}
	out := []string{}
	for i, it := range items {
		key := fmt.Sprintf("%s[%d]", path, i)
		s, err := p.str(it, key)
		if err != nil {
			return nil, err
		}
		if cert.ValidSelector(s) != nil {
			return nil, p.errf(it.Line, key, "%q is not allowed; want \"*\", site:NAME, group:NAME or node:NAME", s)
		}
		out = append(out, s)
	}
	return out, nil
}

// loadPKI reads and checks the pki files: the CAs, this node's certificate
// (valid now, for this name and site) and the key file it belongs to.
func (p *parser) loadPKI(cfg *Config, fl fileLines) error {
	if fl.pki == 0 {
		return nil
	}
	k := &cfg.PKI
	for _, f := range []struct {
		name string
		v    *string
	}{{"ca", &k.CA}, {"cert", &k.Cert}, {"key", &k.Key}} {
		if *f.v == "" {
			return p.errf(fl.pki, "pki."+f.name, "required with pki; want a file path (see meshd ca init, meshd cert sign)")
		}
		if !filepath.IsAbs(*f.v) {
			*f.v = filepath.Join(filepath.Dir(p.file), *f.v)
		}
	}
	cas, err := cert.ReadCertsFile(k.CA)
	if err != nil {
		return p.errf(fl.pkiLines["ca"], "pki.ca", "%v", err)
	}
	var block []cert.Fingerprint
	for _, s := range k.Blocklist {
		f, _ := cert.ParseFingerprint(s) // checked by pki
		block = append(block, f)
	}
	pool, err := cert.NewPool(cas, block)
	if err != nil {
		return p.errf(fl.pkiLines["ca"], "pki.ca", "%s: %v", k.CA, err)
	}
	crt, err := cert.ReadCertFile(k.Cert)
	if err != nil {
		return p.errf(fl.pkiLines["cert"], "pki.cert", "%v", err)
	}
	nk, err := cert.ReadNodeKeyFile(k.Key)
	if err != nil {
		return p.errf(fl.pkiLines["key"], "pki.key", "%v", err)
	}
	set, err := cert.NewBundle(pool, crt, nk, cfg.Name, cfg.Site, time.Now())
	if err != nil {
		line, key := fl.pkiLines["cert"], "pki.cert"
		if cert.ReasonOf(err) == cert.NoCertificate {
			line, key = fl.pkiLines["key"], "pki.key"
		}
		return p.errf(line, key, "%s: %v", k.Cert, err)
	}
	k.Set = set
	return nil
}

// maxClusterKeys bounds the keys of a key file.
const maxClusterKeys = 8

// DecodeClusterKeys decodes a key file: one key per line (blank lines and
// lines starting with # are skipped), at least one, at most 8, no repeats.
// The first encrypts; all decrypt (rotation, README "Identity and policy").
func DecodeClusterKeys(s string) ([][]byte, error) {
	var keys [][]byte
	for i, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := DecodeClusterKey(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", i+1, err)
		}
		for _, o := range keys {
			if string(o) == string(k) {
				return nil, fmt.Errorf("line %d: the same key twice", i+1)
			}
		}
		keys = append(keys, k)
	}
	switch {
	case len(keys) == 0:
		return nil, errors.New("empty key; " + keyHint)
	case len(keys) > maxClusterKeys:
		return nil, fmt.Errorf("%d keys; at most %d (one per line, the first encrypts)", len(keys), maxClusterKeys)
	}
	return keys, nil
}
