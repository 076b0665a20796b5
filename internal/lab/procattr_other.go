//go:build !linux

package lab

import "syscall"

// childAttr puts a child in its own process group (no Pdeathsig outside
// Linux: a parent killed without cleanup leaves its nodes running).
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
