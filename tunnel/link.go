package tunnel

import (
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"
)

// linkEndpoint is the netstack's NIC: gVisor's channel endpoint (packets
// out through a queue, in by injection) with segmentation offload both
// ways. Outbound, the TCP sender works on segments of up to 32 KiB and
// gVisor cuts them to the MTU in one batch (GVisorGSO), instead of running
// its send path once per 1420-byte packet. Inbound, a batch of packets
// from WireGuard goes through gVisor's GRO, which merges consecutive
// segments of a flow, so the TCP receive path also runs per large segment.
type linkEndpoint struct {
	*channel.Endpoint

	attached atomic.Bool // the NIC is attached: deliver inbound packets
	mu       sync.Mutex  // guards gro; WireGuard writes batches from one goroutine per peer
	gro      gro.GRO
}

func newLinkEndpoint(mtu int, offload bool) *linkEndpoint {
	e := &linkEndpoint{Endpoint: channel.New(1024, uint32(mtu), "")}
	if offload {
		e.SupportedGSOKind = stack.GVisorGSOSupported
	}
	// WireGuard authenticated every inbound packet (Poly1305), so the
	// stack may skip transport checksums, which GRO's merged segments
	// need. Outbound checksums stay: a kernel-mode peer verifies them.
	e.LinkEPCapabilities = stack.CapabilityRXChecksumOffload
	e.gro.Init(offload)
	return e
}

// Attach records the stack's dispatcher for GRO and passes it on. The
// stack attaches once when the NIC is created, before any packet, and
// detaches (d == nil) while removing the NIC, holding its own lock: a
// delivery in flight holds mu and waits for that lock, so detaching must
// not take mu.
func (e *linkEndpoint) Attach(d stack.NetworkDispatcher) {
	if d != nil {
		e.mu.Lock()
		e.gro.Dispatcher = d
		e.mu.Unlock()
	}
	e.attached.Store(d != nil)
	e.Endpoint.Attach(d)
}

// enqueue hands an inbound packet to GRO; flush delivers what GRO holds.
// The caller keeps its reference to pkt.
func (e *linkEndpoint) enqueue(pkt *stack.PacketBuffer) {
	if !e.attached.Load() {
		return
	}
	e.mu.Lock()
	e.gro.Enqueue(pkt)
	e.mu.Unlock()
}

func (e *linkEndpoint) flush() {
	e.mu.Lock()
	e.gro.Flush()
	e.mu.Unlock()
}
