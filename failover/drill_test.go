package failover

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
	"time"
)

var testClusterKey = []byte("0123456789abcdef0123456789abcdef")

func testOrder() DrillOrder {
	return DrillOrder{
		ID:       [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		Site:     "onprem",
		Duration: 20 * time.Second,
		Issued:   t0,
		Origin:   "cloud-1",
	}
}

// resealed computes the MAC of body independently of drill.go.
func resealed(body, clusterKey []byte) []byte {
	k := hmac.New(sha256.New, clusterKey)
	k.Write([]byte("meshd drill order v1"))
	m := hmac.New(sha256.New, k.Sum(nil))
	m.Write(body)
	return append(bytes.Clone(body), m.Sum(nil)...)
}

func TestDrillOrderLayout(t *testing.T) {
	b, err := testOrder().Seal(testClusterKey)
	if err != nil {
		t.Fatal(err)
	}
	body := "01" + "00" + "0102030405060708090a0b0c0d0e0f10" +
		fmt.Sprintf("%016x", t0.UnixMilli()) + fmt.Sprintf("%016x", 20000) +
		"06" + hex.EncodeToString([]byte("onprem")) + "07" + hex.EncodeToString([]byte("cloud-1"))
	raw, _ := hex.DecodeString(body)
	if want := resealed(raw, testClusterKey); !bytes.Equal(b, want) {
		t.Fatalf("Seal =\n%x\nwant\n%x", b, want)
	}
}

func TestDrillOrderRoundTrip(t *testing.T) {
	long := string(bytes.Repeat([]byte("x"), 255))
	tests := []struct {
		name string
		edit func(*DrillOrder)
	}{
		{"plain", func(*DrillOrder) {}},
		{"cancel", func(o *DrillOrder) { o.Cancel, o.Duration = true, 0 }},
		{"no origin", func(o *DrillOrder) { o.Origin = "" }},
		{"longest names", func(o *DrillOrder) { o.Site, o.Origin = long, long }},
		{"duration beyond the cap travels as is", func(o *DrillOrder) { o.Duration = time.Hour }},
		{"issued 5 min ahead", func(o *DrillOrder) { o.Issued = t0.Add(DrillClockWindow) }},
		{"issued 5 min behind", func(o *DrillOrder) { o.Issued = t0.Add(-DrillClockWindow) }},
		{"random id", func(o *DrillOrder) { o.ID = NewDrillID() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := testOrder()
			tt.edit(&o)
			b, err := o.Seal(testClusterKey)
			if err != nil {
				t.Fatal(err)
			}
			got, err := OpenDrillOrder(b, testClusterKey, t0)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Issued.Equal(o.Issued) || got.Issued.Location() != time.UTC {
				t.Errorf("Issued %v, want %v in UTC", got.Issued, o.Issued)
			}
			got.Issued = o.Issued
			if got != o {
				t.Errorf("got %+v\nwant %+v", got, o)
			}
		})
	}
}

func TestDrillOrderTruncatesToMilliseconds(t *testing.T) {
	o := testOrder()
	o.Duration = 1500*time.Microsecond + time.Second
	o.Issued = t0.Add(999 * time.Microsecond)
	b, _ := o.Seal(testClusterKey)
	got, err := OpenDrillOrder(b, testClusterKey, t0)
	if err != nil || got.Duration != 1001*time.Millisecond || !got.Issued.Equal(t0) {
		t.Fatalf("got %v, %v, %v", got.Duration, got.Issued, err)
	}
}

func TestSealErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(*DrillOrder)
		key  []byte
		want error
	}{
		{"empty key", func(*DrillOrder) {}, []byte{}, ErrDrillAuth},
		{"empty site", func(o *DrillOrder) { o.Site = "" }, testClusterKey, ErrDrillMalformed},
		{"site too long", func(o *DrillOrder) { o.Site = string(make([]byte, 256)) }, testClusterKey, ErrDrillMalformed},
		{"origin too long", func(o *DrillOrder) { o.Origin = string(make([]byte, 256)) }, testClusterKey, ErrDrillMalformed},
		{"negative duration", func(o *DrillOrder) { o.Duration = -time.Second }, testClusterKey, ErrDrillMalformed},
		{"no issued time", func(o *DrillOrder) { o.Issued = time.Time{} }, testClusterKey, ErrDrillMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := testOrder()
			tt.edit(&o)
			if _, err := o.Seal(tt.key); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// body encodes a version 1 body by hand, for orders Seal would refuse.
func body(flags byte, dur int64, site, origin string, trailing ...byte) []byte {
	b := []byte{1, flags}
	id := testOrder().ID
	b = append(b, id[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(t0.UnixMilli()))
	b = binary.BigEndian.AppendUint64(b, uint64(dur))
	b = append(b, byte(len(site)))
	b = append(b, site...)
	b = append(b, byte(len(origin)))
	b = append(b, origin...)
	return append(b, trailing...)
}

// set returns b with b[i] = v.
func set(b []byte, i int, v byte) []byte {
	b = bytes.Clone(b)
	b[i] = v
	return b
}

func TestOpenDrillOrder(t *testing.T) {
	good, _ := testOrder().Seal(testClusterKey)
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 0x40
		return b
	}
	tests := []struct {
		name string
		in   []byte
		key  []byte
		now  time.Time
		want error // nil: accepted
	}{
		{name: "good", in: good},
		{name: "wrong key", in: good, key: []byte("another key"), want: ErrDrillAuth},
		{name: "empty key", in: good, key: []byte{}, want: ErrDrillAuth},
		{name: "flipped flags", in: flip(1), want: ErrDrillAuth},
		{name: "flipped id", in: flip(5), want: ErrDrillAuth},
		{name: "flipped duration", in: flip(30), want: ErrDrillAuth},
		{name: "flipped site", in: flip(36), want: ErrDrillAuth},
		{name: "flipped mac", in: flip(len(good) - 1), want: ErrDrillAuth},
		{name: "unknown version", in: flip(0), want: ErrDrillMalformed},
		{name: "version 2 validly sealed", in: resealed(append([]byte{2}, body(0, 1, "s", "")[1:]...), testClusterKey), want: ErrDrillMalformed},
		{name: "mac cut off", in: good[:len(good)-1], want: ErrDrillAuth},
		{name: "too short", in: good[:drillMinLen-1], want: ErrDrillMalformed},
		{name: "empty", in: nil, want: ErrDrillMalformed},
		{name: "over 1 KiB", in: resealed(body(0, 1, "s", "", make([]byte, 1000)...), testClusterKey), want: ErrDrillMalformed},
		{name: "exactly 1 KiB with trailing fields", in: resealed(body(0, 1, "s", "", make([]byte, 1024-32-37)...), testClusterKey)},
		{name: "unknown flags ignored", in: resealed(body(0xfe, 1, "s", ""), testClusterKey)},
		{name: "sealed empty site", in: resealed(body(0, 1, "", "o"), testClusterKey), want: ErrDrillMalformed},
		{name: "sealed site overruns", in: resealed(set(body(0, 1, "s", ""), 34, 200), testClusterKey), want: ErrDrillMalformed},
		{name: "sealed origin missing", in: resealed(body(0, 1, "siteee", "")[:41], testClusterKey), want: ErrDrillMalformed},
		{name: "sealed origin overruns", in: resealed(set(body(0, 1, "ss", ""), 37, 5), testClusterKey), want: ErrDrillMalformed},
		{name: "sealed negative duration", in: resealed(body(0, -1, "s", ""), testClusterKey), want: ErrDrillMalformed},
		{name: "sealed huge duration", in: resealed(body(0, 1<<62, "s", ""), testClusterKey), want: ErrDrillMalformed},
		{name: "issued 5 min ago", in: good, now: t0.Add(DrillClockWindow)},
		{name: "issued 5 min ahead", in: good, now: t0.Add(-DrillClockWindow)},
		{name: "replayed after the window", in: good, now: t0.Add(DrillClockWindow + time.Millisecond), want: ErrDrillStale},
		{name: "from the future", in: good, now: t0.Add(-DrillClockWindow - time.Millisecond), want: ErrDrillStale},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, now := tt.key, tt.now
			if key == nil {
				key = testClusterKey
			}
			if now.IsZero() {
				now = t0
			}
			o, err := OpenDrillOrder(tt.in, key, now)
			if !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if err != nil && o != (DrillOrder{}) {
				t.Errorf("rejected order returned %+v", o)
			}
		})
	}
}

// drillStep is one call at t0+at.
type drillStep struct {
	at     time.Duration
	op     string        // "apply", "cancel", "check" (Active only)
	id     byte          // drill ID (its first byte)
	dur    time.Duration // apply: requested duration
	until  time.Duration // apply/cancel: wanted result, offset from t0; -1: zero time
	active time.Duration // wanted Active until, offset from t0; -1: not active
}

func TestBlackholeSteps(t *testing.T) {
	const no = -1
	tests := []struct {
		name  string
		steps []drillStep
	}{
		{
			name: "expires by itself and is not restarted",
			steps: []drillStep{
				{at: 0, op: "check", active: no},
				{at: 0, op: "apply", id: 1, dur: 20 * time.Second, until: 20 * time.Second, active: 20 * time.Second},
				{at: msd(5000), op: "apply", id: 1, dur: 20 * time.Second, until: 20 * time.Second, active: 20 * time.Second}, // not extended
				{at: msd(19999), op: "check", active: 20 * time.Second},
				{at: msd(20000), op: "check", active: no},
				{at: msd(21000), op: "apply", id: 1, dur: 20 * time.Second, until: no, active: no}, // replay
			},
		},
		{
			name: "capped on the receiver's clock",
			steps: []drillStep{
				{at: msd(500), op: "apply", id: 2, dur: time.Hour, until: msd(500) + MaxDrillDuration, active: msd(500) + MaxDrillDuration},
				{at: msd(500) + MaxDrillDuration, op: "check", active: no},
			},
		},
		{
			name: "cancel ends it; the ID stays dead",
			steps: []drillStep{
				{at: 0, op: "apply", id: 3, dur: time.Minute, until: time.Minute, active: time.Minute},
				{at: msd(3000), op: "cancel", id: 3, until: no, active: no},
				{at: msd(4000), op: "apply", id: 3, dur: time.Minute, until: no, active: no},
				{at: msd(4000), op: "cancel", id: 3, until: no, active: no},
			},
		},
		{
			name: "cancel overtaking its order",
			steps: []drillStep{
				{at: 0, op: "cancel", id: 4, until: no, active: no},
				{at: msd(100), op: "apply", id: 4, dur: time.Minute, until: no, active: no},
			},
		},
		{
			name: "zero duration does nothing but is remembered",
			steps: []drillStep{
				{at: 0, op: "apply", id: 5, dur: 0, until: no, active: no},
				{at: msd(100), op: "apply", id: 5, dur: time.Minute, until: no, active: no},
			},
		},
		{
			name: "overlapping drills: the latest end wins; cancelling one keeps the other",
			steps: []drillStep{
				{at: 0, op: "apply", id: 6, dur: 100 * time.Second, until: 100 * time.Second, active: 100 * time.Second},
				{at: 0, op: "apply", id: 7, dur: 50 * time.Second, until: 50 * time.Second, active: 100 * time.Second},
				{at: msd(1000), op: "cancel", id: 6, until: no, active: 50 * time.Second},
				{at: msd(50000), op: "check", active: no},
			},
		},
		{
			name: "an ID is forgotten 10 min after its end",
			steps: []drillStep{
				{at: 0, op: "apply", id: 8, dur: time.Minute, until: time.Minute, active: time.Minute},
				{at: 11*time.Minute - time.Millisecond, op: "apply", id: 8, dur: time.Minute, until: no, active: no},
				// By now OpenDrillOrder rejects a replay of the order as stale.
				{at: 11 * time.Minute, op: "apply", id: 8, dur: time.Minute, until: 12 * time.Minute, active: 12 * time.Minute},
			},
		},
	}
	off := func(d time.Duration) time.Time {
		if d == no {
			return time.Time{}
		}
		return t0.Add(d)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var bh Blackhole
			for i, s := range tt.steps {
				now := t0.Add(s.at)
				o := DrillOrder{ID: [16]byte{s.id}, Site: "onprem", Duration: s.dur, Issued: now}
				if s.op != "check" {
					o.Cancel = s.op == "cancel"
					if got := bh.Apply(o, now); !got.Equal(off(s.until)) {
						t.Fatalf("step %d (%v %s %d): until %v, want %v", i, s.at, s.op, s.id, got.Sub(t0), s.until)
					}
				}
				site, until, ok := bh.Active(now)
				if ok != (s.active != no) || !until.Equal(off(s.active)) || ok && site != "onprem" {
					t.Fatalf("step %d (%v %s %d): Active = %q, %v, %v; want %v", i, s.at, s.op, s.id, site, until.Sub(t0), ok, s.active)
				}
			}
		})
	}
}

func TestBlackholeBounded(t *testing.T) {
	var bh Blackhole
	now := t0
	// A long drill first: it must survive the eviction of ended ones.
	bh.Apply(DrillOrder{ID: [16]byte{0xff}, Site: "onprem", Duration: MaxDrillDuration}, now)
	for i := range 3000 {
		now = now.Add(time.Millisecond)
		var id [16]byte
		binary.BigEndian.PutUint32(id[:], uint32(i))
		bh.Apply(DrillOrder{ID: id, Site: "onprem", Cancel: i%2 == 0, Duration: time.Millisecond}, now)
		if len(bh.seen) > maxDrillSeen {
			t.Fatalf("after %d orders %d IDs remembered", i+1, len(bh.seen))
		}
	}
	if _, until, ok := bh.Active(now); !ok || !until.Equal(t0.Add(MaxDrillDuration)) {
		t.Fatalf("long drill lost: %v %v", until, ok)
	}
	if len(bh.active) > 2 { // the long drill and the last short one
		t.Errorf("%d active entries, want <= 2", len(bh.active))
	}
}

func TestNewDrillID(t *testing.T) {
	a, b := NewDrillID(), NewDrillID()
	if a == b || a == ([16]byte{}) {
		t.Fatalf("IDs %x, %x", a, b)
	}
}

// fuzzNow is the receiver clock of FuzzOpenDrillOrder; the seed corpus
// holds orders issued at t0.
var fuzzNow = t0.Add(time.Minute)

func FuzzOpenDrillOrder(f *testing.F) {
	for _, o := range []DrillOrder{testOrder(), {Site: "s", Issued: t0, Cancel: true}} {
		b, err := o.Seal(testClusterKey)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(resealed(body(0x81, 5, "cloud", "n", 9, 9, 9), testClusterKey))
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := OpenDrillOrder(b, testClusterKey, fuzzNow)
		if err == nil {
			// Accepted: the MAC must be the real one.
			if len(b) < drillMACLen || !bytes.Equal(b, resealed(b[:len(b)-drillMACLen], testClusterKey)) {
				t.Fatalf("accepted %x without a valid MAC", b)
			}
			if _, err := OpenDrillOrder(b, []byte("other key"), fuzzNow); !errors.Is(err, ErrDrillAuth) {
				t.Fatalf("accepted under another key: %v", err)
			}
		} else if !errors.Is(err, ErrDrillAuth) && !errors.Is(err, ErrDrillMalformed) && !errors.Is(err, ErrDrillStale) {
			t.Fatalf("unexpected error %v", err)
		}
		// Reach the parser: give the input a valid MAC.
		if len(b) < drillMACLen {
			return
		}
		sealed := resealed(b[:len(b)-drillMACLen], testClusterKey)
		o, err = OpenDrillOrder(sealed, testClusterKey, fuzzNow)
		if err != nil {
			if errors.Is(err, ErrDrillAuth) {
				t.Fatalf("validly sealed input rejected as not authentic: %v", err)
			}
			return
		}
		again, err := o.Seal(testClusterKey)
		if err != nil {
			t.Fatalf("accepted order %+v does not seal: %v", o, err)
		}
		o2, err := OpenDrillOrder(again, testClusterKey, fuzzNow)
		if err != nil || o2 != o {
			t.Fatalf("round trip: %+v, %v; want %+v", o2, err, o)
		}
	})
}
