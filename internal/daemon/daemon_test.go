package daemon

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/config"
)

// fakeNode records what Run does to it.
type fakeNode struct {
	startErr  error
	reloadErr error
	fatal     chan error
	closeWait chan struct{} // Close blocks until closed; nil: returns at once

	mu      sync.Mutex
	calls   []string
	closing chan struct{} // closed when Close is entered
}

func newFake() *fakeNode {
	return &fakeNode{fatal: make(chan error, 1), closing: make(chan struct{})}
}

func (f *fakeNode) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func (f *fakeNode) Start() error        { f.record("start"); return f.startErr }
func (f *fakeNode) Fatal() <-chan error { return f.fatal }
func (f *fakeNode) ReloadFile() error   { f.record("reload"); return f.reloadErr }
func (f *fakeNode) Close() error {
	f.record("close")
	close(f.closing)
	if f.closeWait != nil {
		<-f.closeWait
	}
	return nil
}

func (f *fakeNode) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// TestRun: step tables of what arrives (signals, a fatal error) and what
// Run then does to the node, tells systemd and returns. STOPPING=1 comes
// with EXTEND_TIMEOUT_USEC of the drain grace + StopExtend (10 s), so
// systemd's stop timeout follows drain_grace.
func TestRun(t *testing.T) {
	boom := errors.New("tunnel: device died")
	for _, tc := range []struct {
		name       string
		setup      func(f *fakeNode)
		steps      func(f *fakeNode, stop, hup chan os.Signal)
		grace      time.Duration
		wantErr    error
		wantCalls  []string
		wantNotify []string
	}{
		{name: "start fails", setup: func(f *fakeNode) { f.startErr = boom }, wantErr: boom, wantCalls: []string{"start"}},
		{name: "stop", steps: func(f *fakeNode, stop, hup chan os.Signal) { stop <- syscall.SIGTERM },
			wantCalls: []string{"start", "close"}, wantNotify: []string{"READY=1 STATUS=running", "STOPPING=1 EXTEND_TIMEOUT_USEC=10000000"}},
		{name: "hangup reloads", steps: func(f *fakeNode, stop, hup chan os.Signal) { hup <- syscall.SIGHUP; stop <- syscall.SIGINT },
			wantCalls:  []string{"start", "reload", "close"},
			wantNotify: []string{"READY=1 STATUS=running", "RELOADING=1 MONOTONIC_USEC=1", "READY=1 STATUS=running", "STOPPING=1 EXTEND_TIMEOUT_USEC=10000000"}},
		{name: "refused reload", setup: func(f *fakeNode) { f.reloadErr = errors.New("f.yaml:2: site: required") },
			steps:     func(f *fakeNode, stop, hup chan os.Signal) { hup <- syscall.SIGHUP; stop <- syscall.SIGINT },
			wantCalls: []string{"start", "reload", "close"},
			wantNotify: []string{"READY=1 STATUS=running", "RELOADING=1 MONOTONIC_USEC=1",
				"READY=1 STATUS=running; last reload refused: f.yaml:2: site: required", "STOPPING=1 EXTEND_TIMEOUT_USEC=10000000"}},
		{name: "fatal", steps: func(f *fakeNode, stop, hup chan os.Signal) { f.fatal <- boom }, wantErr: boom,
			wantCalls: []string{"start", "close"}, wantNotify: []string{"READY=1 STATUS=running"}},
		{name: "second signal", setup: func(f *fakeNode) { f.closeWait = make(chan struct{}) },
			steps: func(f *fakeNode, stop, hup chan os.Signal) {
				stop <- syscall.SIGTERM
				<-f.closing
				stop <- syscall.SIGTERM
			}, grace: time.Hour, wantErr: ErrSecondSignal,
			wantCalls: []string{"start", "close"}, wantNotify: []string{"READY=1 STATUS=running", "STOPPING=1 EXTEND_TIMEOUT_USEC=3610000000"}},
		{name: "close too slow", setup: func(f *fakeNode) { f.closeWait = make(chan struct{}) },
			steps: func(f *fakeNode, stop, hup chan os.Signal) { stop <- syscall.SIGTERM },
			grace: -StopSlack + 50*time.Millisecond, wantErr: ErrStopTimeout,
			wantCalls: []string{"start", "close"}, wantNotify: []string{"READY=1 STATUS=running", "STOPPING=1 EXTEND_TIMEOUT_USEC=5050000"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			if tc.setup != nil {
				tc.setup(f)
			}
			stop, hup := make(chan os.Signal), make(chan os.Signal)
			var mu sync.Mutex
			var notes []string
			p := &Process{Node: f, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Stop: stop, Hangup: hup,
				Grace: func() time.Duration { return tc.grace },
				Notify: func(states ...string) (bool, error) {
					mu.Lock()
					defer mu.Unlock()
					notes = append(notes, strings.Join(states, " "))
					return true, nil
				},
				Monotonic: func() string { return "MONOTONIC_USEC=1" }}
			done := make(chan error, 1)
			go func() { done <- p.Run() }()
			if tc.steps != nil {
				tc.steps(f, stop, hup)
			}
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return")
			}
			if f.closeWait != nil {
				close(f.closeWait) // let the abandoned Close end
			}
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("Run = %v, want %v", err, tc.wantErr)
			}
			if got := f.Calls(); !reflect.DeepEqual(got, tc.wantCalls) {
				t.Errorf("node calls %q, want %q", got, tc.wantCalls)
			}
			mu.Lock()
			defer mu.Unlock()
			if !reflect.DeepEqual(notes, tc.wantNotify) && (len(notes) > 0 || len(tc.wantNotify) > 0) {
				t.Errorf("notify %q, want %q", notes, tc.wantNotify)
			}
		})
	}
}

func TestLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn,
		"error": slog.LevelError, "": slog.LevelInfo, "loud": slog.LevelInfo} {
		if got := ParseLevel(in); got != want {
			t.Errorf("ParseLevel(%q) = %v, want %v", in, got, want)
		}
	}
	var b strings.Builder
	NewLogger(&b, config.Log{Level: "warn", Format: "json"}, nil).Info("hidden")
	NewLogger(&b, config.Log{Level: "warn", Format: "json"}, nil).Warn("shown")
	if s := b.String(); strings.Contains(s, "hidden") || !strings.HasPrefix(s, `{"time":`) || !strings.Contains(s, `"msg":"shown"`) {
		t.Errorf("json logger at warn wrote %q", s)
	}
	b.Reset()
	level := new(slog.LevelVar)
	level.Set(slog.LevelError)
	lg := NewLogger(&b, config.Log{Level: "debug"}, level)
	lg.Info("hidden")
	if b.Len() != 0 {
		t.Errorf("the live level (error) did not win over log.level: %q", b.String())
	}

	// The reload step: no change, no commit; a change sets the level, logs and notes it.
	var notes []string
	note := func(format string, args ...any) { notes = append(notes, format) }
	step := LevelStep(level, lg, note)
	old, same, debug := &config.Config{}, &config.Config{}, &config.Config{}
	old.Log.Level, same.Log.Level, debug.Log.Level = "error", "error", "debug"
	if commit, abort, err := step(old, same); commit != nil || abort != nil || err != nil {
		t.Error("unchanged level: want no commit")
	}
	commit, _, err := step(old, debug)
	if err != nil || commit == nil {
		t.Fatalf("changed level: commit %v, err %v", commit != nil, err)
	}
	if level.Level() != slog.LevelError {
		t.Error("level changed before commit")
	}
	commit()
	if level.Level() != slog.LevelDebug || len(notes) != 1 || !strings.Contains(b.String(), `msg="reload: log level changed" level=debug`) {
		t.Errorf("after commit: level %v, notes %q, log %q", level.Level(), notes, b.String())
	}
}

// TestOpen: the node of the config with the process logger at log.level,
// and the drain grace read from the node's live config.
func TestOpen(t *testing.T) {
	cfg := &config.Config{Name: "n1", Site: "a"}
	cfg.Cluster.Key = make([]byte, 32)
	cfg.Log.Level, cfg.Log.Format = "warn", "json"
	cfg.Failover.DrainGrace = 7 * time.Second
	var b strings.Builder
	p, err := Open(cfg, &b)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Node.Close()
	p.Log.Info("hidden")
	p.Log.Warn("shown")
	if s := b.String(); strings.Contains(s, "hidden") || !strings.Contains(s, `"msg":"shown"`) {
		t.Errorf("logger at warn, json wrote %q", s)
	}
	if g := p.Grace(); g != 7*time.Second {
		t.Errorf("Grace = %v, want the config's drain grace", g)
	}
	if _, err := Open(&config.Config{}, &b); err == nil {
		t.Error("Open without a cluster key: no error")
	}
}
