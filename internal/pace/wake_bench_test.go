package pace

import (
	"syscall"
	"testing"
	"time"
)

// BenchmarkIdleWakeups measures what pacing saves: the CPU (user + system,
// from getrusage, in µs per second of wall time) of an otherwise idle
// process with a 5 Hz tick (the beat: memberlist's gossip tick in a node)
// and two more goroutines that each wake every 400 ms, on their own timers
// at other instants (timers) or paced on the tick (paced), against the tick
// alone (beat). Compare the rows of one run:
//
//	go test -run XXX -bench IdleWakeups -benchtime 1x ./internal/pace
func BenchmarkIdleWakeups(b *testing.B) {
	const every, span = 200 * time.Millisecond, 3 * time.Second
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	// run runs the beat and n waiters (made by wait) until span is over.
	run := func(b *testing.B, n int, paced bool) {
		for range b.N {
			time.Sleep(100 * time.Millisecond)
			c0, t0 := cpu(), time.Now()
			stop := make(chan struct{})
			done := make(chan struct{}, n)
			p := New(every, 2*every)
			for i := range n {
				go func() {
					defer func() { done <- struct{}{} }()
					var t *Timer
					if paced {
						t = p.NewTimer(2 * every)
					} else {
						t = (*Pacer)(nil).NewTimer(2*every + time.Duration(i+1)*every/3)
					}
					defer t.Stop()
					for {
						select {
						case <-stop:
							return
						case <-t.C:
							t.Reset(2 * every)
						}
					}
				}()
			}
			beats := time.NewTicker(every)
			for end := time.After(span); ; {
				select {
				case now := <-beats.C:
					p.Beat(now)
					continue
				case <-end:
				}
				break
			}
			beats.Stop()
			close(stop)
			for range n {
				<-done
			}
			b.ReportMetric(float64((cpu()-c0).Microseconds())/time.Since(t0).Seconds(), "cpu-µs/s")
		}
	}
	b.Run("beat", func(b *testing.B) { run(b, 0, false) })
	b.Run("beat+2timers", func(b *testing.B) { run(b, 2, false) })
	b.Run("beat+2paced", func(b *testing.B) { run(b, 2, true) })
}
