package lab

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/meshd/meshd/internal/bench"
	"github.com/meshd/meshd/internal/key"
)

// WGRef is one end of the reference tunnel: plain wireguard-go on a
// kernel TUN device with one peer, no meshd, measuring what WireGuard
// itself costs on this machine.
type WGRef struct {
	Dev      string         // TUN device name
	MTU      int            // 0: 1420, meshd's tunnel MTU
	Private  key.PrivateKey // this end's key
	Port     int            // WireGuard UDP listen port
	Peer     key.PublicKey  // the other end's key
	Endpoint netip.AddrPort // the other end's WireGuard address
	Addr     netip.Prefix   // this end's tunnel address, e.g. 10.214.0.1/24
	Allowed  netip.Prefix   // the peer's allowed IPs, e.g. 10.214.0.2/32
	Verbose  bool           // wireguard-go's verbose log on stderr
}

// UAPI is the wireguard-go configuration of w (hex keys, as the UAPI
// protocol wants them).
func (w WGRef) UAPI() string {
	return fmt.Sprintf("private_key=%s\nlisten_port=%d\nreplace_peers=true\npublic_key=%s\nendpoint=%s\nreplace_allowed_ips=true\nallowed_ip=%s\n",
		w.Private.Hex(), w.Port, w.Peer.Hex(), w.Endpoint, w.Allowed)
}

// Flags are the flags of `meshd bench-wgref` that describe w. Throwaway
// keys of a private namespace: the command line is fine.
func (w WGRef) Flags() []string {
	f := []string{"--dev", w.Dev, "--private", w.Private.String(), "--port", strconv.Itoa(w.Port),
		"--peer", w.Peer.String(), "--endpoint", w.Endpoint.String(), "--addr", w.Addr.String(), "--allowed", w.Allowed.String()}
	if w.MTU != 0 {
		f = append(f, "--mtu", strconv.Itoa(w.MTU))
	}
	if w.Verbose {
		f = append(f, "--verbose")
	}
	return f
}

// ParseWGRefFlags reads the flags Flags writes: the command line of
// `meshd bench-wgref`. The error names the flag.
func ParseWGRefFlags(args []string) (WGRef, error) {
	w := WGRef{}
	fs := flag.NewFlagSet("bench-wgref", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&w.Dev, "dev", WGDev, "TUN device name")
	fs.IntVar(&w.Port, "port", 0, "WireGuard UDP listen port")
	fs.IntVar(&w.MTU, "mtu", 0, "TUN MTU (0: 1420, meshd's tunnel MTU)")
	fs.BoolVar(&w.Verbose, "verbose", false, "wireguard-go verbose log on stderr")
	parsers := []struct {
		name, usage string
		parse       func(string) error
	}{
		{"private", "private key, base64", func(s string) (err error) { w.Private, err = key.ParsePrivate(s); return }},
		{"peer", "the peer's public key, base64", func(s string) (err error) { w.Peer, err = key.ParsePublic(s); return }},
		{"endpoint", "the peer's WireGuard address ip:port", func(s string) (err error) { w.Endpoint, err = netip.ParseAddrPort(s); return }},
		{"addr", "this end's tunnel address with prefix", func(s string) (err error) { w.Addr, err = netip.ParsePrefix(s); return }},
		{"allowed", "the peer's allowed IPs", func(s string) (err error) { w.Allowed, err = netip.ParsePrefix(s); return }},
	}
	for _, p := range parsers {
		fs.Func(p.name, p.usage, p.parse)
	}
	if err := fs.Parse(args); err != nil {
		return w, err
	}
	if fs.NArg() > 0 {
		return w, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return w, w.Check()
}

// Check says what is wrong with w, nil if nothing.
func (w WGRef) Check() error {
	switch {
	case w.Dev == "":
		return fmt.Errorf("no TUN device name")
	case w.Private == (key.PrivateKey{}) || w.Peer.IsZero():
		return fmt.Errorf("no private key or no peer key")
	case w.Port < 1 || w.Port > 65535:
		return fmt.Errorf("port %d: must be 1-65535", w.Port)
	case !w.Endpoint.IsValid():
		return fmt.Errorf("no peer endpoint")
	case !w.Addr.IsValid() || !w.Allowed.IsValid():
		return fmt.Errorf("no tunnel address or allowed IPs")
	case w.MTU < 0 || w.MTU > 65535:
		return fmt.Errorf("mtu %d: must be 0-65535", w.MTU)
	}
	return nil
}

// Run creates the TUN device, runs a wireguard-go device with the one peer
// on it, gives the device its address, calls ready, and runs until ctx
// ends; then it closes the device, which removes the TUN device with its
// address. Needs root and /dev/net/tun; meant for a namespace of its own.
func (w WGRef) Run(ctx context.Context, ready func()) error {
	if err := w.Check(); err != nil {
		return fmt.Errorf("wgref: %w", err)
	}
	mtu := w.MTU
	if mtu == 0 {
		mtu = 1420
	}
	tdev, err := tun.CreateTUN(w.Dev, mtu)
	if err != nil {
		return fmt.Errorf("wgref: create TUN %s (needs root and /dev/net/tun): %w", w.Dev, err)
	}
	level := device.LogLevelError
	if w.Verbose {
		level = device.LogLevelVerbose
	}
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), device.NewLogger(level, "wgref: "))
	defer dev.Close() // closes the TUN: the kernel removes it with its address
	if err := dev.IpcSet(w.UAPI()); err != nil {
		return fmt.Errorf("wgref: configure wireguard-go: %w", err)
	}
	if err := dev.Up(); err != nil {
		return fmt.Errorf("wgref: device up: %w", err)
	}
	for _, args := range [][]string{
		{"addr", "add", w.Addr.String(), "dev", w.Dev},
		{"link", "set", w.Dev, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("wgref: ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	ready()
	select {
	case <-ctx.Done():
		return nil
	case <-dev.Wait():
		return fmt.Errorf("wgref: wireguard-go device closed")
	}
}

// WGRefProc is a child process running one WGRef end (`meshd bench-wgref`).
type WGRefProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{}
}

// StartWGRef starts argv (ending in `meshd bench-wgref` and the flags of
// a WGRef, usually behind ip netns exec) and waits up to 15 s for it to
// print "ready". On error the process is gone.
func StartWGRef(ctx context.Context, argv []string) (*WGRefProc, error) {
	w := &WGRefProc{cmd: exec.Command(argv[0], argv[1:]...), done: make(chan struct{})}
	w.cmd.SysProcAttr = childAttr()
	errTail := bench.NewTail(4000)
	w.cmd.Stderr = errTail
	var err error
	if w.stdin, err = w.cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("lab: wgref: %w", err)
	}
	stdout, err := w.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("lab: wgref: %w", err)
	}
	if err := w.cmd.Start(); err != nil {
		return nil, fmt.Errorf("lab: start wgref: %w", err)
	}
	ready := make(chan bool, 1)
	go func() { // owned by w: ends when the process's stdout closes
		sc := bufio.NewScanner(stdout)
		ready <- sc.Scan() && sc.Text() == "ready"
		io.Copy(io.Discard, stdout)
		w.cmd.Wait()
		close(w.done)
	}()
	select {
	case ok := <-ready:
		if ok {
			return w, nil
		}
		<-w.done
		return nil, fmt.Errorf("lab: wgref failed: %s", errTail)
	case <-ctx.Done():
		err = ctx.Err()
	case <-time.After(15 * time.Second):
		err = fmt.Errorf("lab: wgref not ready within 15s: %s", errTail)
	}
	w.Close()
	return nil, err
}

// Close ends the process: its stdin closes, so it closes its device and
// exits; it is killed if that takes more than 5 s.
func (w *WGRefProc) Close() {
	w.stdin.Close()
	select {
	case <-w.done:
	case <-time.After(5 * time.Second):
		w.cmd.Process.Kill()
		<-w.done
	}
}
