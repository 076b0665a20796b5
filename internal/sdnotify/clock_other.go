//go:build !linux

package sdnotify

// monotonicNow is not available: systemd runs on Linux only.
func monotonicNow() int64 { return 0 }
