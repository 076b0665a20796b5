//go:build !linux

package bench

import "syscall"

// bindNoPort is a no-op outside Linux.
func bindNoPort(network, address string, c syscall.RawConn) error { return nil }

// childAttr puts a worker in its own process group.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
