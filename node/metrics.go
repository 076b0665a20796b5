package node

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/meshd/meshd/internal/metrics"
)

// metricsServer serves Prometheus /metrics on metrics.listen.
type metricsServer struct {
	srv  *http.Server
	addr string
	done chan struct{}
}

// MetricsAddr returns the bound metrics address ("" when disabled).
func (n *Node) MetricsAddr() string {
	if n.mtr == nil {
		return ""
	}
	return n.mtr.addr
}

func startMetrics(n *Node, addr string) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("node: metrics.listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", n.metrics.WithRuntime().Handler())
	ms := &metricsServer{done: make(chan struct{}), addr: ln.Addr().String(),
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go func() {
		defer close(ms.done)
		if err := ms.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Warn("metrics server", "err", err)
		}
	}()
	return ms, nil
}

func (ms *metricsServer) close() {
	ms.srv.Close()
	<-ms.done
}

// metricsSample adapts the node's status for the metrics collector.
func (n *Node) metricsSample() metrics.Sample {
	if n.catalog.Load() == nil || n.tun == nil {
		return metrics.Sample{}
	}
	st := n.Status()
	var s metrics.Sample
	for _, p := range st.Peers {
		s.Peers = append(s.Peers, metrics.PeerSample{
			Name: p.Name, Site: p.Site, State: p.State, Path: p.Path,
			RTT: time.Duration(p.RTTMs * float64(time.Millisecond)), Streams: p.Streams,
			TxBytes: p.TxBytes, RxBytes: p.RxBytes,
			Usable: p.Up,
		})
	}
	for _, im := range st.Imports {
		s.Imports = append(s.Imports, metrics.ImportSample{Name: im.Name, Active: im.Active, Total: im.Total, Failed: im.Failed})
	}
	m := n.exportMap()
	for _, e := range n.Config().Exports {
		x := m[e.Name]
		if x == nil {
			continue
		}
		s.Exports = append(s.Exports, metrics.ExportSample{Name: e.Name, Healthy: x.healthy.Load(),
			Active: x.active.Load(), Served: x.served.Load()})
	}
	return s
}
