package tunnel

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/curve25519"

	"github.com/meshd/meshd/internal/key"
)

// Session authentication (README "Identity and policy"). Before yamux runs on a session
// connection, both ends prove that they hold the WireGuard private key of
// the peer the other one expects: the source mesh address alone proves
// nothing in kernel mode, where any local process can dial a peer's session
// port from the node's mesh address. Each side sends
//
//	hello = "MSA1" | nonce [32]
//
// and then, with D = X25519(own private key, the peer's public key) — the
// static Diffie-Hellman of the two WireGuard keys, which only the holders
// of either private key can compute —
//
//	mac = HMAC-SHA256(D, "meshd session v1" | role | dialer nonce | acceptor nonce)
//
// where role is 'd' for the dialer's and 'a' for the acceptor's. A side
// that gets no valid mac within sessionAuthTimeout closes the connection.
const (
	sessionAuthMagic   = "MSA1"
	sessionAuthLabel   = "meshd session v1"
	sessionAuthTimeout = 5 * time.Second
	sessionNonceLen    = 32
	// maxPendingAccepts bounds the session handshakes in progress per peer.
	maxPendingAccepts = 4
)

var errSessionAuth = errors.New("tunnel: session peer did not prove its key")

// authSession runs the handshake on c with peer; dialer tells the role.
// It reads exactly the handshake's bytes, so the caller may use c after.
//
// The hello goes out first: D is computed while the peer's is on its way.
func (t *Tunnel) authSession(ctx context.Context, c net.Conn, peer key.PublicKey, dialer bool) error {
	c.SetDeadline(time.Now().Add(sessionAuthTimeout))
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var mine, theirs [sessionNonceLen]byte
	if _, err := rand.Read(mine[:]); err != nil {
		return fmt.Errorf("tunnel: session nonce: %w", err)
	}
	if _, err := c.Write(append([]byte(sessionAuthMagic), mine[:]...)); err != nil {
		return fmt.Errorf("tunnel: session hello: %w", err)
	}
	var d []byte
	if t.bind != nil {
		d = t.bind.sharedSecret(peer)
	}
	if d == nil {
		var err error
		if d, err = curve25519.X25519(t.cfg.PrivateKey[:], peer[:]); err != nil {
			return fmt.Errorf("tunnel: session key: %w", err)
		}
	}
	var hello [len(sessionAuthMagic) + sessionNonceLen]byte
	if _, err := io.ReadFull(c, hello[:]); err != nil {
		return fmt.Errorf("tunnel: session hello: %w", err)
	}
	if string(hello[:len(sessionAuthMagic)]) != sessionAuthMagic {
		return fmt.Errorf("%w: not a session hello", errSessionAuth)
	}
	copy(theirs[:], hello[len(sessionAuthMagic):])
	dn, an := mine, theirs
	if !dialer {
		dn, an = theirs, mine
	}
	myRole, theirRole := byte('a'), byte('d')
	if dialer {
		myRole, theirRole = 'd', 'a'
	}
	if _, err := c.Write(sessionMAC(d, myRole, &dn, &an)); err != nil {
		return fmt.Errorf("tunnel: session proof: %w", err)
	}
	got := make([]byte, sha256.Size)
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("tunnel: session proof: %w", err)
	}
	if !hmac.Equal(got, sessionMAC(d, theirRole, &dn, &an)) {
		return errSessionAuth
	}
	if !stop() {
		return ctx.Err()
	}
	return c.SetDeadline(time.Time{})
}

func sessionMAC(d []byte, role byte, dn, an *[sessionNonceLen]byte) []byte {
	m := hmac.New(sha256.New, d)
	m.Write([]byte(sessionAuthLabel))
	m.Write([]byte{role})
	m.Write(dn[:])
	m.Write(an[:])
	return m.Sum(nil)
}

// sessionAuthLog rate-limits the lines about failed session handshakes
// (an unauthenticated local process can cause them): one per 10 s.
type sessionAuthLog struct{ last atomic.Int64 }

func (l *sessionAuthLog) allow(now time.Time) bool {
	prev := l.last.Load()
	return now.UnixNano()-prev >= int64(10*time.Second) && l.last.CompareAndSwap(prev, now.UnixNano())
}
