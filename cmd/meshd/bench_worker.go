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
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/meshd/meshd/internal/bench"
	"github.com/meshd/meshd/internal/key"
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

// runBenchWGRef creates the TUN device, runs a wireguard-go device with one
// peer on it, gives the device its address, prints "ready" and runs until
// stdin closes or SIGINT/SIGTERM; then it closes the device, which
// removes the TUN device with its address.
func runBenchWGRef(c *cli.Context) error {
	priv, err := key.ParsePrivate(c.String("private"))
	if err != nil {
		return cli.Exit("--private: "+err.Error(), 2)
	}
	peer, err := key.ParsePublic(c.String("peer"))
	if err != nil {
		return cli.Exit("--peer: "+err.Error(), 2)
	}
	ep, err := netip.ParseAddrPort(c.String("endpoint"))
	if err != nil {
		return cli.Exit("--endpoint: "+err.Error(), 2)
	}
	addr, err := netip.ParsePrefix(c.String("addr"))
	if err != nil {
		return cli.Exit("--addr: "+err.Error(), 2)
	}
	allowed, err := netip.ParsePrefix(c.String("allowed"))
	if err != nil {
		return cli.Exit("--allowed: "+err.Error(), 2)
	}
	port := c.Int("port")
	if port < 1 || port > 65535 {
		return cli.Exit(fmt.Sprintf("--port %d: must be 1-65535", port), 2)
	}
	name := c.String("dev")

	tdev, err := tun.CreateTUN(name, c.Int("mtu"))
	if err != nil {
		return fmt.Errorf("bench-wgref: create TUN %s (needs root and /dev/net/tun): %w", name, err)
	}
	level := device.LogLevelError
	if c.Bool("verbose") {
		level = device.LogLevelVerbose
	}
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), device.NewLogger(level, "wgref: "))
	defer dev.Close() // closes the TUN: the kernel removes it with its address
	uapi := fmt.Sprintf("private_key=%s\nlisten_port=%d\nreplace_peers=true\npublic_key=%s\nendpoint=%s\nreplace_allowed_ips=true\nallowed_ip=%s\n",
		priv.Hex(), port, peer.Hex(), ep, allowed)
	if err := dev.IpcSet(uapi); err != nil {
		return fmt.Errorf("bench-wgref: configure wireguard-go: %w", err)
	}
	if err := dev.Up(); err != nil {
		return fmt.Errorf("bench-wgref: device up: %w", err)
	}
	for _, args := range [][]string{
		{"addr", "add", addr.String(), "dev", name},
		{"link", "set", name, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("bench-wgref: ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	fmt.Println("ready")

	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	stdinDone := make(chan struct{})
	go func() { // ends when stdin closes: the bench is done with us or died
		io.Copy(io.Discard, os.Stdin)
		close(stdinDone)
	}()
	select {
	case <-ctx.Done():
	case <-stdinDone:
	case <-dev.Wait():
		return fmt.Errorf("bench-wgref: wireguard-go device closed")
	case <-time.After(benchChildLifetime):
	}
	return nil
}
