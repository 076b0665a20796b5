package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

const nameHint = "use 1..63 characters of A-Z a-z 0-9 . _ -"

// validName reports whether s is a valid node, site or service name.
func validName(s string) bool {
	if len(s) < 1 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// resolve follows YAML aliases to the node they refer to.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n != nil && n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names a node's YAML type for messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "nothing (null)"
		case "!!str":
			return fmt.Sprintf("the string %q", n.Value)
		case "!!bool":
			return "the boolean " + n.Value
		case "!!int", "!!float":
			return "the number " + n.Value
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "an unexpected YAML node"
}

func mustAddr(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// field is one key: value pair of a mapping.
type field struct {
	name     string
	path     string // dotted path of the key
	key, val *yaml.Node
}

// mapping checks that n is a mapping (null counts as an empty one) whose
// keys are unique and among allowed, and returns its pairs in file order.
func (p *parser) mapping(n *yaml.Node, path string, allowed []string) ([]field, error) {
	r := resolve(n)
	if isNull(r) {
		return nil, nil
	}
	if r.Kind != yaml.MappingNode {
		return nil, p.errf(n.Line, path, "got %s; want a mapping with keys %s", describe(r), strings.Join(allowed, ", "))
	}
	var out []field
	seen := map[string]int{}
	for i := 0; i+1 < len(r.Content); i += 2 {
		k, v := r.Content[i], r.Content[i+1]
		kp := k.Value
		if path != "" {
			kp = path + "." + k.Value
		}
		if k.Kind != yaml.ScalarNode {
			return nil, p.errf(k.Line, path, "a key must be a plain word; allowed keys: %s", strings.Join(allowed, ", "))
		}
		known := false
		for _, a := range allowed {
			if a == k.Value {
				known = true
				break
			}
		}
		if !known {
			where := "at top level"
			if path != "" {
				where = "in " + path
			}
			return nil, p.errf(k.Line, kp, "unknown key %s; allowed keys: %s", where, strings.Join(allowed, ", "))
		}
		if first, dup := seen[k.Value]; dup {
			return nil, p.errf(k.Line, kp, "duplicate key; already set at line %d", first)
		}
		seen[k.Value] = k.Line
		out = append(out, field{name: k.Value, path: kp, key: k, val: v})
	}
	return out, nil
}

// list checks that n is a list (null counts as empty) and returns its items.
func (p *parser) list(n *yaml.Node, path, want string) ([]*yaml.Node, error) {
	r := resolve(n)
	if isNull(r) {
		return nil, nil
	}
	if r.Kind != yaml.SequenceNode {
		return nil, p.errf(n.Line, path, "got %s; want a list of %s", describe(r), want)
	}
	return r.Content, nil
}

// str reads a scalar as a string; null reads as "".
func (p *parser) str(n *yaml.Node, path string) (string, error) {
	r := resolve(n)
	if isNull(r) {
		return "", nil
	}
	if r.Kind != yaml.ScalarNode {
		return "", p.errf(n.Line, path, "got %s; want a string", describe(r))
	}
	return r.Value, nil
}

// name reads a node/site/service name. Empty is an error when required,
// else it reads as "".
func (p *parser) name(n *yaml.Node, path string, required bool) (string, error) {
	s, err := p.str(n, path)
	if err != nil {
		return "", err
	}
	if s == "" {
		if required {
			return "", p.errf(n.Line, path, "required; %s", nameHint)
		}
		return "", nil
	}
	if !validName(s) {
		return "", p.errf(n.Line, path, "%q is not allowed; %s", s, nameHint)
	}
	return s, nil
}

// enum reads one of allowed into *dst; null or "" leaves *dst alone.
func (p *parser) enum(n *yaml.Node, path string, dst *string, allowed ...string) error {
	s, err := p.str(n, path)
	if err != nil || s == "" {
		return err
	}
	for _, a := range allowed {
		if s == a {
			*dst = s
			return nil
		}
	}
	use := strings.Join(allowed[:len(allowed)-1], ", ") + " or " + allowed[len(allowed)-1]
	return p.errf(n.Line, path, "%q is not allowed; use %s", s, use)
}

// boolean reads true or false; null leaves *dst alone.
func (p *parser) boolean(n *yaml.Node, path string, dst *bool) error {
	r := resolve(n)
	if isNull(r) {
		return nil
	}
	if r.Kind != yaml.ScalarNode || r.ShortTag() != "!!bool" || r.Decode(dst) != nil {
		return p.errf(n.Line, path, "got %s; want true or false", describe(r))
	}
	return nil
}

// Address roles.
const (
	addrBind      = iota // a bind/listen address; port 0 (ephemeral) allowed
	addrListen           // a listen address with a fixed port 1..65535
	addrAdvertise        // what peers dial: a specified IP and a port 1..65535
)

// parseAddrPort parses an IP:port, accepting localhost as 127.0.0.1.
func parseAddrPort(s string) (netip.AddrPort, error) {
	if host, port, err := net.SplitHostPort(s); err == nil && strings.EqualFold(host, "localhost") {
		s = net.JoinHostPort("127.0.0.1", port)
	}
	return netip.ParseAddrPort(s)
}

// addr reads an IP:port address for role into *dst; null or "" leaves *dst
// alone (the default, or unset for advertise).
func (p *parser) addr(n *yaml.Node, path string, role int, example string, dst *netip.AddrPort) error {
	s, err := p.str(n, path)
	if err != nil || s == "" {
		return err
	}
	ap, err := parseAddrPort(s)
	if err != nil {
		ports := "1..65535"
		if role == addrBind {
			ports = "0..65535"
		}
		return p.errf(n.Line, path, "%q is not allowed; use an IP:port like %s with a port %s (IPv6 in brackets, like [::1]:80; no host names except localhost)", s, example, ports)
	}
	switch role {
	case addrListen:
		if ap.Port() == 0 {
			return p.errf(n.Line, path, "%q is not allowed; use a port 1..65535, like %s", s, example)
		}
	case addrAdvertise:
		if ap.Addr().IsUnspecified() {
			return p.errf(n.Line, path, "%q is not allowed; advertise the IP other nodes dial, not 0.0.0.0 or ::, like %s", s, example)
		}
		if ap.Port() == 0 {
			return p.errf(n.Line, path, "%q is not allowed; use a port 1..65535, like %s", s, example)
		}
	}
	*dst = ap
	return nil
}

// checkHostPort checks a host:port whose host is a DNS name or an IP and
// whose port is numeric 1..65535. The error reads after the quoted value.
func checkHostPort(s string, allowEmptyHost bool) error {
	const use = "use host:port with a DNS name or IP and a port 1..65535"
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) && strings.Contains(ae.Err, "too many colons") {
			return errors.New("is not allowed; " + use + " (IPv6 in brackets, like [::1]:80)")
		}
		return errors.New("is not allowed; " + use)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || strings.ContainsAny(port, "+-") {
		return fmt.Errorf("is not allowed: port %q; %s", port, use)
	}
	if host == "" {
		if allowEmptyHost {
			return nil
		}
		return errors.New("is not allowed: empty host; " + use)
	}
	if strings.Contains(host, ":") || strings.Contains(host, "%") {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("is not allowed: bad IPv6 address %q; %s", host, use)
		}
		return nil
	}
	if !validHostname(host) {
		return fmt.Errorf("is not allowed: bad host %q; %s", host, use)
	}
	return nil
}

// validHostname reports whether h is a DNS name or IPv4 literal.
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
			default:
				return false
			}
		}
	}
	return true
}
