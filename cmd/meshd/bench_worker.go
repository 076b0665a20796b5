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
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/internal/bench"
	"github.com/meshd/meshd/internal/key"
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
		Name:   "bench-wgref",
		Usage:  "internal: plain wireguard-go on a kernel TUN device, the reference of meshd bench --netns",
		Hidden: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dev", Value: "mbwg0", Usage: "TUN device name"},
			&cli.StringFlag{Name: "private", Usage: "private key, base64"},
			&cli.IntFlag{Name: "port", Usage: "WireGuard UDP listen port"},
			&cli.StringFlag{Name: "peer", Usage: "the peer's public key, base64"},
			&cli.StringFlag{Name: "endpoint", Usage: "the peer's WireGuard address ip:port"},
			&cli.StringFlag{Name: "addr", Usage: "this end's tunnel address with prefix, e.g. 10.214.0.1/24"},
			&cli.StringFlag{Name: "allowed", Usage: "the peer's allowed IPs, e.g. 10.214.0.2/32"},
			&cli.IntFlag{Name: "mtu", Value: 1420, Usage: "TUN MTU (meshd's tunnel MTU is 1420)"},
			&cli.BoolFlag{Name: "verbose", Usage: "wireguard-go verbose log on stderr"},
		},
		Action: runBenchWGRef,
	}
}

// runBenchWGRef maps the flags to a lab.WGRef and runs it until stdin
// closes (the bench is done with it, or died) or SIGINT/SIGTERM; it
// prints "ready" once the device is up.
func runBenchWGRef(c *cli.Context) error {
	w := lab.WGRef{Dev: c.String("dev"), Port: c.Int("port"), MTU: c.Int("mtu"), Verbose: c.Bool("verbose")}
	var err error
	parse := []struct {
		flag string
		f    func(string) error
	}{
		{"private", func(s string) (err error) { w.Private, err = key.ParsePrivate(s); return }},
		{"peer", func(s string) (err error) { w.Peer, err = key.ParsePublic(s); return }},
		{"endpoint", func(s string) (err error) { w.Endpoint, err = netip.ParseAddrPort(s); return }},
		{"addr", func(s string) (err error) { w.Addr, err = netip.ParsePrefix(s); return }},
		{"allowed", func(s string) (err error) { w.Allowed, err = netip.ParsePrefix(s); return }},
	}
	for _, p := range parse {
		if err = p.f(c.String(p.flag)); err != nil {
			return cli.Exit("--"+p.flag+": "+err.Error(), 2)
		}
	}
	if err := w.Check(); err != nil {
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
