//go:build linux

package tunnel

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
)

// Kernel mode makes the mesh address a real host address: without a
// filter, peers could reach every host service listening on all addresses.
// A node therefore accepts nothing on its TUN device but the session port
// (and replies to its own connections): an nftables table of its own,
// named after the device, replaced at start and deleted on close (README "Identity and policy").

// firewallTable is the nftables table (family inet) of device dev.
func firewallTable(dev string) string { return "meshd_" + strings.ReplaceAll(dev, "-", "_") }

// firewallRules is the nft script installing the filter for dev.
func firewallRules(dev string) string {
	tbl := firewallTable(dev)
	return fmt.Sprintf(`table inet %[1]s
delete table inet %[1]s
table inet %[1]s {
	chain input {
		type filter hook input priority 0; policy accept;
		iifname "%[2]s" ct state established,related accept
		iifname "%[2]s" tcp dport %[3]d accept
		iifname "%[2]s" drop
	}
}
`, tbl, dev, SessionPort)
}

// installFirewall applies the filter with the nft command; the returned
// function removes it again.
func installFirewall(dev string) (remove func(), err error) {
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(firewallRules(dev))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("tunnel: nft filter for %s: %v: %s", dev, err, strings.TrimSpace(out.String()))
	}
	return func() {
		exec.Command("nft", "delete", "table", "inet", firewallTable(dev)).Run()
	}, nil
}
