package daemon

import (
	"io"
	"log/slog"

	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/node"
)

// ParseLevel maps log.level to a slog level (info when unknown).
func ParseLevel(s string) slog.Level {
	switch s {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// NewLogger builds the process logger from the log section: text, or JSON
// with format json. level, when not nil, is the live level (LevelStep
// changes it on reload) and replaces lc.Level.
func NewLogger(w io.Writer, lc config.Log, level *slog.LevelVar) *slog.Logger {
	var lvl slog.Leveler = ParseLevel(lc.Level)
	if level != nil {
		lvl = level
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if lc.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// LevelStep is the node's reload step for log.level (node.OnReload): when
// the level changed, its commit sets level, logs the change and notes it
// in the reload's result with note (node.ReloadNote).
func LevelStep(level *slog.LevelVar, lg *slog.Logger, note func(format string, args ...any)) node.ReloadFunc {
	return func(old, cfg *config.Config) (func(), func(), error) {
		if old.Log.Level == cfg.Log.Level {
			return nil, nil, nil
		}
		return func() {
			level.Set(ParseLevel(cfg.Log.Level))
			lg.Info("reload: log level changed", "level", cfg.Log.Level)
			note("log level %s", cfg.Log.Level)
		}, nil, nil
	}
}
