package lab

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/meshd/meshd/internal/bench"
)

// ChildLifetime bounds the life of every helper process of the lab
// (`meshd bench-worker`, `meshd bench-wgref`) even if nobody stops it;
// they also end when their stdin closes, and get SIGKILL when the parent
// dies.
const ChildLifetime = 3 * time.Hour

// Serve runs w as a child process of the lab (`meshd bench-wgref`, started
// by StartWGRef): until stdin closes (the parent is done with it, or
// died), ctx ends or ChildLifetime passes. It writes "ready" to stdout
// once the device is up. The goroutine reading stdin ends when stdin
// closes: meant for the process's own stdin.
func (w WGRef) Serve(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	return untilClosed(ctx, stdin, ChildLifetime, func(ctx context.Context) error {
		return w.Run(ctx, func() { fmt.Fprintln(stdout, "ready") })
	})
}

// untilClosed runs run with a context that ends with ctx, after lifetime,
// or when r reaches EOF (or fails).
func untilClosed(ctx context.Context, r io.Reader, lifetime time.Duration, run func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, lifetime)
	defer cancel()
	go func() {
		io.Copy(io.Discard, r)
		cancel()
	}()
	return run(ctx)
}

// ServeWorker runs a measurement worker as a child process of the lab
// (`meshd bench-worker`: internal/bench's worker protocol on stdin and
// stdout) with the descriptor limit raised, for at most ChildLifetime. It
// ends when stdin closes or ctx ends; the latter is not an error.
func ServeWorker(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	bench.RaiseNoFile()
	ctx, cancel := context.WithTimeout(ctx, ChildLifetime)
	defer cancel()
	if err := bench.ServeWorker(ctx, stdin, stdout); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}
