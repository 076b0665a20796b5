//go:build linux

package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/meshd/meshd/internal/key"
)

// kernelTUN is the kernel-mode Stack: a real TUN device (wireguard-go's,
// with its GSO/GRO offloads) that holds this node's mesh address and the
// route of the mesh prefix (key.MeshPrefix), and the kernel's TCP over
// it. Closing it closes the device's file descriptor, and the kernel
// removes the device with its address and route.
type kernelTUN struct {
	tun.Device
	addr      netip.Addr // immutable
	unfilter  func()     // removes the input filter (nil if none)
	filterErr error      // why the input filter could not be installed; nil if it is
}

func (k *kernelTUN) filterError() error { return k.filterErr }

// Close removes the input filter and closes the device.
func (k *kernelTUN) Close() error {
	if k.unfilter != nil {
		k.unfilter()
		k.unfilter = nil
	}
	return k.Device.Close()
}

// newKernelTUN creates the device name with open, brings it up, assigns
// addr/128 and routes key.MeshPrefix to it. On error the device is closed
// again.
func newKernelTUN(name string, addr netip.Addr, mtu int, open openTUNFunc) (*kernelTUN, error) {
	dev, err := open(name, mtu)
	if err != nil {
		return nil, kernelOpenError(name, err)
	}
	if err := configureKernelTUN(dev, addr); err != nil {
		dev.Close()
		return nil, err
	}
	k := &kernelTUN{Device: dev, addr: addr}
	if devName, err := dev.Name(); err == nil {
		k.unfilter, k.filterErr = installFirewall(devName)
	} else {
		k.filterErr = err
	}
	return k, nil
}

// kernelOpenError explains why the TUN device could not be created.
func kernelOpenError(name string, err error) error {
	if errors.Is(err, syscall.EBUSY) {
		return fmt.Errorf("tunnel: TUN device %s is in use (another meshd on this host?): %w", name, err)
	}
	return fmt.Errorf("tunnel: kernel mode needs root and /dev/net/tun (create TUN %s: %w); use tunnel.mode: userspace", name, err)
}

func configureKernelTUN(dev tun.Device, addr netip.Addr) error {
	name, err := dev.Name()
	if err != nil {
		return fmt.Errorf("tunnel: TUN device name: %w", err)
	}
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return fmt.Errorf("tunnel: TUN device %s: %w", name, err)
	}
	nl, err := openRTNL()
	if err != nil {
		return fmt.Errorf("tunnel: configure %s: %w", name, err)
	}
	defer nl.Close()
	if err := nl.linkUp(ifi.Index); err != nil {
		return fmt.Errorf("tunnel: configure %s: %w", name, err)
	}
	if err := nl.addAddr(ifi.Index, netip.PrefixFrom(addr, addr.BitLen())); err != nil {
		return fmt.Errorf("tunnel: configure %s: %w", name, err)
	}
	if err := nl.addRoute(ifi.Index, key.MeshPrefix); err != nil {
		return fmt.Errorf("tunnel: configure %s: %w", name, err)
	}
	return nil
}

// DialTCP dials ap with the kernel's TCP from this node's mesh address.
func (k *kernelTUN) DialTCP(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(k.addr, 0))}
	return d.DialContext(ctx, "tcp", ap.String())
}

// ListenTCP listens with the kernel's TCP on ap.
func (k *kernelTUN) ListenTCP(ap netip.AddrPort) (net.Listener, error) {
	return net.Listen("tcp", ap.String())
}
