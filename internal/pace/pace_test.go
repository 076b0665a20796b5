package pace

import (
	"testing"
	"time"
)

// fired reports whether t fired within wait.
func fired(t *Timer, wait time.Duration) bool {
	select {
	case <-t.C:
		return true
	case <-time.After(wait):
		return false
	}
}

func TestPacedTimerFiresAtTheFirstBeatAfterItsDeadline(t *testing.T) {
	const every = 100 * time.Millisecond
	p := New(every, 2*every)
	start := time.Now()
	tm := p.NewTimer(300 * time.Millisecond)
	defer tm.Stop()
	// Beats before the deadline do not fire it, however many.
	for _, at := range []time.Duration{0, 100, 200, 250, 299} {
		p.Beat(start.Add(at * time.Millisecond))
		if fired(tm, 0) {
			t.Fatalf("fired at a beat %d ms after start, before its 300 ms deadline", at)
		}
	}
	// The first beat at or after it does.
	p.Beat(start.Add(320 * time.Millisecond))
	if !fired(tm, 10*time.Millisecond) {
		t.Fatal("did not fire at the first beat after its deadline")
	}
	// Once per arming.
	p.Beat(start.Add(450 * time.Millisecond))
	if fired(tm, 0) {
		t.Fatal("fired twice for one arming")
	}
}

func TestReArmedTimerWaitsForItsNewDeadline(t *testing.T) {
	p := New(100*time.Millisecond, 200*time.Millisecond)
	start := time.Now()
	a := p.NewTimer(200 * time.Millisecond)
	defer a.Stop()
	p.Beat(start.Add(210 * time.Millisecond))
	if !fired(a, 10*time.Millisecond) {
		t.Fatal("a did not fire")
	}
	// memberlist asks for broadcasts once per node it gossips to: a
	// second call in the same tick is a beat too, and wakes only what is due.
	a.Reset(200 * time.Millisecond)
	p.Beat(time.Now())
	if fired(a, 0) {
		t.Fatal("a re-armed timer fired at once")
	}
}

func TestBackstopWithoutBeats(t *testing.T) {
	const every = 50 * time.Millisecond
	p := New(every, 2*every)
	start := time.Now()
	tm := p.NewTimer(200 * time.Millisecond)
	defer tm.Stop()
	select {
	case at := <-tm.C:
		late := at.Sub(start) - 200*time.Millisecond
		if late < 0 {
			t.Fatalf("fired %s early", -late)
		}
		if late > 2*time.Second {
			t.Fatalf("fired %s late", late)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no beat and no backstop: never fired")
	}
}

func TestShortTimersArePlain(t *testing.T) {
	p := New(time.Hour, time.Second) // no beat, and a backstop an hour away
	start := time.Now()
	tm := p.NewTimer(20 * time.Millisecond)
	defer tm.Stop()
	if !fired(tm, time.Second) {
		t.Fatal("a timer under two beats waited for a beat")
	}
	if time.Since(start) < 20*time.Millisecond {
		t.Fatal("fired early")
	}
}

func TestNilPacerMakesPlainTimers(t *testing.T) {
	var p *Pacer
	p.Beat(time.Now()) // a no-op
	tm := p.NewTimer(30 * time.Millisecond)
	defer tm.Stop()
	if !fired(tm, time.Second) {
		t.Fatal("never fired")
	}
}

func TestStopAndResetDiscard(t *testing.T) {
	p := New(100*time.Millisecond, 200*time.Millisecond)
	start := time.Now()
	tm := p.NewTimer(200 * time.Millisecond)
	tm.Stop()
	p.Beat(start.Add(time.Second))
	if fired(tm, 0) {
		t.Fatal("a stopped timer fired")
	}
	tm.Reset(200 * time.Millisecond)
	p.Beat(start.Add(2 * time.Second))
	tm.Reset(200 * time.Millisecond) // discards the unreceived firing
	if fired(tm, 0) {
		t.Fatal("Reset kept a firing of the previous arming")
	}
	p.mu.Lock()
	n := len(p.armed)
	p.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d armed, want 1", n)
	}
	tm.Stop()
	p.mu.Lock()
	n = len(p.armed)
	p.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d armed after Stop, want 0", n)
	}
}

// TestPlainStopDiscardsARacingFiring: a plain timer's callback may be running
// when Stop is called; nothing of that arming may arrive after Stop returns.
func TestPlainStopDiscardsARacingFiring(t *testing.T) {
	var p *Pacer
	tm := p.NewTimer(time.Hour)
	for i := range 2000 {
		tm.Reset(0)
		if i%2 == 0 {
			time.Sleep(time.Microsecond) // let some callbacks start
		}
		tm.Stop()
		select {
		case <-tm.C:
			t.Fatalf("round %d: a firing of a stopped timer arrived", i)
		case <-time.After(20 * time.Microsecond):
		}
	}
}

func TestLooseTimersRideTheBeatHoweverShort(t *testing.T) {
	p := New(time.Hour, time.Second) // no beat, and a backstop an hour away
	start := time.Now()
	tm := p.NewTimer(time.Hour)
	defer tm.Stop()
	tm.ResetLoose(20 * time.Millisecond)
	if fired(tm, 100*time.Millisecond) {
		t.Fatal("a loose timer under the plain threshold fired without a beat")
	}
	p.Beat(start.Add(10 * time.Millisecond))
	if fired(tm, 0) {
		t.Fatal("a loose timer fired at a beat before its deadline")
	}
	p.Beat(time.Now())
	if !fired(tm, 10*time.Millisecond) {
		t.Fatal("a loose timer did not fire at the first beat after its deadline")
	}
	// Reset makes it plain again.
	tm.Reset(20 * time.Millisecond)
	if !fired(tm, time.Second) {
		t.Fatal("Reset under the threshold after ResetLoose did not make a plain timer")
	}
}
