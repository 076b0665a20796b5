package benchrun

import (
	"testing"
	"time"
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
