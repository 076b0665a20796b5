// Package daemon runs a started node as a foreground process, the body of
// `meshd join`: readiness, reloads and stopping reported to systemd
// (sd_notify), a reload on each hangup, a graceful leave on the first stop
// signal bounded by the drain grace, an immediate exit on the second, and
// the process logger with its live level. cmd/meshd subscribes to the OS
// signals and hands them over as channels; nothing here touches the
// process's signal handling.
package daemon

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/sdnotify"
	"github.com/meshd/meshd/node"
)

// StopSlack is how much longer than the drain grace a graceful shutdown
// may take before Run gives up on it.
const StopSlack = 5 * time.Second

// StopExtend is how much longer than the drain grace Run asks systemd to
// wait for the stop (EXTEND_TIMEOUT_USEC with STOPPING=1): StopSlack plus
// time to exit. So the stop timeout follows failover.drain_grace (also
// one a reload changed), and a unit's fixed TimeoutStopSec does not kill a
// node with a longer grace in the middle of its drain.
const StopExtend = StopSlack + 5*time.Second

// Errors Run returns when the shutdown is not clean.
var (
	ErrSecondSignal = errors.New("second signal: exiting without a clean shutdown")
	ErrStopTimeout  = errors.New("shutdown took too long; exiting")
)

// Node is what Run needs of a node (node.Node has it).
type Node interface {
	Start() error
	// Fatal delivers an error after which the node cannot go on.
	Fatal() <-chan error
	// ReloadFile re-reads the config file and applies what changed; an
	// error changed nothing.
	ReloadFile() error
	Close() error
}

// Process is one run of a node in the foreground.
type Process struct {
	Node Node
	Log  *slog.Logger
	// Stop delivers SIGINT/SIGTERM, Hangup SIGHUP; subscribe before Run so
	// that a signal during the start is not lost.
	Stop, Hangup <-chan os.Signal
	// Grace is the node's drain grace, read at shutdown (a reload may
	// change it); the shutdown may take Grace()+StopSlack.
	Grace func() time.Duration
	// Notify sends sd_notify states; nil means sdnotify.Notify.
	Notify func(states ...string) (bool, error)
	// Monotonic is the MONOTONIC_USEC assignment of a reload; nil means
	// sdnotify.MonotonicUsec.
	Monotonic func() string
}

// Open builds the node of cfg with the process logger on w (log.level,
// live: a reload that changes it applies at once) and returns the Process
// that runs it; the caller adds the signal channels.
func Open(cfg *config.Config, w io.Writer) (*Process, error) {
	level := new(slog.LevelVar)
	level.Set(ParseLevel(cfg.Log.Level))
	lg := NewLogger(w, cfg.Log, level)
	n, err := node.New(cfg, lg)
	if err != nil {
		return nil, err
	}
	n.OnReload("log.level", LevelStep(level, lg, n.ReloadNote))
	return &Process{Node: n, Log: lg, Grace: func() time.Duration { return n.Config().Failover.DrainGrace }}, nil
}

// Run starts the node, reports it ready, and serves hangups (reload) and
// a fatal node error until the first stop signal; then it closes the node
// (leaving the mesh) and returns nil, or ErrSecondSignal or ErrStopTimeout
// when that does not finish cleanly. A start error or a fatal error is
// returned as is (after closing the node for a fatal one).
func (p *Process) Run() error {
	notify, mono := p.Notify, p.Monotonic
	if notify == nil {
		notify = sdnotify.Notify
	}
	if mono == nil {
		mono = sdnotify.MonotonicUsec
	}
	if err := p.Node.Start(); err != nil {
		return err
	}
	if _, err := notify(sdnotify.Ready, "STATUS=running"); err != nil {
		p.Log.Warn("systemd notify", "err", err)
	}
	var sig os.Signal
	for sig == nil {
		select {
		case sig = <-p.Stop:
		case err := <-p.Node.Fatal():
			p.Node.Close()
			return err
		case <-p.Hangup:
			notify(sdnotify.Reloading, mono())
			if err := p.Node.ReloadFile(); err != nil {
				p.Log.Error("reload (SIGHUP) refused; nothing changed", "err", err)
				notify(sdnotify.Ready, "STATUS=running; last reload refused: "+err.Error())
			} else {
				notify(sdnotify.Ready, "STATUS=running")
			}
		}
	}
	grace := p.Grace()
	notify(sdnotify.Stopping, sdnotify.ExtendTimeout(grace+StopExtend))
	p.Log.Info("signal received; leaving the mesh", "signal", sig.String(), "drain_grace", grace)
	done := make(chan struct{})
	go func() {
		p.Node.Close()
		close(done)
	}()
	timer := time.NewTimer(grace + StopSlack)
	defer timer.Stop()
	select {
	case <-done:
		return nil
	case <-p.Stop:
		return ErrSecondSignal
	case <-timer.C:
		return ErrStopTimeout
	}
}
