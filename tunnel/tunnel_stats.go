package tunnel

import (
	"bufio"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/meshd/meshd/internal/key"
)

// What the tunnel reports of its peers: sessions held, per-state counts and
// per-peer statistics (the data path's, plus WireGuard's from its UAPI dump).

// PeerStats is a snapshot of one peer's tunnel state.
type PeerStats struct {
	Endpoint      netip.AddrPort
	LastHandshake time.Time // zero if never
	TxBytes       uint64
	RxBytes       uint64
	Probes        uint64        // direct-path probes sent (only while a session is held or dialled)
	Path          string        // "direct", "relay" or "none"
	RelayVia      string        // the relay's name when Path is "relay"
	RTT           time.Duration // last session ping; 0 if unknown
	SRTT          time.Duration // smoothed session RTT; 0 if unknown
	LastPong      time.Time     // last answered session ping; zero if none
	PingPending   time.Time     // when the unanswered ping was sent; zero if none
	SessionUp     bool
	Streams       int
	// WireGuard: the peer is a WireGuard peer of the device now (only
	// peers with traffic are; see wgIdleAfter).
	WireGuard bool
	// Session is SessionStateUp, SessionStateIdle or SessionStateDown.
	Session string
	// Owned: this node holds a session it needed (which it closes when
	// idle; see CloseIdle).
	Owned bool
	// Redundant: both sides dialled a session and the one this node owns
	// is not the one new streams use: close it once it carries no stream.
	Redundant bool
}

// SessionInfo is one peer this node holds a session with.
type SessionInfo struct {
	PublicKey key.PublicKey
	Streams   int
	Owned     bool // this node needed it (and closes it when idle: CloseIdle)
	// Redundant: two sessions are up and the one this node owns is not the
	// one new streams use; SpareStreams is what it still carries.
	Redundant    bool
	SpareStreams int
}

// Sessions lists the peers this node holds a session with: the only peers
// that cost more than gossip.
func (t *Tunnel) Sessions() []SessionInfo {
	t.mu.Lock()
	peers := make([]*peer, 0, len(t.peers))
	for _, p := range t.peers {
		peers = append(peers, p)
	}
	t.mu.Unlock()
	var out []SessionInfo
	for _, p := range peers {
		p.mu.Lock()
		if p.out != nil || p.in != nil {
			out = append(out, p.infoLocked())
		}
		p.mu.Unlock()
	}
	return out
}

// SessionCounts returns how many peers are in each session state
// (SessionState*).
func (t *Tunnel) SessionCounts() map[string]int {
	t.mu.Lock()
	peers := make([]*peer, 0, len(t.peers))
	for _, p := range t.peers {
		peers = append(peers, p)
	}
	t.mu.Unlock()
	out := map[string]int{SessionStateUp: 0, SessionStateIdle: 0, SessionStateDown: 0}
	for _, p := range peers {
		p.mu.Lock()
		out[p.stateLocked()]++
		p.mu.Unlock()
	}
	return out
}

// SessionStats is the part of a peer's PeerStats that the data path
// keeps (session, pings, path, the bind's byte counters), without
// WireGuard's handshake time: cheap enough for every new connection and
// every metrics scrape (no UAPI lock). ok is false for an unknown peer.
func (t *Tunnel) SessionStats(pub key.PublicKey) (st PeerStats, ok bool) {
	t.mu.Lock()
	p := t.peers[pub]
	t.mu.Unlock()
	if p == nil {
		return PeerStats{}, false
	}
	st = p.stats()
	st.Path, st.RelayVia = t.bind.Path(pub)
	st.TxBytes, st.RxBytes = t.bind.Bytes(pub)
	st.Probes = t.bind.Probes(pub)
	st.WireGuard = t.bind.IsWG(pub)
	return st, true
}

// AllSessionStats returns SessionStats for every peer: what metrics
// scrapes read, never taking WireGuard's UAPI lock.
func (t *Tunnel) AllSessionStats() map[key.PublicKey]PeerStats {
	t.mu.Lock()
	pubs := make([]key.PublicKey, 0, len(t.peers))
	for pub := range t.peers {
		pubs = append(pubs, pub)
	}
	t.mu.Unlock()
	out := make(map[key.PublicKey]PeerStats, len(pubs))
	for _, pub := range pubs {
		if st, ok := t.SessionStats(pub); ok {
			out[pub] = st
		}
	}
	return out
}

// Stats returns every peer's statistics, AllSessionStats plus WireGuard's
// handshake time and endpoint (read through its UAPI dump, which takes
// the device's locks: for status, not per connection or per scrape).
func (t *Tunnel) Stats() map[key.PublicKey]PeerStats {
	out := t.AllSessionStats()
	t.ipcMu.Lock()
	uapi, err := t.dev.IpcGet()
	t.ipcMu.Unlock()
	if err != nil {
		return out
	}
	parseUAPIStats(uapi, out)
	return out
}

// parseUAPIStats folds wireguard-go's UAPI "get" output into out.
func parseUAPIStats(uapi string, out map[key.PublicKey]PeerStats) {
	var cur key.PublicKey
	var have bool
	var sec, nsec int64
	flush := func() {
		if !have {
			return
		}
		if st, ok := out[cur]; ok {
			if sec != 0 || nsec != 0 {
				st.LastHandshake = time.Unix(sec, nsec).UTC()
			}
			out[cur] = st
		}
	}
	sc := bufio.NewScanner(strings.NewReader(uapi))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		if k == "public_key" {
			flush()
			pk, err := key.ParsePublicHex(v)
			cur, have, sec, nsec = pk, err == nil, 0, 0
			continue
		}
		if !have {
			continue
		}
		st, ok := out[cur]
		if !ok {
			continue
		}
		switch k {
		case "endpoint":
			if ap, err := netip.ParseAddrPort(v); err == nil {
				st.Endpoint = ap
			}
		case "last_handshake_time_sec":
			sec, _ = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			nsec, _ = strconv.ParseInt(v, 10, 64)
		}
		out[cur] = st
	}
	flush()
}
