package lab

import "syscall"

// childAttr puts a child (a node, a wireguard-go end) in its own process
// group, so a terminal's Ctrl-C reaches only the parent, and has it killed
// when the parent dies without stopping it. ip netns exec execs in place,
// so Pdeathsig reaches the command itself.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
