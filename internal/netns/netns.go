// Package netns creates and removes named Linux network namespaces through
// iproute2, for the tests and the bench harness that build small networks
// on one machine. Every namespace made here is owned by the process that
// made it; Delete kills whatever is left inside before removing it, and
// RemoveStale cleans up after an owner that was killed before its cleanup.
package netns

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cmdTimeout bounds every command Run starts.
const cmdTimeout = 15 * time.Second

// Run runs name with args, bounded by 15 s, and returns its combined
// output; the error carries the command line and the output.
func Run(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// RunInput is Run with input on the command's stdin (nft -f -).
func RunInput(ctx context.Context, input, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(input)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Exec is the command line that runs argv inside namespace ns.
func Exec(ns string, argv ...string) []string {
	return append([]string{"ip", "netns", "exec", ns}, argv...)
}

// List returns the names of the named network namespaces.
func List(ctx context.Context) ([]string, error) {
	out, err := Run(ctx, "ip", "netns", "list")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names, nil
}

// Add creates namespace name with its loopback up. On error nothing is
// left behind.
func Add(ctx context.Context, name string) error {
	if _, err := Run(ctx, "ip", "netns", "add", name); err != nil {
		return err
	}
	if _, err := Run(ctx, "ip", "-n", name, "link", "set", "lo", "up"); err != nil {
		if _, derr := Delete(context.WithoutCancel(ctx), name); derr != nil {
			return fmt.Errorf("%w; removing the namespace again: %v", err, derr)
		}
		return err
	}
	return nil
}

// Delete kills every process left in namespace name (they are its
// owner's) and deletes it, retrying for up to 2 s while the kernel lets
// go of the killed processes. A namespace that does not exist is no
// error. It returns the pids it killed.
func Delete(ctx context.Context, name string) (killed []int, err error) {
	killed = KillPids(ctx, name)
	for range 20 {
		if _, err = Run(ctx, "ip", "netns", "del", name); err == nil {
			return killed, nil
		}
		if _, serr := os.Stat(Path(name)); errors.Is(serr, os.ErrNotExist) {
			return killed, nil // gone already
		}
		time.Sleep(100 * time.Millisecond)
	}
	return killed, err
}

// KillPids sends SIGKILL to every process in namespace name except this
// one and returns their pids.
func KillPids(ctx context.Context, name string) []int {
	out, err := Run(ctx, "ip", "netns", "pids", name)
	if err != nil {
		return nil
	}
	var killed []int
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				killed = append(killed, pid)
			}
		}
	}
	return killed
}

// RemoveStale deletes the namespaces whose names match owned, whose first
// submatch is the pid of the process that made them, when that process
// no longer exists: leftovers of a run killed before its cleanup (say, by
// go test's -timeout). Namespaces of live processes, this one included,
// are left alone. It returns the names it removed.
func RemoveStale(ctx context.Context, owned *regexp.Regexp) []string {
	names, err := List(ctx)
	if err != nil {
		return nil
	}
	var removed []string
	for _, name := range names {
		m := owned.FindStringSubmatch(name)
		if len(m) < 2 {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			continue // still running, or the pid was reused
		}
		if _, err := Delete(ctx, name); err == nil {
			removed = append(removed, name)
		}
	}
	return removed
}

// Path is the file of namespace name, for setns(2).
func Path(name string) string {
	for _, d := range []string{"/run/netns", "/var/run/netns"} {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return filepath.Join("/run/netns", name)
}
