package tunnel

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/meshd/meshd/internal/key"
)

// Tunnel modes (Config.Mode).
const (
	// ModeUserspace runs TCP in a gVisor netstack inside the process: no
	// root, no device visible to the host.
	ModeUserspace = "userspace"
	// ModeKernel creates a real TUN device (Linux, root) that carries the
	// mesh prefix; sessions use the kernel's TCP.
	ModeKernel = "kernel"
)

// Stack is the network under the WireGuard device that sessions ride on:
// the tun.Device that wireguard-go reads and writes, and TCP through it.
//
// The Tunnel owns a Stack: wireguard-go's device.Close closes it (through
// tun.Device.Close); connections and listeners it returned fail with
// net.ErrClosed or a reset afterwards. DialTCP and ListenTCP may be called
// concurrently from any goroutine.
type Stack interface {
	tun.Device

	// DialTCP opens a TCP connection to ap inside the tunnel, from this
	// node's mesh address, until ctx ends.
	DialTCP(ctx context.Context, ap netip.AddrPort) (net.Conn, error)
	// ListenTCP listens on ap, an address of this node inside the tunnel.
	ListenTCP(ap netip.AddrPort) (net.Listener, error)
}

var (
	_ Stack = (*netTUN)(nil)
	_ Stack = (*kernelTUN)(nil)
)

// openTUNFunc creates a named kernel TUN device with the given MTU; it is
// tun.CreateTUN except in tests.
type openTUNFunc func(name string, mtu int) (tun.Device, error)

// newStack creates the stack for cfg.Mode with addr as this node's mesh
// address. Nothing is left behind when it fails.
func newStack(cfg Config, pub key.PublicKey, addr netip.Addr, kn knobs) (Stack, error) {
	switch cfg.Mode {
	case "", ModeUserspace:
		return newNetTUN(addr, cfg.MTU, kn)
	case ModeKernel:
		name := cfg.DeviceName
		if name == "" {
			name = DefaultDeviceName(pub)
		}
		open := cfg.openTUN
		if open == nil {
			open = tun.CreateTUN
		}
		return newKernelTUN(name, addr, cfg.MTU, open)
	default:
		return nil, fmt.Errorf("tunnel: unknown mode %q (want %s or %s)", cfg.Mode, ModeUserspace, ModeKernel)
	}
}

// DefaultDeviceName is the kernel-mode TUN device name of the node with
// key pub: "meshd" and the first 8 hex digits of the key (13 characters,
// within Linux's 15).
func DefaultDeviceName(pub key.PublicKey) string {
	return "meshd" + pub.Hex()[:8]
}
