package tunnel

import (
	"os"
	"strconv"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// Tuning knobs for measuring the data path, read from the environment
// when a tunnel is created (like tailscale's TS_DEBUG_* envknobs). They
// exist so each tuning step's effect can be measured in one run (see
// node's BenchmarkThroughputTuning); they are not a stable interface and
// the defaults are what meshd should run with.
type knobs struct {
	tunBatch        bool // netstack TUN hands WireGuard batches (else one packet per read)
	udpOffload      bool // UDP GSO sends and GRO receives
	netstackOffload bool // gVisor GSO out, GRO in
	sack            bool // netstack TCP SACK (and RACK)
	yamuxWindow     uint32
	tcpBuf          int    // netstack TCP buffer default (max is 8x, at least tcpBufMax)
	cc              string // netstack congestion control: "reno" or "cubic"
	rack            bool   // RACK loss detection (with SACK)
	maxRTO          int    // ms
	minRTO          int    // ms
	maxRetries      uint64 // set from the session timeout, not the environment
}

// batchSize is how many packets the bind and the netstack TUN hand
// wireguard-go at once. wireguard-go keeps that many 64 KiB message buffers
// per receive routine for the device's life, so it sets a node's idle
// memory as well as its bulk throughput. 32 packets of 1,420 bytes fill
// one 64 KiB GSO send, and a GRO receive takes up to 64 KiB per message:
// wireguard-go's 128 (conn.IdealBatchSize) bought no throughput here and
// cost every node 6 MB of RSS (README "Performance", fleet scale).
var batchSize = envInt("MESHD_DEBUG_BATCH", 32, 1, conn.IdealBatchSize)

func readKnobs() knobs {
	k := knobs{
		tunBatch:        envBool("MESHD_DEBUG_TUN_BATCH", true),
		udpOffload:      envBool("MESHD_DEBUG_UDP_OFFLOAD", true),
		netstackOffload: envBool("MESHD_DEBUG_NETSTACK_OFFLOAD", true),
		sack:            envBool("MESHD_DEBUG_NETSTACK_SACK", false),
		yamuxWindow:     uint32(envInt("MESHD_DEBUG_YAMUX_WINDOW", defaultStreamWindow, 256<<10, 64<<20)),
		tcpBuf:          envInt("MESHD_DEBUG_TCP_BUF", tcpBufDefault, 64<<10, 64<<20),
		cc:              os.Getenv("MESHD_DEBUG_NETSTACK_CC"),
		rack:            envBool("MESHD_DEBUG_NETSTACK_RACK", true),
		maxRetries:      maxRetries,
		minRTO:          envInt("MESHD_DEBUG_NETSTACK_MINRTO_MS", int(minRTO/time.Millisecond), 1, 1000),
		maxRTO:          envInt("MESHD_DEBUG_NETSTACK_MAXRTO_MS", int(maxRTO/time.Millisecond), 200, 120000),
	}
	return k
}

func envBool(name string, def bool) bool {
	v, err := strconv.ParseBool(os.Getenv(name))
	if err != nil {
		return def
	}
	return v
}

func envInt(name string, def, lo, hi int) int {
	v, err := strconv.Atoi(os.Getenv(name))
	if err != nil || v < lo || v > hi {
		return def
	}
	return v
}

// congestionControl is the netstack's TCP congestion control.
func (k knobs) congestionControl() string {
	if k.cc == "cubic" || k.cc == "reno" {
		return k.cc
	}
	return defaultCongestionControl
}

// recovery is the netstack's loss recovery option.
func (k knobs) recovery() tcpip.TCPRecovery {
	if k.rack {
		return tcpip.TCPRACKLossDetection
	}
	return 0
}
