package failover

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// span is a run of probes every 100 ms over [from, to) ms from t0, all
// served by node (site derived from its name) or, with node "", failed.
type span struct {
	from, to int
	node     string
}

func probesOf(spans ...span) []Probe {
	var ps []Probe
	for _, s := range spans {
		for at := s.from; at < s.to; at += 100 {
			p := Probe{At: t0.Add(msd(at)), Latency: msd(2 + (at+7000)%7)}
			if s.node == "" {
				p.Err = "dial: no answer"
			} else {
				p.OK, p.Node, p.Site = true, s.node, strings.Split(s.node, "-")[0]
			}
			ps = append(ps, p)
		}
	}
	return ps
}

func TestSummarize(t *testing.T) {
	start, restore := t0, t0.Add(20*time.Second)
	tests := []struct {
		name   string
		probes []Probe
		want   ServiceReport // Name, Timeline and latencies are not compared
	}{
		{
			name: "fails over and back",
			probes: probesOf(
				span{-1000, 0, "onprem-1"},
				span{0, 800, ""},
				span{800, 20000, "cloud-1"}, // first at +800 ms
				span{20000, 21200, "cloud-1"},
				span{21200, 23000, "onprem-1"},
			),
			want: ServiceReport{Probes: 240, Failed: 8, RTOMS: 804, FailbackMS: 1206,
				Before: "onprem-1", During: "cloud-1", After: "onprem-1"},
		},
		{
			// A probe that started a moment before the cut but was served
			// by the other site after it belongs to the drill, not "before".
			name: "probe straddling the start counts where it completed",
			probes: append(probesOf(span{-500, 0, "onprem-1"}),
				Probe{At: t0.Add(-time.Millisecond), Latency: 750 * time.Millisecond, OK: true, Node: "cloud-1", Site: "cloud"},
				Probe{At: t0.Add(time.Second), Latency: time.Millisecond, OK: true, Node: "cloud-1", Site: "cloud"}),
			want: ServiceReport{Probes: 7, RTOMS: 749, FailbackMS: -1,
				Before: "onprem-1", During: "cloud-1", After: ""},
		},
		{
			name:   "already served from another site: RTO 0",
			probes: probesOf(span{-500, 25000, "cloud-1"}),
			want: ServiceReport{Probes: 255, RTOMS: 0, FailbackMS: -1,
				Before: "cloud-1", During: "cloud-1", After: "cloud-1"},
		},
		{
			name:   "already elsewhere but interrupted: RTO measured",
			probes: probesOf(span{-500, 0, "cloud-1"}, span{0, 300, ""}, span{300, 21000, "cloud-2"}),
			want: ServiceReport{Probes: 215, Failed: 3, RTOMS: 308, FailbackMS: -1,
				Before: "cloud-1", During: "cloud-2", After: "cloud-2"},
		},
		{
			name:   "no other site: never fails over",
			probes: probesOf(span{-500, 0, "onprem-1"}, span{0, 20000, ""}, span{20000, 20400, ""}, span{20400, 21000, "onprem-2"}),
			want: ServiceReport{Probes: 215, Failed: 204, RTOMS: -1, FailbackMS: 404,
				Before: "onprem-1", During: "", After: "onprem-2"},
		},
		{
			name:   "never fails back",
			probes: probesOf(span{0, 500, ""}, span{500, 22000, "cloud-1"}),
			want: ServiceReport{Probes: 220, Failed: 5, RTOMS: 505, FailbackMS: -1,
				Before: "", During: "cloud-1", After: "cloud-1"},
		},
		{
			name:   "during: most OK probes, ties by name",
			probes: probesOf(span{0, 1000, "cloud-b"}, span{1000, 2000, "cloud-a"}, span{2000, 2500, "cloud-c"}),
			want: ServiceReport{Probes: 25, RTOMS: 2, FailbackMS: -1,
				During: "cloud-a"},
		},
		{
			name:   "no probes",
			probes: []Probe{},
			want:   ServiceReport{RTOMS: -1, FailbackMS: -1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Summarize("onprem", start, restore, map[string][]Probe{"svc": tt.probes})
			if r.Site != "onprem" || r.DurationMS != 20000 || len(r.Services) != 1 {
				t.Fatalf("report %+v", r)
			}
			got := r.Services[0]
			tt.want.Name = "svc"
			got.Timeline, got.LatencyP50MS, got.LatencyMaxMS = nil, 0, 0
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestSummarizeTimelineAndLatency(t *testing.T) {
	ps := probesOf(span{-200, 0, "onprem-1"}, span{0, 300, ""}, span{300, 500, "cloud-1"},
		span{500, 600, "cloud-2"}, span{600, 700, ""}, span{700, 800, "cloud-2"})
	ps[2].Err = "first error" // the first failure of the run
	slices.Reverse(ps)        // input order does not matter
	sr := Summarize("onprem", t0, t0.Add(time.Second), map[string][]Probe{"db": ps}).Services[0]
	want := []TimelineEvent{
		{AtMS: -200, EndMS: -93, Kind: EventServed, Count: 2, Node: "onprem-1", Site: "onprem"},
		{AtMS: 0, EndMS: 206, Kind: EventFailed, Count: 3, Err: "first error"},
		{AtMS: 300, EndMS: 505, Kind: EventServed, Count: 3, Node: "cloud-1", Nodes: []string{"cloud-1", "cloud-2"}, Site: "cloud"},
		{AtMS: 600, EndMS: 607, Kind: EventFailed, Count: 1, Err: "dial: no answer"},
		{AtMS: 700, EndMS: 702, Kind: EventServed, Count: 1, Node: "cloud-2", Site: "cloud"}, // recovered on the same node
	}
	if !reflect.DeepEqual(sr.Timeline, want) {
		t.Errorf("timeline\n%+v\nwant\n%+v", sr.Timeline, want)
	}
	// OK latencies (ms) at -200,-100,300,400,500,700: 5,7,8,3,5,2.
	if sr.LatencyP50MS != 5 || sr.LatencyMaxMS != 8 {
		t.Errorf("latency p50 %v max %v, want 5 and 8", sr.LatencyP50MS, sr.LatencyMaxMS)
	}
}

func TestReportJSON(t *testing.T) {
	r := Summarize("onprem", t0, t0.Add(20*time.Second), map[string][]Probe{
		"postgres": probesOf(span{-100, 0, "onprem-1"}, span{800, 900, "cloud-1"}, span{21200, 21300, "onprem-1"}),
		"cache":    nil,
	})
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Site       string           `json:"site"`
		DurationMS int64            `json:"duration_ms"`
		Services   []map[string]any `json:"services"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Site != "onprem" || got.DurationMS != 20000 || len(got.Services) != 2 {
		t.Fatalf("decoded %+v from %s", got, b)
	}
	if got.Services[0]["name"] != "cache" || got.Services[1]["name"] != "postgres" {
		t.Errorf("services not sorted by name: %s", b)
	}
	pg := got.Services[1]
	for k, v := range map[string]any{"probes": 3.0, "failed": 0.0, "rto_ms": 804.0, "failback_ms": 1206.0,
		"before": "onprem-1", "during": "cloud-1", "after": "onprem-1"} {
		if pg[k] != v {
			t.Errorf("%s = %v, want %v in %s", k, pg[k], v, b)
		}
	}
	if _, ok := got.Services[0]["timeline"]; ok {
		t.Errorf("empty timeline not omitted: %s", b)
	}
	empty, _ := json.Marshal(Summarize("x", t0, t0, nil))
	if want := `{"site":"x","duration_ms":0,"services":[]}`; string(empty) != want {
		t.Errorf("empty report %s, want %s", empty, want)
	}
}

func TestReportWriteText(t *testing.T) {
	r := Summarize("onprem", t0, t0.Add(20*time.Second), map[string][]Probe{
		"postgres": probesOf(span{-100, 0, "onprem-1"}, span{0, 200, ""}, span{800, 900, "cloud-1"}, span{21200, 21300, "onprem-1"}),
		"web":      probesOf(span{0, 100, ""}),
	})
	var buf bytes.Buffer
	r.WriteText(&buf)
	want := `drill of site onprem for 20s

SERVICE   PROBES  FAILED  RTO    FAILBACK  BEFORE → DURING → AFTER        P50    MAX
postgres  5       2       804ms  1.206s    onprem-1 → cloud-1 → onprem-1  6.0ms  7.0ms
web       1       1       never  never     - → - → -                      -      -

postgres:
  -100ms     served ×1 by onprem-1 (onprem)
  +0s        black-hole started
  +0s        failed ×2: dial: no answer
  +800ms     served ×1 by cloud-1 (cloud)
  +20s       restored
  +21.2s     served ×1 by onprem-1 (onprem)

web:
  +0s        black-hole started
  +0s        failed ×1: dial: no answer
  +20s       restored
`
	if got := buf.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestTimelineTruncated(t *testing.T) {
	var ps []Probe
	for i := range 3 * maxTimeline {
		ps = append(ps, Probe{At: t0.Add(msd(100 * i)), OK: i%2 == 0, Node: "n", Site: "s"})
	}
	tl := Summarize("s", t0, t0.Add(time.Minute), map[string][]Probe{"x": ps}).Services[0].Timeline
	if len(tl) != maxTimeline+1 || !reflect.DeepEqual(tl[maxTimeline], TimelineEvent{AtMS: 100 * maxTimeline, Kind: EventTruncated}) {
		t.Fatalf("%d events, last %+v", len(tl), tl[len(tl)-1])
	}
}
