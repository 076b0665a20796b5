package config

import (
	"fmt"

	"gopkg.in/yaml.v3"
)

// The exports and imports sections: each entry, its health check, its
// weight, sites and rate.

func (p *parser) exports(n *yaml.Node, path string, cfg *Config) error {
	items, err := p.list(n, path, "exports, each a mapping like - name: postgres")
	if err != nil {
		return err
	}
	seen := map[string]int{} // name -> line
	for i, it := range items {
		key := fmt.Sprintf("%s[%d]", path, i)
		e, err := p.export(it, key)
		if err != nil {
			return err
		}
		if first, dup := seen[e.Name]; dup {
			return p.errf(e.nameLine, key+".name", "%q is already exported at line %d; export names must be unique", e.Name, first)
		}
		seen[e.Name] = e.nameLine
		cfg.Exports = append(cfg.Exports, e.Export)
	}
	return nil
}

type parsedExport struct {
	Export
	nameLine int
}

func (p *parser) export(n *yaml.Node, path string) (parsedExport, error) {
	e := parsedExport{Export: Export{Weight: DefaultWeight, Line: n.Line,
		Check: &Check{Interval: DefaultCheckInterval, Timeout: DefaultCheckTimeout}}}
	fields, err := p.mapping(n, path, exportKeys)
	if err != nil {
		return e, err
	}
	if len(fields) == 0 {
		return e, p.errf(n.Line, path, "empty export; want a mapping with name and target")
	}
	for _, f := range fields {
		switch f.name {
		case "name":
			e.nameLine = f.val.Line
			e.Name, err = p.name(f.val, f.path, true)
		case "target":
			var s string
			if s, err = p.str(f.val, f.path); err == nil {
				if s == "" {
					err = p.errf(f.val.Line, f.path, "required; want the host:port of the local service, like 127.0.0.1:5432")
				} else if e2 := checkHostPort(s, false); e2 != nil {
					err = p.errf(f.val.Line, f.path, "%q %v", s, e2)
				}
			}
			e.Target = s
		case "check":
			e.Check, err = p.check(f.val, f.path)
		case "weight":
			e.Weight, err = p.weight(f.val, f.path)
		case "allow":
			e.Allow, err = p.allow(f.val, f.path)
		case "proxy_protocol":
			err = p.enum(f.val, f.path, &e.ProxyProtocol, ProxyV1, ProxyV2)
		case "max_conns":
			e.MaxConns, err = p.count(f.val, f.path, "concurrent connections", MaxConnsLimit)
		}
		if err != nil {
			return e, err
		}
	}
	if e.Name == "" {
		return e, p.errf(n.Line, path+".name", "required; %s", nameHint)
	}
	if e.Target == "" {
		return e, p.errf(n.Line, path+".target", "required; want the host:port of the local service, like 127.0.0.1:5432")
	}
	return e, nil
}

func (p *parser) check(n *yaml.Node, path string) (*Check, error) {
	c := &Check{Interval: DefaultCheckInterval}
	if r := resolve(n); r != nil && r.Kind == yaml.ScalarNode && r.ShortTag() == "!!bool" {
		// check: false turns the default check off; true keeps it.
		var on bool
		if err := r.Decode(&on); err != nil {
			return nil, p.errf(n.Line, path, "got %s; want false or a mapping with keys interval, timeout", describe(r))
		}
		if !on {
			return nil, nil
		}
		return &Check{Interval: DefaultCheckInterval, Timeout: DefaultCheckTimeout}, nil
	}
	fields, err := p.mapping(n, path, checkKeys)
	if err != nil {
		return nil, err
	}
	timeoutLine := n.Line
	for _, f := range fields {
		switch f.name {
		case "interval":
			c.Interval, err = p.duration(f.val, f.path, DefaultCheckInterval)
		case "timeout":
			timeoutLine = f.val.Line
			c.Timeout, err = p.duration(f.val, f.path, 0)
		}
		if err != nil {
			return nil, err
		}
	}
	if c.Timeout == 0 {
		// The default timeout never exceeds a short interval.
		c.Timeout = min(DefaultCheckTimeout, c.Interval)
	}
	if c.Timeout > c.Interval {
		return nil, p.errf(timeoutLine, path+".timeout", "%s is longer than interval %s; want a timeout <= interval", c.Timeout, c.Interval)
	}
	return c, nil
}

func (p *parser) imports(n *yaml.Node, path string, cfg *Config) error {
	items, err := p.list(n, path, "imports, each a mapping like - name: postgres")
	if err != nil {
		return err
	}
	names := map[string]int{}   // name -> line
	listens := map[string]int{} // listen address -> line
	for i, it := range items {
		key := fmt.Sprintf("%s[%d]", path, i)
		im, err := p.importEntry(it, key)
		if err != nil {
			return err
		}
		if first, dup := names[im.Name]; dup {
			return p.errf(im.nameLine, key+".name", "%q is already imported at line %d; import names must be unique", im.Name, first)
		}
		names[im.Name] = im.nameLine
		la := im.Listen.String()
		if first, dup := listens[la]; dup {
			return p.errf(im.listenLine, key+".listen", "%s is already used by the import at line %d; each import needs its own listen address", la, first)
		}
		listens[la] = im.listenLine
		cfg.Imports = append(cfg.Imports, im.Import)
	}
	return nil
}

type parsedImport struct {
	Import
	nameLine, listenLine int
}

func (p *parser) importEntry(n *yaml.Node, path string) (parsedImport, error) {
	im := parsedImport{Import: Import{Balance: BalanceLeastConn, ConnectTimeout: DefaultConnectTimeout, Line: n.Line}}
	fields, err := p.mapping(n, path, importKeys)
	if err != nil {
		return im, err
	}
	if len(fields) == 0 {
		return im, p.errf(n.Line, path, "empty import; want a mapping with name and listen")
	}
	for _, f := range fields {
		switch f.name {
		case "name":
			im.nameLine = f.val.Line
			im.Name, err = p.name(f.val, f.path, true)
		case "listen":
			im.listenLine = f.val.Line
			err = p.addr(f.val, f.path, addrListen, "127.0.0.1:15432", &im.Listen)
		case "sites":
			im.Sites, err = p.sites(f.val, f.path)
		case "max_conns":
			im.MaxConns, err = p.count(f.val, f.path, "concurrent client connections", MaxConnsLimit)
		case "rate":
			im.Rate, err = p.rate(f.val, f.path)
		case "burst":
			im.Burst, err = p.count(f.val, f.path, "connections (the token bucket's size)", MaxConnsLimit)
		case "balance":
			err = p.enum(f.val, f.path, &im.Balance, BalanceLeastConn, BalanceRoundRobin, BalanceSourceHash)
		case "connect_timeout":
			im.ConnectTimeout, err = p.duration(f.val, f.path, DefaultConnectTimeout)
		}
		if err != nil {
			return im, err
		}
	}
	if im.Name == "" {
		return im, p.errf(n.Line, path+".name", "required; %s", nameHint)
	}
	if !im.Listen.IsValid() {
		return im, p.errf(n.Line, path+".listen", "required; want the local IP:port to listen on, like 127.0.0.1:15432")
	}
	return im, nil
}

func (p *parser) sites(n *yaml.Node, path string) ([]string, error) {
	items, err := p.list(n, path, "site names like [onprem, cloud]")
	if err != nil {
		return nil, err
	}
	var out []string
	seen := map[string]int{}
	for i, it := range items {
		key := fmt.Sprintf("%s[%d]", path, i)
		s, err := p.name(it, key, true)
		if err != nil {
			return nil, err
		}
		if first, dup := seen[s]; dup {
			return nil, p.errf(it.Line, key, "%q is already listed at line %d; list each site once", s, first)
		}
		seen[s] = it.Line
		out = append(out, s)
	}
	return out, nil
}

// weight reads an export weight: an integer 1..MaxWeight.
func (p *parser) weight(n *yaml.Node, path string) (int, error) {
	r := resolve(n)
	if isNull(r) {
		return DefaultWeight, nil
	}
	var w int
	if r.Kind != yaml.ScalarNode || r.Tag != "!!int" || r.Decode(&w) != nil || w < 1 || w > MaxWeight {
		return 0, p.errf(n.Line, path, "%s is not allowed; want an integer 1..%d (default %d)", describe(r), MaxWeight, DefaultWeight)
	}
	return w, nil
}

// rate reads a rate in events per second: a number 0..MaxRate, 0 meaning
// unlimited; null means 0.
func (p *parser) rate(n *yaml.Node, path string) (float64, error) {
	r := resolve(n)
	if isNull(r) {
		return 0, nil
	}
	var v float64
	if r.Kind != yaml.ScalarNode || (r.Tag != "!!int" && r.Tag != "!!float") || r.Decode(&v) != nil || !(v >= 0 && v <= MaxRate) {
		return 0, p.errf(n.Line, path, "%s is not allowed; want new connections per second, a number 0..%d like 100 or 0.5 (0: unlimited)", describe(r), MaxRate)
	}
	return v, nil
}
