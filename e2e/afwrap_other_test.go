//go:build !linux

package e2e

func afWrapMain() (int, bool) { return 0, false }
