package tunnel

import (
	"sync/atomic"

	"github.com/meshd/meshd/internal/key"
)

// Tracing the steps of a session's setup (BenchmarkColdFirstStream): a
// hook the package's benchmarks set to time each step. It is nil outside
// them, and a nil hook costs one atomic load.

// traceHook is called with the node whose step it is, the peer and the step.
var traceHook atomic.Pointer[func(self, peer key.PublicKey, step string)]

func trace(self, peer key.PublicKey, step string) {
	if f := traceHook.Load(); f != nil {
		(*f)(self, peer, step)
	}
}

// wgStep names a WireGuard handshake message sent or received.
func wgStep(dir string, typ byte) string {
	switch {
	case typ == wgInitiationType && dir == "sent":
		return "wg initiation sent"
	case typ == wgInitiationType:
		return "wg initiation received"
	case dir == "sent":
		return "wg response sent"
	}
	return "wg response received"
}
