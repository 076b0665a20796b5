package e2e

// Failover figures over many runs:
//
//	go test -run XXX -bench Failover -benchtime 20x ./e2e
//
// Each iteration cuts site onprem for 3 s (a drill, or SIGSTOP of its
// exporters) while a client opens a new connection through edge-1's import
// every 50 ms. Reported: rto-p50-ms, rto-p99-ms, failback-p50-ms,
// failback-p99-ms (nearest rank; with 20 iterations p99 is the worst run)
// and failed-conns (client connections that failed, over all iterations);
// the drill benchmark also reports failed-probes, never (an rto_ms or
// failback_ms of -1, left out of the percentiles) and rto-zero (reports
// with rto_ms 0). ns/op is the length of one cycle, cut and failback
// included.

import (
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"
)

const foBenchCut = 3 * time.Second

// foReport reports the figures of a failover benchmark and logs them, then
// notes (the go tool shows only the first lines of a benchmark's log).
func foReport(b *testing.B, rtos, failbacks []time.Duration, failed int, extra map[string]float64, notes []string) {
	b.Helper()
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	slices.Sort(rtos)
	slices.Sort(failbacks)
	b.ReportMetric(ms(foPct(rtos, 50)), "rto-p50-ms")
	b.ReportMetric(ms(foPct(rtos, 99)), "rto-p99-ms")
	b.ReportMetric(ms(foPct(failbacks, 50)), "failback-p50-ms")
	b.ReportMetric(ms(foPct(failbacks, 99)), "failback-p99-ms")
	b.ReportMetric(float64(failed), "failed-conns")
	for k, v := range extra {
		b.ReportMetric(v, k)
	}
	r := func(ds []time.Duration) []time.Duration {
		out := make([]time.Duration, len(ds))
		for i, d := range ds {
			out[i] = d.Round(time.Millisecond)
		}
		return out
	}
	b.Logf("rto (sorted) %v", r(rtos))
	b.Logf("failback (sorted) %v", r(failbacks))
	b.Logf("%d failed client connections", failed)
	for _, n := range notes {
		b.Log(n)
	}
}

// BenchmarkFailoverDrill runs one `meshd drill --site onprem --duration 3s`
// from edge-1 per iteration; the figures are the reports' rto_ms and
// failback_ms.
func BenchmarkFailoverDrill(b *testing.B) {
	tp := newFOTopo(b, foTopoOpts{})
	cl := startFOClient(b, tp.imp)
	cl.waitOK(b, time.Now(), 10, foSiteOnprem, 15*time.Second, "client connections served by onprem")
	var rtos, failbacks []time.Duration
	failedProbes, never, zeroRTO, iter := 0, 0, 0, 0
	var notes []string
	for b.Loop() {
		iter++
		rep, out := foDrill(b, tp, foBenchCut)
		if len(rep.Services) != 1 {
			b.Fatalf("drill report: %s", out)
		}
		s := rep.Services[0]
		// -1 means it never happened (docs/formats.md): counted apart, not as 0.
		if s.RTOMS >= 0 {
			rtos = append(rtos, time.Duration(s.RTOMS)*time.Millisecond)
		} else {
			never++
		}
		if s.FailbackMS >= 0 {
			failbacks = append(failbacks, time.Duration(s.FailbackMS)*time.Millisecond)
		} else {
			never++
		}
		if s.RTOMS == 0 {
			zeroRTO++ // see TestFailoverDrill: a report bug, not an instant failover
		}
		failedProbes += s.Failed
		if s.RTOMS <= 0 || s.FailbackMS < 0 || s.Failed > 0 || s.FailbackMS > 5000 {
			notes = append(notes, fmt.Sprintf("drill %d: rto_ms %d failback_ms %d failed %d/%d %s → %s → %s",
				iter, s.RTOMS, s.FailbackMS, s.Failed, s.Probes, s.Before, s.During, s.After))
		}
		tp.waitUp(b, 30*time.Second)
	}
	b.StopTimer()
	cl.Stop()
	foReport(b, rtos, failbacks, len(cl.failures()), map[string]float64{
		"failed-probes": float64(failedProbes), "never": float64(never), "rto-zero": float64(zeroRTO)}, notes)
	if f := cl.failures(); len(f) > 0 {
		b.Logf("first failed client connection: %+v", f[0])
	}
}

// BenchmarkFailoverSIGSTOP freezes the onprem exporters for 3 s per
// iteration; the figures are what the client saw: from the stop to the
// first connection served by cloud-1, and from SIGCONT to the first one
// served by onprem again.
func BenchmarkFailoverSIGSTOP(b *testing.B) {
	tp := newFOTopo(b, foTopoOpts{})
	cl := startFOClient(b, tp.imp)
	cl.waitOK(b, time.Now(), 10, foSiteOnprem, 15*time.Second, "client connections served by onprem")
	var rtos, failbacks []time.Duration
	var notes []string
	for b.Loop() {
		var stopAt time.Time
		cl.quiesce(func() {
			stopAt = time.Now()
			for _, n := range tp.onprem {
				n.signal(b, syscall.SIGSTOP)
			}
		})
		rtos = append(rtos, cl.waitFirst(b, stopAt, foIn("cloud-1"), 2*foBenchCut, "cloud-1 after SIGSTOP"))
		time.Sleep(time.Until(stopAt.Add(foBenchCut)))
		contAt := time.Now()
		for _, n := range tp.onprem {
			n.signal(b, syscall.SIGCONT)
		}
		failbacks = append(failbacks, cl.waitFirst(b, contAt, foSiteOnprem, 30*time.Second, "onprem after SIGCONT"))
		if fb := failbacks[len(failbacks)-1]; fb > 4*time.Second {
			notes = append(notes, fmt.Sprintf("SIGSTOP %d: recovery %s failback %s", len(rtos), rtos[len(rtos)-1].Round(time.Millisecond), fb.Round(time.Millisecond)))
		}
		tp.waitUp(b, 30*time.Second)
	}
	b.StopTimer()
	cl.Stop()
	foReport(b, rtos, failbacks, len(cl.failures()), nil, notes)
	if f := cl.failures(); len(f) > 0 {
		b.Logf("first failed client connection: %+v", f[0])
	}
}
