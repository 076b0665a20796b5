package config

import (
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// KeyLine returns the 1-based line of the dotted key (like "site" or
// "gossip.bind") in the YAML file at path, or 0 when the file does not set
// it or cannot be read or parsed. It is for messages about a key that a
// check outside the parser refuses, such as a reload's restart-only keys,
// so that they too name file:line:key.
func KeyLine(path, key string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	var doc yaml.Node
	if yaml.Unmarshal(b, &doc) != nil || len(doc.Content) == 0 {
		return 0
	}
	n := doc.Content[0]
	line := 0
	for _, part := range strings.Split(key, ".") {
		if n == nil || n.Kind != yaml.MappingNode {
			return 0
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == part {
				line, next = n.Content[i].Line, n.Content[i+1]
				break
			}
		}
		if next == nil {
			return 0
		}
		n = next
	}
	return line
}
