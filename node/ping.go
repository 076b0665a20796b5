package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/meshd/meshd/internal/wire"
)

// Ping limits.
const (
	MaxPingCount    = 100
	pingTimeout     = 2 * time.Second
	MinPingInterval = 10 * time.Millisecond
)

// PingRequest asks this node to ping a peer (POST /ping).
type PingRequest struct {
	Peer       string `json:"peer"`
	Count      int    `json:"count"`
	IntervalMS int64  `json:"interval_ms"`
}

// PingReply is one round trip of meshd ping.
type PingReply struct {
	Seq      int     `json:"seq"`
	OK       bool    `json:"ok"`
	RTTMs    float64 `json:"rtt_ms"`         // stream open, request and answer through the tunnel
	Path     string  `json:"path"`           // direct | relay | none, after the round trip
	RelayVia string  `json:"relay_via"`      // the relay's name when path is relay
	Endpoint string  `json:"endpoint"`       // the peer's WireGuard endpoint in use
	Node     string  `json:"node,omitempty"` // the name the peer answered with
	Error    string  `json:"error,omitempty"`
}

// PingResult is meshd ping's report.
type PingResult struct {
	Peer     string      `json:"peer"`
	Site     string      `json:"site"`
	Replies  []PingReply `json:"replies"`
	Sent     int         `json:"sent"`
	Received int         `json:"received"`
	MinMs    float64     `json:"min_ms"`
	AvgMs    float64     `json:"avg_ms"`
	MaxMs    float64     `json:"max_ms"`
}

// Ping sends count round trips to the named peer through the tunnel, one
// per interval: each opens a stream, sends a ping open request and waits
// for the answer (the exporter answers at once, dialling nothing). It
// reports each RTT and the path, relay and endpoint in use.
func (n *Node) Ping(ctx context.Context, req PingRequest) (PingResult, error) {
	if req.Count <= 0 {
		req.Count = 4
	}
	if req.Count > MaxPingCount {
		return PingResult{}, fmt.Errorf("ping: count %d: at most %d", req.Count, MaxPingCount)
	}
	interval := max(time.Duration(req.IntervalMS)*time.Millisecond, MinPingInterval)
	if req.IntervalMS == 0 {
		interval = time.Second
	}
	if req.Peer == n.cfg.Name {
		return PingResult{}, errors.New("ping: that is this node")
	}
	m, ok := n.catalog.Load().byName[req.Peer]
	if !ok || m.Meta.PublicKey.IsZero() {
		return PingResult{}, fmt.Errorf("ping: no member named %q (see meshd status)", req.Peer)
	}
	res := PingResult{Peer: m.Name, Site: m.Meta.Site, Replies: []PingReply{}}
	for seq := 1; seq <= req.Count; seq++ {
		if seq > 1 && !sleepCtx(ctx, interval) {
			break
		}
		rep := PingReply{Seq: seq}
		pctx, cancel := context.WithTimeout(ctx, pingTimeout)
		start := time.Now()
		var answer wire.Response
		c, err := n.tun.DialStream(pctx, m.Meta.PublicKey, func(s net.Conn) error {
			if err := wire.WriteRequest(s, wire.Request{Service: "meshd.ping", Flags: wire.FlagPing}); err != nil {
				return err
			}
			r, err := wire.ReadResponse(s)
			answer = r
			return err
		})
		rtt := time.Since(start)
		cancel()
		if c != nil {
			c.Close()
		}
		res.Sent++
		if err != nil {
			rep.Error = err.Error()
		} else {
			rep.OK, rep.Node = true, answer.Node
			rep.RTTMs = float64(rtt.Microseconds()) / 1000
			if res.Received == 0 || rep.RTTMs < res.MinMs {
				res.MinMs = rep.RTTMs
			}
			res.MaxMs = max(res.MaxMs, rep.RTTMs)
			res.AvgMs += rep.RTTMs
			res.Received++
		}
		rep.Path = PathNone
		if st, ok := n.tun.SessionStats(m.Meta.PublicKey); ok {
			if st.SessionUp {
				rep.Path, rep.RelayVia = st.Path, st.RelayVia
			}
			if st.Endpoint.IsValid() {
				rep.Endpoint = st.Endpoint.String()
			}
		}
		res.Replies = append(res.Replies, rep)
		if ctx.Err() != nil {
			break
		}
	}
	if res.Received > 0 {
		res.AvgMs /= float64(res.Received)
	}
	return res, nil
}
