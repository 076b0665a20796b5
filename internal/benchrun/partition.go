package benchrun

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The partition of the scale mesh (issue 10 item 6): an nftables table of
// its own, meshd_scale_<pid>, on the output hook of loopback, drops
//
//   - UDP between the two halves' gossip and tunnel ports (memberlist's
//     probes and broadcasts, WireGuard): both ends are bound ports, so the
//     split is exact;
//   - TCP to every node's gossip port (memberlist's push/pull, its TCP
//     fallback probe): a TCP client's port is ephemeral, so ports cannot
//     tell which half dialled; inside each half the nodes still see each
//     other through UDP probes.
//
// The table is deleted on every way out (and a table left by a killed run
// is deleted by the next one, as for the netns bench's namespaces).

// partitionPrefix starts the name of the bench's nft tables.
const partitionPrefix = "meshd_scale_"

// partitionTable is the table of this process.
func partitionTable() string { return partitionPrefix + strconv.Itoa(os.Getpid()) }

// partitionRules is the nft script that adds the table: UDP dropped
// between ports a and b both ways, TCP to the gossip ports dropped.
func partitionRules(table string, a, b, gossip []int) string {
	set := func(ports []int) string {
		ps := slices.Clone(ports)
		slices.Sort(ps)
		ps = slices.Compact(ps)
		s := make([]string, len(ps))
		for i, p := range ps {
			s[i] = strconv.Itoa(p)
		}
		return strings.Join(s, ", ")
	}
	var w strings.Builder
	fmt.Fprintf(&w, "table inet %s {\n", table)
	fmt.Fprintf(&w, "\tset half_a { type inet_service; elements = { %s } }\n", set(a))
	fmt.Fprintf(&w, "\tset half_b { type inet_service; elements = { %s } }\n", set(b))
	fmt.Fprintf(&w, "\tset gossip { type inet_service; elements = { %s } }\n", set(gossip))
	w.WriteString("\tchain output {\n\t\ttype filter hook output priority 0; policy accept;\n")
	w.WriteString("\t\toifname \"lo\" udp sport @half_a udp dport @half_b drop\n")
	w.WriteString("\t\toifname \"lo\" udp sport @half_b udp dport @half_a drop\n")
	w.WriteString("\t\toifname \"lo\" tcp dport @gossip drop\n")
	w.WriteString("\t}\n}\n")
	return w.String()
}

// partitionPossible is "" when the partition can run here, else why not:
// root and a working nft.
func partitionPossible() string {
	if os.Geteuid() != 0 {
		return "needs root (nftables)"
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return "nft not installed"
	}
	if out, err := exec.Command("nft", "list", "tables").CombinedOutput(); err != nil {
		return "nft list tables failed: " + FirstLine(strings.TrimSpace(string(out)))
	}
	return ""
}

// nftApply runs the nft script rules.
func nftApply(ctx context.Context, rules string) error {
	cmd := exec.CommandContext(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("scale: nft -f: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// nftDeleteTable deletes the inet table; not an error if it is not there.
// It runs without the caller's context: a cleanup after Ctrl-C must run.
func nftDeleteTable(table string) error {
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, "nft", "delete", "table", "inet", table).CombinedOutput()
	if err != nil && !bytes.Contains(out, []byte("No such file")) {
		return fmt.Errorf("scale: nft delete table inet %s: %w: %s", table, err, bytes.TrimSpace(out))
	}
	return nil
}

var staleTableRE = regexp.MustCompile(`(?m)^table inet ` + partitionPrefix + `(\d+)$`)

// staleTables are the tables named by nft list tables output that a
// bench process which is gone left behind (alive reports whether a pid
// runs).
func staleTables(list string, alive func(pid int) bool) []string {
	var out []string
	for _, m := range staleTableRE.FindAllStringSubmatch(list, -1) {
		pid, err := strconv.Atoi(m[1])
		if err == nil && !alive(pid) {
			out = append(out, partitionPrefix+m[1])
		}
	}
	return out
}

// removeStaleTables deletes the tables of killed bench runs.
func removeStaleTables() {
	out, err := exec.Command("nft", "list", "tables").Output()
	if err != nil {
		return
	}
	for _, t := range staleTables(string(out), pidAlive) {
		nftDeleteTable(t)
	}
}

func pidAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}
