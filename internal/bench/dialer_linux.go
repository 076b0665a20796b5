package bench

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// bindNoPort sets IP_BIND_ADDRESS_NO_PORT on a socket about to be bound to
// a source address: the kernel then picks the port at connect time, unique
// per 4-tuple, instead of reserving a port number for the bind. Without
// it, every client socket bound to 127.0.0.x takes a port number away from
// every other process's connect() on the host (the exporter's dials to its
// backend), and 18,000 connections exhaust the 28,000 ephemeral ports.
func bindNoPort(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// childAttr puts a worker in its own process group and has the kernel
// kill it should the parent die.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
