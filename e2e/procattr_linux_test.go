//go:build linux

package e2e

import "syscall"

// childAttr makes a meshd started by a test die with the test process:
// a test binary killed by go test's -timeout (or by hand) runs no cleanup,
// and its nodes would otherwise live on, holding ports and CPU.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
