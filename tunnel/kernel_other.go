//go:build !linux

package tunnel

import (
	"context"
	"errors"
	"net"
	"net/netip"

	"golang.zx2c4.com/wireguard/tun"
)

// kernelTUN is the kernel-mode Stack; outside Linux it cannot be created.
type kernelTUN struct {
	tun.Device
}

func newKernelTUN(name string, addr netip.Addr, mtu int, open openTUNFunc) (*kernelTUN, error) {
	return nil, errors.New("tunnel: kernel mode is supported on Linux only; use tunnel.mode: userspace")
}

func (k *kernelTUN) DialTCP(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
	return nil, net.ErrClosed
}

func (k *kernelTUN) ListenTCP(ap netip.AddrPort) (net.Listener, error) {
	return nil, net.ErrClosed
}
