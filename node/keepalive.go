package node

import (
	"context"
	"net"
	"time"
)

// clientKeepAlive is TCP keepalive on the connections a node proxies (an
// import's clients, an export's target). Go's default probes every 15 s;
// a node holding 100,000 idle connections would send over 6,000 probes a
// second for them, and on a busy loopback those bursts overflow the
// kernel's input backlog and time out healthy connections. Two minutes of
// silence, then four probes 30 s apart, still finds a dead client or
// backend within four minutes, and streams end with it.
var clientKeepAlive = keepAlive(net.KeepAliveConfig{Enable: true, Idle: 2 * time.Minute, Interval: 30 * time.Second, Count: 4})

type keepAlive net.KeepAliveConfig

func (k keepAlive) listen(network, addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAliveConfig: net.KeepAliveConfig(k)}
	return lc.Listen(context.Background(), network, addr)
}
