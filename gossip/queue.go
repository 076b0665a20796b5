package gossip

import "github.com/hashicorp/memberlist"

// broadcastQueue is memberlist's TransmitLimitedQueue with a workaround for
// its lost-broadcast bug (hashicorp/memberlist#263, open in v0.7.0): the
// queue resets its id generator to 0 whenever its tree becomes empty, even
// while an item just taken out is about to be put back (GetBroadcasts
// re-inserting it one transmit tier up) or a new item has already drawn
// its id (a named broadcast invalidating the only queued one). Ids are then
// reused, and two broadcasts of the same tier and length with the same id
// are equal to the tree: the later one silently replaces the earlier one,
// which is never sent. Records of nodes with names of equal length have
// equal lengths, so in a three-node mesh a renewed record was lost about
// one run in six and reached the others only by the next push/pull, 10 s
// later (e2e TestRotation).
//
// The workaround keeps one pin in the queue for its whole life: it is
// never handed out (bigger than any UDP packet, so GetBroadcasts never
// visits it), never invalidated (its name is no record's), so the tree is
// never empty and ids are never reused.
type broadcastQueue struct {
	memberlist.TransmitLimitedQueue
}

// queuePinName is the pin's broadcast name; record broadcasts are named
// "catalog/NODE".
const queuePinName = "meshd/queue-pin"

// queuePin is bigger than memberlist.DefaultLANConfig's UDPBufferSize
// (1400), the largest limit GetBroadcasts is ever called with.
var queuePin = &broadcast{name: queuePinName, msg: make([]byte, 4096)}

func newBroadcastQueue(numNodes func() int, retransmitMult int) *broadcastQueue {
	q := &broadcastQueue{memberlist.TransmitLimitedQueue{NumNodes: numNodes, RetransmitMult: retransmitMult}}
	q.QueueBroadcast(queuePin)
	return q
}

// NumQueued returns the number of queued broadcasts, not counting the pin.
func (q *broadcastQueue) NumQueued() int { return q.TransmitLimitedQueue.NumQueued() - 1 }
