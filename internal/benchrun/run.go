package benchrun

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/meshd/meshd/internal/bench"
)

// Report is the outcome of a run.
type Report struct {
	Results *bench.Results
	// Errors counts failed connections, streams and round trips, nodes
	// that exited, and a setup failure.
	Errors int
	// SetupErr is a setup step that failed (nodes did not come up, a
	// namespace could not be made); Results has what was measured before.
	SetupErr error
	// Interrupted: ctx ended before the run was done.
	Interrupted bool
}

// run is the state of one Run: the results and the error count.
type run struct {
	o        Options
	res      *bench.Results
	errs     int
	progress func(string, ...any)
}

// addErrs records key = n errors, counts them, and reports the first.
func (r *run) addErrs(key string, n int, first error) {
	r.res.Set(key, n)
	r.errs += n
	if first != nil {
		r.progress("%s: %d errors, first: %v", key, n, first)
	}
}

// Run raises the descriptor limit, runs what o selects (idle first, on
// nodes of its own so its RSS figures are not inflated by the throughput
// runs; then loopback; then netns) and returns the results, with the
// machine and the version in the first keys. progress gets one line per
// step and figure. The error, if any, comes before anything ran: o does
// not fit this machine (the descriptor limit).
func Run(ctx context.Context, o Options, version string, progress func(string, ...any)) (Report, error) {
	started := time.Now()
	nofile, err := bench.RaiseNoFile()
	if err != nil {
		progress("cannot raise RLIMIT_NOFILE: %v", err)
	}
	if err := o.checkNoFile(nofile); err != nil {
		return Report{}, err
	}
	r := &run{o: o, res: bench.NewResults(), progress: progress}
	r.header(started, version, nofile)

	var setupErr error
	if o.idleLoopback() && ctx.Err() == nil {
		setupErr = r.idle(ctx)
	}
	if setupErr == nil && o.Loopback && o.streams() && ctx.Err() == nil {
		setupErr = r.loopback(ctx)
	}
	if setupErr == nil && o.Loopback && o.Only["scale"] && ctx.Err() == nil {
		setupErr = r.scale(ctx)
	}
	if setupErr == nil && o.Netns && ctx.Err() == nil {
		setupErr = r.netns(ctx)
	}
	if setupErr != nil && ctx.Err() == nil {
		// Keep what was measured, and fail with the setup error.
		progress("%v", setupErr)
		r.errs++
		r.res.Set("setup_error", FirstLine(setupErr.Error()))
	} else {
		setupErr = nil
	}
	r.res.Set("errors", r.errs)
	r.res.Set("elapsed_s", bench.Round(time.Since(started).Seconds(), 3))
	if ctx.Err() != nil {
		r.res.Set("interrupted", true)
	}
	return Report{Results: r.res, Errors: r.errs, SetupErr: setupErr, Interrupted: ctx.Err() != nil}, nil
}

// header records when, what and where.
func (r *run) header(started time.Time, version string, nofile uint64) {
	res := r.res
	res.Set("date", started.UTC().Format(time.RFC3339))
	res.Set("meshd_version", version)
	res.Set("go_version", runtime.Version())
	res.Set("os_arch", runtime.GOOS+"/"+runtime.GOARCH)
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		res.Set("kernel", strings.TrimSpace(string(b)))
	}
	res.Set("nproc", runtime.NumCPU())
	res.Set("gomaxprocs", runtime.GOMAXPROCS(0))
	res.Set("nofile_limit", int64(nofile))
	res.Set("duration_s", r.o.Duration.Seconds())
}

// FirstLine is s up to its first newline.
func FirstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// exitedErr is the error of a node that exited during a measurement,
// which invalidates the figures.
func exitedErr(name, tail string) error {
	return fmt.Errorf("node %s exited during the bench:\n%s", name, tail)
}
