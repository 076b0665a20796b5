package gossip

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"github.com/hashicorp/memberlist"
)

// queueLike is what Gossip uses of its broadcast queue.
type queueLike interface {
	QueueBroadcast(memberlist.Broadcast)
	GetBroadcasts(overhead, limit int) [][]byte
	NumQueued() int
}

// TestBroadcastQueueLosesNothing replays the steps that lost a-1's renewed
// record in e2e TestRotation (hashicorp/memberlist#263): the queue holds
// one broadcast of a-1's record that has gone out once; a-1 queues its
// next record (same name: the old one is invalidated, the tree is empty for
// a moment); b-1's record of the same length arrives and is queued for
// rebroadcast. Every queued record must then go out, from memberlist's
// queue (patched: third_party/memberlist) and from broadcastQueue.
func TestBroadcastQueueLosesNothing(t *testing.T) {
	rec := func(name string, v int) *broadcast {
		return &broadcast{name: "catalog/" + name, msg: []byte(fmt.Sprintf("record %s v%d", name, v))}
	}
	run := func(q queueLike) (sent [][]byte, queued int) {
		q.QueueBroadcast(rec("a-1", 1))
		if got := q.GetBroadcasts(2, 1400); len(got) != 1 {
			t.Fatalf("first gossip: %d broadcasts", len(got))
		}
		q.QueueBroadcast(rec("a-1", 2)) // renewed certificate
		q.QueueBroadcast(rec("b-1", 2)) // b-1's, received and passed on
		queued = q.NumQueued()
		for range 10 {
			sent = append(sent, q.GetBroadcasts(2, 1400)...)
		}
		return sent, queued
	}
	has := func(sent [][]byte, want string) bool {
		return slices.ContainsFunc(sent, func(b []byte) bool { return bytes.Equal(b, []byte(want)) })
	}
	three := func() int { return 3 }

	// memberlist's own queue, which carries its alive, suspect and dead
	// messages (refutations among them): upstream v0.7.0 loses a-1's record
	// here; the patched copy in third_party/memberlist must not.
	control, _ := run(&memberlist.TransmitLimitedQueue{NumNodes: three, RetransmitMult: 4})
	for _, want := range []string{"record a-1 v2", "record b-1 v2"} {
		if !has(control, want) {
			t.Errorf("memberlist's queue lost %q (third_party/memberlist's queue.go patch missing?); sent %q", want, control)
		}
	}
	q := newBroadcastQueue(three, 4)
	sent, queued := run(q)
	if queued != 2 {
		t.Errorf("%d broadcasts queued after the two records, want 2", queued)
	}
	for _, want := range []string{"record a-1 v2", "record b-1 v2"} {
		if !has(sent, want) {
			t.Errorf("%q never handed out; sent %q", want, sent)
		}
	}
	if slices.ContainsFunc(sent, func(b []byte) bool { return len(b) == len(queuePin.msg) }) {
		t.Errorf("the pin was handed out")
	}
	if n := q.NumQueued(); n != 0 {
		t.Errorf("NumQueued = %d after every broadcast went out, want 0", n)
	}
}
