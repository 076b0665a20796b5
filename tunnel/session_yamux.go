package tunnel

import (
	"context"
	"io"
	"log"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/yamux"
)

// yamux's configuration for the mesh, and its log output as slog records.

// defaultStreamWindow is the most a yamux stream may have in flight: one
// stream moves at most window/RTT (4 MiB over 50 ms: 84 MB/s; yamux's
// 256 KiB default would cap it at 5 MB/s), and a stream whose local reader
// stalls buffers at most this much on the receiving node.
const defaultStreamWindow = 4 << 20

// yamuxConfig sizes yamux for the mesh: liveness comes from our own ping
// loop, so yamux's keepalive is off.
func yamuxConfig(cfg Config, lg *slog.Logger, window uint32) *yamux.Config {
	c := yamux.DefaultConfig()
	c.AcceptBacklog = 1024
	c.EnableKeepAlive = false
	c.ConnectionWriteTimeout = cfg.SessionTimeout
	c.MaxStreamWindowSize = window
	c.StreamOpenTimeout = 30 * time.Second
	// A stream this node closed whose peer never closes its half is
	// dropped (and reset) after this. Only after Close: a stream only
	// half-closed (CloseWrite) waits for its peer as long as it takes.
	c.StreamCloseTimeout = 30 * time.Second
	if cfg.streamCloseTimeout > 0 {
		c.StreamCloseTimeout = cfg.streamCloseTimeout
	}
	c.LogOutput = nil
	c.Logger = log.New(&logWriter{lg: lg.With("component", "yamux")}, "", 0)
	return c
}

// logWriter adapts a *log.Logger's output to slog, one record per line.
type logWriter struct{ lg *slog.Logger }

func (w *logWriter) Write(b []byte) (int, error) {
	msg := strings.TrimSpace(string(b))
	lvl := slog.LevelDebug
	if strings.HasPrefix(msg, "[ERR]") || strings.HasPrefix(msg, "[WARN]") {
		lvl = slog.LevelWarn
	}
	if strings.Contains(msg, "session shutdown") || strings.Contains(msg, io.EOF.Error()) ||
		strings.Contains(msg, net.ErrClosed.Error()) || strings.Contains(msg, answerErrPrefix) {
		lvl = slog.LevelDebug
	}
	w.lg.Log(context.Background(), lvl, msg)
	return len(b), nil
}
