package testutil

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// fakeTB records a Fatalf instead of ending the test, so the helpers'
// failure paths can be checked.
type fakeTB struct {
	testing.TB
	failed string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
	panic(f) // stop the helper like runtime.Goexit would, without ending the real test
}

func run(f *fakeTB, fn func()) {
	defer func() {
		if r := recover(); r != nil && r != any(f) {
			panic(r)
		}
	}()
	fn()
}

func TestWaitFor(t *testing.T) {
	n := 0
	WaitFor(t, time.Second, "third poll", func() (bool, string) { n++; return n >= 3, "not yet" })
	if n != 3 {
		t.Fatalf("polled %d times, want 3", n)
	}

	f := &fakeTB{}
	start := time.Now()
	run(f, func() { WaitFor(f, 50*time.Millisecond, "never", func() (bool, string) { return false, "because" }) })
	if !strings.Contains(f.failed, "never") || !strings.Contains(f.failed, "because") {
		t.Fatalf("failure message %q lacks what and why", f.failed)
	}
	if el := time.Since(start); el < 50*time.Millisecond || el > time.Second {
		t.Fatalf("gave up after %v, want about 50ms", el)
	}
}

func TestLeaksCheck(t *testing.T) {
	base := Snapshot()
	stop := make(chan struct{})
	file, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skip("no /proc:", err)
	}
	go func() { <-stop }()

	f := &fakeTB{}
	run(f, func() { base.Check(f, 30*time.Millisecond, 0) })
	if !strings.Contains(f.failed, "goroutines") {
		t.Fatalf("a leaked goroutine and fd were not reported: %q", f.failed)
	}

	close(stop)
	file.Close()
	base.Check(t, 5*time.Second, 0)
}
