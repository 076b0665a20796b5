//go:build linux

package tunnel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/internal/testutil"
)

// TestKernelModeUnprivileged: without the privilege to create a TUN device
// (simulated by the opener: the tests run as root), New fails at once with
// one clear line, and leaves nothing behind: no goroutines, no UDP port.
func TestKernelModeUnprivileged(t *testing.T) {
	for _, tc := range []struct {
		name string
		open openTUNFunc
	}{
		{"EPERM", func(string, int) (tun.Device, error) { return nil, syscall.EPERM }},
		{"no /dev/net/tun", func(name string, mtu int) (tun.Device, error) {
			_, err := os.OpenFile("/nonexistent/dev/net/tun", os.O_RDWR, 0)
			return nil, err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := testutil.Snapshot()
			k, err := key.NewPrivate()
			if err != nil {
				t.Fatal(err)
			}
			udp := freeUDP(t)
			start := time.Now()
			tn, err := New(Config{PrivateKey: k, Listen: udp, Mode: ModeKernel, openTUN: tc.open})
			if err == nil {
				tn.Close()
				t.Fatal("New succeeded")
			}
			msg := err.Error()
			t.Logf("error: %s", msg)
			for _, want := range []string{"tunnel: kernel mode needs root and /dev/net/tun (", "); use tunnel.mode: userspace", DefaultDeviceName(k.Public())} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q lacks %q", msg, want)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans several lines: %q", msg)
			}
			if el := time.Since(start); el > time.Second {
				t.Errorf("failing took %v", el)
			}
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(udp))
			if err != nil {
				t.Errorf("UDP port left bound: %v", err)
			} else {
				c.Close()
			}
			waitGoroutines(t, base)
		})
	}
}

func TestKernelModeBusyDevice(t *testing.T) {
	err := kernelOpenError("meshd01234567", fmt.Errorf("wrap: %w", syscall.EBUSY))
	if !strings.Contains(err.Error(), "meshd01234567 is in use") || !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("got %v", err)
	}
}

func TestUnknownMode(t *testing.T) {
	k, _ := key.NewPrivate()
	if _, err := New(Config{PrivateKey: k, Listen: freeUDP(t), Mode: "fast"}); err == nil || !strings.Contains(err.Error(), `unknown mode "fast"`) {
		t.Fatalf("got %v", err)
	}
}

func TestDefaultDeviceName(t *testing.T) {
	k, _ := key.NewPrivate()
	n := DefaultDeviceName(k.Public())
	if len(n) > 15 || !strings.HasPrefix(n, "meshd") || n != DefaultDeviceName(k.Public()) {
		t.Fatalf("name %q", n)
	}
}

// TestKernelModeDevice creates a real kernel-mode tunnel in a fresh network
// namespace (root only): the device is up with the mesh address and the
// mesh route, sessions listen on the kernel's TCP, and Close removes it.
func TestKernelModeDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("kernel mode: needs root")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("kernel mode: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		// This thread enters a new network namespace and is never
		// unlocked: the runtime discards it when the goroutine ends.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("skip: unshare: %v", err)
			return
		}
		done <- kernelDeviceCheck()
	}()
	if err := <-done; err != nil {
		if strings.HasPrefix(err.Error(), "skip: ") {
			t.Skip(err)
		}
		t.Fatal(err)
	}
}

func kernelDeviceCheck() error {
	k, err := key.NewPrivate()
	if err != nil {
		return err
	}
	tn, err := New(Config{PrivateKey: k, Listen: netip.MustParseAddrPort("127.0.0.1:0"), Mode: ModeKernel})
	if err != nil {
		return err
	}
	name := DefaultDeviceName(k.Public())
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		tn.Close()
		return err
	}
	addrs, _ := ifi.Addrs()
	var found bool
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr() == tn.MeshIP() && p.Bits() == 128 {
			found = true
		}
	}
	if ifi.Flags&net.FlagUp == 0 || !found || ifi.MTU != DefaultMTU {
		tn.Close()
		return fmt.Errorf("device %s: flags %v, MTU %d, addrs %v; want up, %d, %s/128", name, ifi.Flags, ifi.MTU, addrs, DefaultMTU, tn.MeshIP())
	}
	if _, ok := tn.net.(*kernelTUN); !ok {
		tn.Close()
		return fmt.Errorf("stack is %T", tn.net)
	}
	// The input filter: only the session port (and replies) on the device.
	if _, err := exec.LookPath("nft"); err == nil {
		out, err := exec.Command("nft", "list", "table", "inet", firewallTable(name)).CombinedOutput()
		if err != nil || !strings.Contains(string(out), fmt.Sprintf("tcp dport %d accept", SessionPort)) ||
			!strings.Contains(string(out), `iifname "`+name+`" drop`) {
			tn.Close()
			return fmt.Errorf("input filter of %s: %v: %s", name, err, out)
		}
	}
	tn.Close()
	if _, err := exec.LookPath("nft"); err == nil {
		if err := exec.Command("nft", "list", "table", "inet", firewallTable(name)).Run(); err == nil {
			return fmt.Errorf("input filter of %s still installed after Close", name)
		}
	}
	if _, err := net.InterfaceByName(name); err == nil {
		return fmt.Errorf("device %s still exists after Close", name)
	}
	return nil
}

func freeUDP(t *testing.T) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}
