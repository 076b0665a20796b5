package main

// Hidden helper commands of `meshd bench`, started by it as child
// processes (possibly behind `ip netns exec`): bench-worker runs
// measurement clients and target servers (internal/bench's worker
// protocol on stdin/stdout), bench-wgref runs plain wireguard-go on a
// kernel TUN device as the reference for what WireGuard itself costs.

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/internal/bench"
	"github.com/meshd/meshd/internal/lab"
)

// benchChildLifetime bounds the life of every bench helper process, even
// if nobody stops it (they also exit when their stdin closes, and get
// SIGKILL when the bench dies).
const benchChildLifetime = 3 * time.Hour

func benchWorkerCommand() *cli.Command {
	return &cli.Command{
		Name:   "bench-worker",
		Usage:  "internal: a measurement worker of meshd bench (JSON lines on stdin/stdout)",
		Hidden: true,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return cli.Exit("bench-worker takes no arguments", 2)
			}
			bench.RaiseNoFile()
			ctx, cancel := context.WithTimeout(c.Context, benchChildLifetime)
			defer cancel()
			// SIGINT/SIGTERM: close what we hold and exit.
			ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
			defer stop()
			if err := bench.ServeWorker(ctx, os.Stdin, os.Stdout); err != nil && ctx.Err() == nil {
				return err
			}
			return nil
		},
	}
}

func benchWGRefCommand() *cli.Command {
	return &cli.Command{
		Name:            "bench-wgref",
		Usage:           "internal: plain wireguard-go on a kernel TUN device, the reference of meshd bench --netns",
		UsageText:       "meshd bench-wgref --dev DEV --private KEY --port N --peer KEY --endpoint IP:PORT --addr CIDR --allowed CIDR [--mtu N] [--verbose]",
		Hidden:          true,
		SkipFlagParsing: true, // lab.ParseWGRefFlags reads what lab.WGRef.Flags wrote
		Action:          runBenchWGRef,
	}
}

// runBenchWGRef runs the lab.WGRef its flags describe until stdin closes
// (the bench is done with it, or died) or SIGINT/SIGTERM; it prints
// "ready" once the device is up.
func runBenchWGRef(c *cli.Context) error {
	w, err := lab.ParseWGRefFlags(c.Args().Slice())
	if err != nil {
		return cli.Exit("bench-wgref: "+err.Error(), 2)
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, benchChildLifetime)
	defer cancel()
	go func() { // ends when stdin closes: the bench is done with us or died
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	return w.Run(ctx, func() { fmt.Println("ready") })
}
