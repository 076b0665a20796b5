package gossip

import (
	"errors"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// User messages: small payloads for the node above (drill orders), sent
// reliably (memberlist's TCP path, encrypted with the cluster key) to one
// member. Envelope: wireVersion u8, kindUser u8, payload.
const (
	kindUser        = 3
	maxUserPayload  = 4 << 10
	userQueueLength = 64
)

// ErrNoMember is returned by SendTo for a name that is not an alive member.
var ErrNoMember = errors.New("gossip: no such alive member")

// SendTo sends payload to the named member over memberlist's reliable,
// encrypted channel. It blocks for the TCP exchange; don't hold locks.
func (g *Gossip) SendTo(name string, payload []byte) error {
	if len(payload) > maxUserPayload {
		return fmt.Errorf("gossip: message of %d bytes exceeds %d", len(payload), maxUserPayload)
	}
	if g.closed.Load() {
		return ErrClosed
	}
	var to *memberlist.Node
	for _, m := range g.ml.Members() {
		if m.Name == name {
			to = m
			break
		}
	}
	if to == nil {
		return fmt.Errorf("%w: %s", ErrNoMember, name)
	}
	msg := make([]byte, 0, 2+len(payload))
	msg = append(msg, wireVersion, kindUser)
	msg = append(msg, payload...)
	if err := g.ml.SendReliable(to, msg); err != nil {
		return fmt.Errorf("gossip: send to %s: %w", name, err)
	}
	return nil
}

// Messages delivers user messages sent with SendTo by other members. The
// channel is bounded: when the reader falls behind, messages are dropped.
func (g *Gossip) Messages() <-chan []byte { return g.userMsgs }

// deliverUser queues a user message; it never blocks memberlist.
func (g *Gossip) deliverUser(b []byte) {
	if len(b) < 2 || len(b)-2 > maxUserPayload {
		return
	}
	p := append([]byte(nil), b[2:]...) // b is only valid during NotifyMsg
	select {
	case g.userMsgs <- p:
	default:
		g.log.Warn("gossip: user message queue full; message dropped")
	}
}
