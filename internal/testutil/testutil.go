// Package testutil holds the helpers that the tests of several packages
// share: polling for a condition with a deadline, and checking that a test
// left no goroutines or file descriptors behind. It imports only the
// standard library and testing, so any package's tests may use it.
package testutil

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"
)

// WaitFor polls cond until it reports ok or d passes; then it fails the
// test with what and cond's last explanation. Polling starts at 5 ms and
// backs off to 100 ms, so quick conditions are seen quickly and slow ones
// do not spin.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() (ok bool, why string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	pause := 5 * time.Millisecond
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			if why != "" {
				t.Fatalf("timed out after %v waiting for %s: %s", d, what, why)
			}
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(pause)
		pause = min(2*pause, 100*time.Millisecond)
	}
}

// Until is WaitFor for a condition without an explanation.
func Until(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	WaitFor(t, d, what, func() (bool, string) { return cond(), "" })
}

// Leaks is a baseline of goroutines and open file descriptors, taken
// before a test starts what it must stop again.
type Leaks struct {
	goroutines int
	fds        int // -1 when /proc/self/fd cannot be read
}

// Snapshot records the current goroutines and open file descriptors.
func Snapshot() Leaks {
	return Leaks{goroutines: runtime.NumGoroutine(), fds: OpenFDs()}
}

// Check waits up to d for the goroutines to be back within slack of the
// baseline and the file descriptors back at or below it, and fails the
// test with every goroutine's stack if they are not. slack allows for
// goroutines that the runtime or the testing package start lazily.
func (l Leaks) Check(t testing.TB, d time.Duration, slack int) {
	t.Helper()
	l.check(t, d, slack, true)
}

// CheckGoroutines is Check for goroutines only, for tests whose file
// descriptors are closed by t.Cleanup after the check.
func (l Leaks) CheckGoroutines(t testing.TB, d time.Duration, slack int) {
	t.Helper()
	l.check(t, d, slack, false)
}

func (l Leaks) check(t testing.TB, d time.Duration, slack int, fds bool) {
	t.Helper()
	WaitFor(t, d, "goroutines and file descriptors back to the baseline", func() (bool, string) {
		g, fd := runtime.NumGoroutine(), OpenFDs()
		if g <= l.goroutines+slack && (!fds || l.fds < 0 || fd <= l.fds) {
			return true, ""
		}
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		return false, leakReport(g, l.goroutines, fd, l.fds, buf[:n])
	})
}

func leakReport(g, baseG, fd, baseFD int, stacks []byte) string {
	return fmt.Sprintf("goroutines %d (base %d), fds %d (base %d)\n%s", g, baseG, fd, baseFD, stacks)
}

// OpenFDs counts this process's open file descriptors, or -1 where
// /proc/self/fd is not available.
func OpenFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents) - 1 // the directory being read
}
