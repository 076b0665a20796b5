package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Error is a validation error in a config file. Error() formats it as
// "FILE:LINE: KEY: MSG"; LINE is left out when 0, KEY when empty.
type Error struct {
	File string // the config file's path as given
	Line int    // 1-based line of the offending key or value; 0 when unknown
	Key  string // dotted path such as "imports[1].listen" or "tunnel.listen"
	Msg  string // what is wrong and what is allowed
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		if e.File == "" {
			b.WriteString("line ")
		} else {
			b.WriteString(":")
		}
		b.WriteString(strconv.Itoa(e.Line))
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Load reads and validates the file at path, applies ov (flags override the
// file) and applies defaults. Errors other than a failure to read the file
// are *Error.
func Load(path string, ov Overrides) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("read config %s: %w", path, err)
	}
	return Parse(path, data, ov)
}

// Parse is Load on bytes already read. path is used in messages and to
// resolve a relative cluster.key_file (relative to the config file's
// directory). The returned error, if any, is an *Error.
func Parse(path string, data []byte, ov Overrides) (*Config, error) {
	p := &parser{file: path}
	cfg, fl, err := p.parse(data)
	if err != nil {
		return nil, err
	}
	if err := p.finish(cfg, fl, ov); err != nil {
		return nil, err
	}
	return cfg, nil
}

// keyHint says what a cluster key must be: memberlist takes AES-128/192/256 keys.
const keyHint = "want base64 of 16, 24 or 32 bytes (meshd keygen)"

// DecodeClusterKey decodes a base64 (standard encoding) cluster key and
// checks its length: 16, 24 or 32 bytes (meshd keygen makes 32). Leading
// and trailing white space is ignored. Errors never contain the key.
func DecodeClusterKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("empty key; " + keyHint)
	}
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not base64 (%v); %s", err, keyHint)
	}
	switch len(key) {
	case 16, 24, 32:
		return key, nil
	}
	return nil, fmt.Errorf("decodes to %d bytes; %s", len(key), keyHint)
}

// fileLines records where things were found in the file, for checks that
// can only be made once the whole file (and the overrides) are known.
type fileLines struct {
	cluster  int // line of "cluster:", 0 when absent
	key      int // line of cluster.key
	keyFile  int // line of cluster.key_file
	keyValue string
	pki      int            // line of "pki:", 0 when absent
	pkiLines map[string]int // line of each pki key
}

// finish applies overrides and the defaults that depend on them, and makes
// the checks that span the file.
func (p *parser) finish(cfg *Config, fl fileLines, ov Overrides) error {
	cfg.Overrides = ov
	if ov.LogLevel != "" {
		switch ov.LogLevel {
		case "debug", "info", "warn", "error":
			cfg.Log.Level = ov.LogLevel
		default:
			return p.errf(0, "log.level", "%q (from --log-level) is not allowed; use debug, info, warn or error", ov.LogLevel)
		}
	}
	if ov.Name != "" {
		if !validName(ov.Name) {
			return p.errf(0, "name", "%q (from --name) is not allowed; %s", ov.Name, nameHint)
		}
		cfg.Name = ov.Name
	}
	if ov.Site != "" {
		if !validName(ov.Site) {
			return p.errf(0, "site", "%q (from --site) is not allowed; %s", ov.Site, nameHint)
		}
		cfg.Site = ov.Site
	}
	if ov.DataDir != "" {
		cfg.DataDir = ov.DataDir
	}
	if len(ov.Join) > 0 {
		join := make([]string, 0, len(ov.Join))
		for i, a := range ov.Join {
			if err := checkHostPort(a, false); err != nil {
				return p.errf(0, fmt.Sprintf("cluster.join[%d]", i), "%q (from --join) %v", a, err)
			}
			join = append(join, a)
		}
		cfg.Cluster.Join = join
	}

	if cfg.Site == "" {
		return p.errf(0, "site", "required; set site: in the file or --site (%s)", nameHint)
	}
	if cfg.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return p.errf(0, "name", "not set and the hostname is unknown (%v); set name: or --name", err)
		}
		if !validName(h) {
			return p.errf(0, "name", "not set and the hostname %q is not a valid name; set name: or --name (%s)", h, nameHint)
		}
		cfg.Name = h
	}
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	if cfg.Control.Socket == "" {
		cfg.Control.Socket = filepath.Join(cfg.DataDir, DefaultSocketName)
	}
	if err := p.loadKey(cfg, fl); err != nil {
		return err
	}
	return p.loadPKI(cfg, fl)
}

// loadKey fills cfg.Cluster.Key from exactly one of cluster.key,
// cluster.key_file and the environment.
func (p *parser) loadKey(cfg *Config, fl fileLines) error {
	c := &cfg.Cluster
	switch {
	case fl.keyValue != "" && c.KeyFile != "":
		return p.errf(fl.key, "cluster.key", "cluster.key_file is also set (line %d); use only one of key, key_file or %s", fl.keyFile, KeyEnv)
	case fl.keyValue != "":
		key, err := DecodeClusterKey(fl.keyValue)
		if err != nil {
			return p.errf(fl.key, "cluster.key", "%v", err)
		}
		c.Key = key
	case c.KeyFile != "":
		if !filepath.IsAbs(c.KeyFile) {
			c.KeyFile = filepath.Join(filepath.Dir(p.file), c.KeyFile)
		}
		if err := keyFileMode(c.KeyFile); err != nil {
			return p.errf(fl.keyFile, "cluster.key_file", "%v", err)
		}
		data, err := os.ReadFile(c.KeyFile)
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return p.errf(fl.keyFile, "cluster.key_file", "cannot read %s: %v", c.KeyFile, err)
		}
		keys, err := DecodeClusterKeys(string(data))
		if err != nil {
			return p.errf(fl.keyFile, "cluster.key_file", "%s: %v", c.KeyFile, err)
		}
		c.Key, c.Keys = keys[0], keys
	default:
		env := os.Getenv(KeyEnv)
		if strings.TrimSpace(env) == "" {
			return p.errf(fl.cluster, "cluster.key_file",
				"no cluster key; set cluster.key_file, cluster.key or %s (make one with `meshd keygen`)", KeyEnv)
		}
		key, err := DecodeClusterKey(env)
		if err != nil {
			return p.errf(0, KeyEnv, "%v", err)
		}
		c.Key = key
	}
	if c.Keys == nil {
		c.Keys = [][]byte{c.Key}
	}
	return nil
}

// keyFileMode refuses a cluster key file that group or others may read or
// write (README "Configuration reference"): the key admits anyone to the mesh. A missing file is
// left to the read that follows, for its message.
func keyFileMode(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return nil
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return fmt.Errorf("%s is accessible by group or others (mode %04o); it holds the cluster key: chmod 600 %s", path, m, path)
	}
	return nil
}

// SocketHint finds the control socket of the config file at path even when
// the file is not a valid config (a reload must reach the node to hear why):
// control.socket, else <data_dir>/meshd.sock, from a lenient read. ok is
// false when the file cannot be read or is not YAML.
func SocketHint(path string) (sock string, ok bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	var loose struct {
		DataDir string `yaml:"data_dir"`
		Control struct {
			Socket string `yaml:"socket"`
		} `yaml:"control"`
	}
	if yaml.Unmarshal(data, &loose) != nil {
		return "", false
	}
	if s, ok := loose.Control.Socket, true; s != "" {
		return s, ok
	}
	dir := loose.DataDir
	if dir == "" {
		dir = DefaultDataDir
	}
	return filepath.Join(dir, DefaultSocketName), true
}
