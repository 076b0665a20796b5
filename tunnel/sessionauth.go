package tunnel

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/curve25519"

	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/tunnel/internal/framing"
)

// Session authentication (README "Security model"). Before a node serves
// a stream on a session connection, or uses a byte its peer sent on one,
// the peer has proven that it holds the WireGuard private key this node
// expects: the source mesh address alone proves nothing in kernel mode,
// where any local process can dial a peer's session port from the node's
// mesh address. Both proofs are MACs keyed with D = X25519(own private
// key, the peer's public key), the static Diffie-Hellman of the two
// WireGuard keys, which only the holders of either private key can
// compute (cached per peer: PathBind.sharedSecret).
//
// MSA2, one-way (what a dialer sends first). The dialer writes, without
// waiting for anything,
//
//	hello2 = "MSA2" | nonce [32] | ts [8] | HMAC-SHA256(D, "meshd session v2" | 'd' | dialer key | acceptor key | nonce | ts)
//
// where ts is the dialer's wall clock (unix nanoseconds, big-endian; per
// peer strictly greater than the last one it sent), and starts yamux at
// once: the hello leaves with the first stream's frames (framing.Hold).
// Freshness is WireGuard's rule for its initiation's TAI64N timestamp:
// the acceptor takes a hello only if its ts is greater than the greatest
// it took from that dialer, and within helloWindow of its own clock
// (helloStamps). A restart, or a peer made anew, forgets the greatest
// stamp: the floor then starts helloFloorSlack before the peer was made,
// so a hello stamped before that (recorded, say, before the restart) is
// refused, and the window bounds what a dialer's fast clock could stamp
// ahead. Nothing from the network moves the floor: it is one int64 per
// peer, updated only by hellos whose MAC holds. The acceptor answers
//
//	answer = "MSA2" | HMAC-SHA256(D, "meshd session v2" | 'a' | dialer key | acceptor key | nonce | ts)
//
// and runs yamux at once (the answer leaves with its first frames). The
// dialer's yamux reads through a provenConn: its first Read reads exactly
// the answer and checks it before yamux sees a byte; a bad or missing
// answer fails that Read, which closes the session and its streams. The
// MAC input names both keys in the dialer's order, so a hello reflected
// back at its sender is not the peer's. So neither side uses a byte the
// other has not proven; the dialer does send its first stream's frames
// before the acceptor has proven its key. Those reach only the key's
// holder: the connection goes to the peer's mesh address, which
// WireGuard's cryptokey routing encrypts to that peer's public key alone,
// and on the peer's host only the meshd process that owns the device
// holds the session port (its netstack's, or in kernel mode the port on
// the mesh address, bound before any peer is added and held until the
// device is gone). What the acceptor's proof adds on top is what it adds
// in MSA1: that the dialer uses nothing an impostor on the peer's host
// could send, and that is kept.
//
// MSA1, interactive (older nodes, and the fallback). Each side sends
//
//	hello = "MSA1" | nonce [32]
//
// and then
//
//	mac = HMAC-SHA256(D, "meshd session v1" | role | dialer nonce | acceptor nonce)
//
// where role is 'd' for the dialer's and 'a' for the acceptor's: the
// dialer can start yamux only after the acceptor's hello (a round trip
// after connecting), the acceptor serves streams only after the dialer's
// mac (one and a half): a round trip more than MSA2 on every new session.
//
// Fallback. An acceptor that refuses an MSA2 hello's ts (clock skew
// beyond the window, a dialer clock stepped back across a restart)
// answers "MSA2" | HMAC(..., 'r', ...) instead and closes; one of an
// earlier version answers with its MSA1 hello (it speaks first) and
// closes. Either way, or on any other failed answer, the dialer uses MSA1
// with that peer for msa1Hold and redials at once; a stream that went out
// on the failed session is opened again on the new one (DialStream): the
// acceptor never served it. The acceptor tells the two apart by the
// magic and keeps accepting MSA1. A side that gets no valid proof within
// sessionAuthTimeout closes the connection.
const (
	sessionAuthMagic   = "MSA1"
	sessionAuthLabel   = "meshd session v1"
	session2Magic      = "MSA2"
	session2Label      = "meshd session v2"
	sessionAuthTimeout = 5 * time.Second
	sessionNonceLen    = 32
	// hello2Len and answer2Len: MSA2's hello and answer (an MSA1 hello,
	// what an older acceptor sends instead, is as long as the answer).
	hello2Len  = len(session2Magic) + sessionNonceLen + 8 + sha256.Size
	answer2Len = len(session2Magic) + sha256.Size
	// helloWindow: how far an MSA2 hello's ts may be from the acceptor's
	// clock. helloFloorSlack: how long before a peer was made (a restart)
	// its hellos may be stamped.
	helloWindow     = 2 * time.Minute
	helloFloorSlack = time.Second
	// msa1Hold: how long a dialer uses MSA1 with a peer after an MSA2
	// hello to it failed.
	msa1Hold = 5 * time.Minute
	// maxPendingAccepts bounds the session handshakes in progress per peer.
	maxPendingAccepts = 4
)

var (
	errSessionAuth = errors.New("tunnel: session peer did not prove its key")
	// errHelloStale: an MSA2 hello whose MAC holds but whose ts the
	// acceptor refused; it told the dialer so.
	errHelloStale = errors.New("tunnel: session hello stamp refused (stale or skewed clock); told the peer to use MSA1")
	// errPeerMSA1: the acceptor answered an MSA2 hello with an MSA1 hello.
	errPeerMSA1 = errors.New("tunnel: peer speaks only MSA1")
	// errHelloRefused: the acceptor refused the hello's stamp.
	errHelloRefused = errors.New("tunnel: peer refused the session hello's stamp (clock skew?)")
)

// helloStamps is an acceptor's freshness state for one dialer: the
// greatest MSA2 stamp taken (or the floor a new peer starts at).
type helloStamps struct{ max atomic.Int64 }

// newHelloStamps starts the state of a peer made at now.
func newHelloStamps(now time.Time) *helloStamps {
	h := &helloStamps{}
	h.max.Store(now.Add(-helloFloorSlack).UnixNano())
	return h
}

// take reports whether a hello stamped ts may be taken at now: greater
// than every stamp taken before and within helloWindow of now. A taken
// stamp becomes the new greatest.
func (h *helloStamps) take(ts int64, now time.Time) bool {
	n := now.UnixNano()
	if ts < n-int64(helloWindow) || ts > n+int64(helloWindow) {
		return false
	}
	for {
		last := h.max.Load()
		if ts <= last {
			return false
		}
		if h.max.CompareAndSwap(last, ts) {
			return true
		}
	}
}

// helloClock is the wall clock MSA2 stamps are made and checked with;
// tests skew it per tunnel (helloSkew).
func (t *Tunnel) helloClock() time.Time {
	return time.Now().Add(time.Duration(t.helloSkew.Load()))
}

// nextStamp is the ts of the peer's next MSA2 hello: the clock, or one
// more than the last if the clock stepped back.
func (p *peer) nextStamp(now time.Time) int64 {
	for {
		last, ts := p.stampSent.Load(), now.UnixNano()
		ts = max(ts, last+1)
		if p.stampSent.CompareAndSwap(last, ts) {
			return ts
		}
	}
}

// optimistic tells whether the next dial to the peer sends MSA2.
func (p *peer) optimistic(now time.Time) bool { return now.UnixNano() >= p.msa1Until.Load() }

// sessionSecret is D for peer: the bind's cached one, or computed.
func (t *Tunnel) sessionSecret(peer key.PublicKey) ([]byte, error) {
	if t.bind != nil {
		if d := t.bind.sharedSecret(peer); d != nil {
			return d, nil
		}
	}
	d, err := curve25519.X25519(t.cfg.PrivateKey[:], peer[:])
	if err != nil {
		return nil, fmt.Errorf("tunnel: session key: %w", err)
	}
	return d, nil
}

// withAuthDeadline runs f with c's deadline at sessionAuthTimeout, cut
// short when ctx ends, and clears it after a success.
func withAuthDeadline(ctx context.Context, c net.Conn, f func() error) error {
	c.SetDeadline(time.Now().Add(sessionAuthTimeout))
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := f(); err != nil {
		return err
	}
	if !stop() {
		return ctx.Err()
	}
	return c.SetDeadline(time.Time{})
}

// authSession runs MSA1 on c with peer; dialer tells the role. It reads
// exactly the handshake's bytes, so the caller may use c after.
func (t *Tunnel) authSession(ctx context.Context, c net.Conn, peer key.PublicKey, dialer bool) error {
	return withAuthDeadline(ctx, c, func() error { return t.msa1(c, peer, dialer, false) })
}

// msa1 runs MSA1 on c; magicRead: the acceptor has read the dialer's
// magic already. The hello goes out first: D is computed (if not cached)
// while the peer's is on its way.
func (t *Tunnel) msa1(c net.Conn, peer key.PublicKey, dialer, magicRead bool) error {
	var mine, theirs [sessionNonceLen]byte
	if _, err := rand.Read(mine[:]); err != nil {
		return fmt.Errorf("tunnel: session nonce: %w", err)
	}
	if _, err := c.Write(append([]byte(sessionAuthMagic), mine[:]...)); err != nil {
		return fmt.Errorf("tunnel: session hello: %w", err)
	}
	d, err := t.sessionSecret(peer)
	if err != nil {
		return err
	}
	if magicRead {
		if _, err := io.ReadFull(c, theirs[:]); err != nil {
			return fmt.Errorf("tunnel: session hello: %w", err)
		}
	} else {
		var hello [len(sessionAuthMagic) + sessionNonceLen]byte
		if _, err := io.ReadFull(c, hello[:]); err != nil {
			return fmt.Errorf("tunnel: session hello: %w", err)
		}
		if string(hello[:len(sessionAuthMagic)]) != sessionAuthMagic {
			return fmt.Errorf("%w: not a session hello", errSessionAuth)
		}
		copy(theirs[:], hello[len(sessionAuthMagic):])
	}
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
	return nil
}

func sessionMAC(d []byte, role byte, dn, an *[sessionNonceLen]byte) []byte {
	m := hmac.New(sha256.New, d)
	m.Write([]byte(sessionAuthLabel))
	m.Write([]byte{role})
	m.Write(dn[:])
	m.Write(an[:])
	return m.Sum(nil)
}

// session2MAC is MSA2's MAC of role ('d' hello, 'a' answer, 'r' refusal)
// for a session dialled by dialer to acceptor.
func session2MAC(d []byte, role byte, dialer, acceptor key.PublicKey, nonce *[sessionNonceLen]byte, ts int64) []byte {
	m := hmac.New(sha256.New, d)
	m.Write([]byte(session2Label))
	m.Write([]byte{role})
	m.Write(dialer[:])
	m.Write(acceptor[:])
	m.Write(nonce[:])
	m.Write(binary.BigEndian.AppendUint64(nil, uint64(ts)))
	return m.Sum(nil)
}

// hello2 builds an MSA2 hello.
func hello2(d []byte, dialer, acceptor key.PublicKey, nonce *[sessionNonceLen]byte, ts int64) []byte {
	b := make([]byte, 0, hello2Len)
	b = append(b, session2Magic...)
	b = append(b, nonce[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(ts))
	return append(b, session2MAC(d, 'd', dialer, acceptor, nonce, ts)...)
}

// acceptAuth authenticates a session connection p dialled, by MSA1 or
// MSA2 as its hello says. After MSA2 it returns the answer, for the
// caller to send ahead of yamux's first frames (framing.Hold); after MSA1
// everything has been sent. errHelloStale: the refusal has been sent.
func (t *Tunnel) acceptAuth(ctx context.Context, c net.Conn, p *peer) ([]byte, error) {
	var answer []byte
	err := withAuthDeadline(ctx, c, func() error {
		var magic [len(sessionAuthMagic)]byte
		if _, err := io.ReadFull(c, magic[:]); err != nil {
			return fmt.Errorf("tunnel: session hello: %w", err)
		}
		switch string(magic[:]) {
		case sessionAuthMagic:
			return t.msa1(c, p.pub, false, true)
		case session2Magic:
			var err error
			answer, err = t.accept2(c, p)
			return err
		}
		return fmt.Errorf("%w: not a session hello", errSessionAuth)
	})
	return answer, err
}

// accept2 reads the rest of an MSA2 hello (its magic read) and checks
// its MAC, then its stamp.
func (t *Tunnel) accept2(c net.Conn, p *peer) ([]byte, error) {
	var rest [hello2Len - len(session2Magic)]byte
	if _, err := io.ReadFull(c, rest[:]); err != nil {
		return nil, fmt.Errorf("tunnel: session hello: %w", err)
	}
	d, err := t.sessionSecret(p.pub)
	if err != nil {
		return nil, err
	}
	var nonce [sessionNonceLen]byte
	copy(nonce[:], rest[:sessionNonceLen])
	ts := int64(binary.BigEndian.Uint64(rest[sessionNonceLen:]))
	if !hmac.Equal(rest[sessionNonceLen+8:], session2MAC(d, 'd', p.pub, t.pub, &nonce, ts)) {
		return nil, errSessionAuth
	}
	role := byte('a')
	if !p.stamps.take(ts, t.helloClock()) {
		role = 'r'
	}
	answer := append([]byte(session2Magic), session2MAC(d, role, p.pub, t.pub, &nonce, ts)...)
	if role == 'r' {
		if _, err := c.Write(answer); err != nil {
			return nil, fmt.Errorf("tunnel: session refusal: %w", err)
		}
		return nil, errHelloStale
	}
	return answer, nil
}

// closeAfterRefusal closes a connection whose hello was refused once the
// dialer has read the refusal: closing it with the dialer's first frames
// unread would reset it, and the reset could overtake the refusal.
func closeAfterRefusal(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	io.Copy(io.Discard, io.LimitReader(c, 1<<20))
	c.Close()
}

// answerErrPrefix starts the errors of a failed MSA2 answer (which yamux
// logs as it closes the session: logged at debug, proofChecked says it).
const answerErrPrefix = "tunnel: session answer"

// provenConn is the connection a dialer's yamux runs on after an MSA2
// hello: its first Read reads and checks the acceptor's answer before
// yamux gets a byte. Only yamux's receive loop reads it.
type provenConn struct {
	*framing.Conn
	want, refused []byte      // the answer's MAC and the refusal's
	onCheck       func(error) // told the check's outcome, before done closes

	read bool          // receive loop only: the answer was read
	err  error         // set before done closes
	done chan struct{} // closed once the answer was checked (or could not be)
}

// dial2 sends the MSA2 hello on c (held to leave with yamux's first
// frames) and returns the connection for the dialer's yamux.
func (t *Tunnel) dial2(c net.Conn, p *peer, onCheck func(error)) (*provenConn, error) {
	d, err := t.sessionSecret(p.pub)
	if err != nil {
		return nil, err
	}
	var nonce [sessionNonceLen]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("tunnel: session nonce: %w", err)
	}
	ts := p.nextStamp(t.helloClock())
	c.SetReadDeadline(time.Now().Add(sessionAuthTimeout))
	f := framing.NewConn(c)
	f.Hold(hello2(d, t.pub, p.pub, &nonce, ts))
	return &provenConn{
		Conn:    f,
		want:    session2MAC(d, 'a', t.pub, p.pub, &nonce, ts),
		refused: session2MAC(d, 'r', t.pub, p.pub, &nonce, ts),
		onCheck: onCheck,
		done:    make(chan struct{}),
	}, nil
}

func (pc *provenConn) Read(b []byte) (int, error) {
	if !pc.read {
		pc.read = true
		if err := pc.check(); err != nil {
			pc.err = fmt.Errorf("%s: %w", answerErrPrefix, err)
			pc.Conn.Close()
		}
		pc.onCheck(pc.err)
		close(pc.done)
	}
	if pc.err != nil {
		return 0, pc.err
	}
	return pc.Conn.Read(b)
}

func (pc *provenConn) check() error {
	var ans [answer2Len]byte
	if _, err := io.ReadFull(pc.Conn, ans[:]); err != nil {
		return err
	}
	switch magic := string(ans[:len(session2Magic)]); {
	case magic == sessionAuthMagic:
		return errPeerMSA1
	case magic != session2Magic:
		return fmt.Errorf("%w: not a session answer", errSessionAuth)
	case hmac.Equal(ans[len(session2Magic):], pc.want):
		return pc.Conn.SetReadDeadline(time.Time{})
	case hmac.Equal(ans[len(session2Magic):], pc.refused):
		return errHelloRefused
	}
	return errSessionAuth
}

// checked reports whether the answer was checked (and found good or not).
func (pc *provenConn) checked() bool {
	select {
	case <-pc.done:
		return true
	default:
		return false
	}
}

// wait waits until the acceptor's answer was checked, or ctx ends, and
// returns the check's error.
func (pc *provenConn) wait(ctx context.Context) error {
	select {
	case <-pc.done:
		return pc.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// failed reports whether the check failed. If it has not ended yet it
// waits for it only once sess has closed (the check then ends at once: its
// connection is closed).
func (pc *provenConn) failed(sess interface{ IsClosed() bool }) bool {
	select {
	case <-pc.done:
	default:
		if !sess.IsClosed() {
			return false
		}
		<-pc.done
	}
	return pc.err != nil
}

// sessionAuthLog rate-limits the lines about failed session handshakes
// (an unauthenticated local process can cause them): one per 10 s.
type sessionAuthLog struct{ last atomic.Int64 }

func (l *sessionAuthLog) allow(now time.Time) bool {
	prev := l.last.Load()
	return now.UnixNano()-prev >= int64(10*time.Second) && l.last.CompareAndSwap(prev, now.UnixNano())
}
