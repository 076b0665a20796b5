package benchrun

import (
	"fmt"
	"io"
	"time"

	"github.com/meshd/meshd/internal/bench"
)

// Quick shortens o to a smoke test (meshd bench --quick): 300 ms runs and
// 100 idle connections held 500 ms. isSet reports whether the user set a
// flag (by name: duration, idle, idle-hold); those keep their values.
func (o *Options) Quick(isSet func(flag string) bool) {
	if !isSet("duration") {
		o.Duration = 300 * time.Millisecond
	}
	if !isSet("idle") {
		o.Idle = 100
	}
	if !isSet("idle-hold") {
		o.IdleHold = 500 * time.Millisecond
	}
}

// Format is how the results are printed: as one JSON object, as key=value
// lines, or both (JSON first).
type Format struct{ JSON, KV bool }

// ParseFormat reads --format (json, kv or both) and --json, which adds
// JSON to a --format given with it and is the default otherwise.
func ParseFormat(format string, formatSet, json bool) (Format, error) {
	if json && !formatSet {
		format = "json"
	}
	switch format {
	case "json", "kv", "both":
	default:
		return Format{}, fmt.Errorf("--format %q: allowed: json, kv, both", format)
	}
	return Format{JSON: format != "kv" || json, KV: format != "json"}, nil
}

// Write prints res in format f: the JSON object, then the key=value lines.
func (f Format) Write(w io.Writer, res *bench.Results) error {
	if f.JSON {
		if err := res.WriteJSON(w); err != nil {
			return err
		}
	}
	if f.KV {
		return res.WriteKV(w)
	}
	return nil
}
