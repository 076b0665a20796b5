package benchrun

import (
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/bench"
)

func TestQuick(t *testing.T) {
	o := Options{Duration: 10 * time.Second, Idle: 2000, IdleHold: 30 * time.Second, IdleNodes: 1}
	o.Quick(func(string) bool { return false })
	if o.Duration != 300*time.Millisecond || o.Idle != 100 || o.IdleHold != 500*time.Millisecond || o.IdleNodes != 1 {
		t.Errorf("Quick: %+v", o)
	}
	o = Options{Duration: 10 * time.Second, Idle: 50, IdleHold: 30 * time.Second}
	o.Quick(func(f string) bool { return f == "idle" })
	if o.Duration != 300*time.Millisecond || o.Idle != 50 || o.IdleHold != 500*time.Millisecond {
		t.Errorf("Quick with --idle set: %+v", o)
	}
}

func TestParseFormat(t *testing.T) {
	for _, tc := range []struct {
		format          string
		formatSet, json bool
		want            Format
		err             bool
	}{
		{"json", false, false, Format{JSON: true}, false},
		{"kv", true, false, Format{KV: true}, false},
		{"both", true, false, Format{JSON: true, KV: true}, false},
		{"json", false, true, Format{JSON: true}, false},
		{"kv", true, true, Format{JSON: true, KV: true}, false},
		{"xml", true, false, Format{}, true},
		{"xml", false, true, Format{JSON: true}, false}, // --json without --format: json
	} {
		got, err := ParseFormat(tc.format, tc.formatSet, tc.json)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("ParseFormat(%q, set %v, json %v) = %+v, %v; want %+v, err %v", tc.format, tc.formatSet, tc.json, got, err, tc.want, tc.err)
		}
	}
}

func TestFormatWrite(t *testing.T) {
	res := bench.NewResults()
	res.Set("conn_rate", 12)
	for _, tc := range []struct {
		f    Format
		want string
	}{
		{Format{JSON: true}, "{\n  \"conn_rate\": 12\n}\n"},
		{Format{KV: true}, "conn_rate=12\n"},
		{Format{JSON: true, KV: true}, "{\n  \"conn_rate\": 12\n}\nconn_rate=12\n"},
	} {
		var b strings.Builder
		if err := tc.f.Write(&b, res); err != nil || b.String() != tc.want {
			t.Errorf("%+v.Write = %q, %v; want %q", tc.f, b.String(), err, tc.want)
		}
	}
}
