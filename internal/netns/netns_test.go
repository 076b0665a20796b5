package netns

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"testing"
	"time"
)

func skipUnlessPossible(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("needs ip (iproute2): %v", err)
	}
}

// TestAddDelete: a namespace comes up with its loopback, Delete kills the
// process left inside and removes it.
func TestAddDelete(t *testing.T) {
	skipUnlessPossible(t)
	ctx := context.Background()
	name := fmt.Sprintf("mnt-%d-a", os.Getpid())
	if err := Add(ctx, name); err != nil {
		t.Skipf("cannot create a namespace here: %v", err)
	}
	t.Cleanup(func() { Delete(ctx, name) })
	if names, err := List(ctx); err != nil || !slices.Contains(names, name) {
		t.Fatalf("List = %v, %v; want it to hold %s", names, err, name)
	}
	if out, err := Run(ctx, "ip", "-n", name, "link", "show", "lo"); err != nil || !regexp.MustCompile(`\bUP\b`).MatchString(out) {
		t.Fatalf("lo in %s: %q, %v; want UP", name, out, err)
	}
	argv := Exec(name, "sleep", "60")
	sleeper := exec.Command(argv[0], argv[1:]...)
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- sleeper.Wait() }()
	deadline := time.Now().Add(5 * time.Second)
	for len(pids(t, name)) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}

	killed, err := Delete(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(killed, sleeper.Process.Pid) {
		t.Errorf("Delete killed %v; want the sleeper %d among them", killed, sleeper.Process.Pid)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		sleeper.Process.Kill()
		t.Fatal("the process inside the namespace is still running after Delete")
	}
	if names, _ := List(ctx); slices.Contains(names, name) {
		t.Fatalf("%s still exists after Delete", name)
	}
}

func pids(t *testing.T, name string) string {
	out, _ := Run(context.Background(), "ip", "netns", "pids", name)
	return out
}

// TestRemoveStale removes only namespaces of our form whose owner is gone.
func TestRemoveStale(t *testing.T) {
	skipUnlessPossible(t)
	ctx := context.Background()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	owned := regexp.MustCompile(`^mnt-([0-9]+)-s$`)
	stale := fmt.Sprintf("mnt-%d-s", dead.Process.Pid)
	live := fmt.Sprintf("mnt-%d-s", os.Getpid())
	other := fmt.Sprintf("mnt-%d-x", dead.Process.Pid) // not of the form
	for _, n := range []string{stale, live, other} {
		if err := Add(ctx, n); err != nil {
			t.Skipf("cannot create a namespace here: %v", err)
		}
		t.Cleanup(func() { Delete(ctx, n) })
	}
	removed := RemoveStale(ctx, owned)
	if !slices.Equal(removed, []string{stale}) {
		t.Errorf("RemoveStale removed %v; want only %s", removed, stale)
	}
	names, _ := List(ctx)
	for n, want := range map[string]bool{stale: false, live: true, other: true} {
		if slices.Contains(names, n) != want {
			t.Errorf("%s exists: %v, want %v", n, !want, want)
		}
	}
}
