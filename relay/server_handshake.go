package relay

import (
	"crypto/hmac"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/meshd/meshd/internal/key"
)

// The server side of the relay handshake: hello, the client's cluster-key MAC
// and owner proof, serverOK, and the log line of a failed handshake.

// errBadMAC marks a handshake that failed on the mac.
var errBadMAC = errors.New("bad mac")

// handshake runs the server side of the handshake up to the mac check,
// under one deadline, and sets sc.key.
func (s *Server) handshake(sc *sconn) error {
	sc.conn.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	hello := serverHello{version: ProtocolVersion}
	prove := s.cfg.PrivateKey != key.PrivateKey{}
	if prove {
		hello.server = s.cfg.PrivateKey.Public()
	}
	if _, err := io.ReadFull(s.rand, hello.nonce[:]); err != nil {
		return fmt.Errorf("nonce: %w", err)
	}
	writeFrame(sc.bw, frameServerHello, hello.marshal())
	if err := sc.bw.Flush(); err != nil {
		return err
	}
	var buf [maxHandshakeFrame]byte
	t, p, err := readFrame(sc.br, buf[:])
	if err != nil {
		return err
	}
	if t != frameClientAuth {
		return fmt.Errorf("%w: got %s, want clientAuth", ErrProtocol, t)
	}
	a, err := parseClientAuth(p)
	if err != nil {
		return err
	}
	if a.version != ProtocolVersion {
		return fmt.Errorf("%w: client speaks %d, server %d", ErrVersion, a.version, ProtocolVersion)
	}
	sc.key = a.pub
	ok := false
	for _, k := range *s.authKeys.Load() {
		ok = ok || a.verify(k, &hello.nonce)
	}
	if !ok {
		return errBadMAC
	}
	if prove {
		d := sharedKey(s.cfg.PrivateKey, a.pub)
		if !a.hasProof || d == nil {
			return errNoOwnerProof
		}
		want := proofMAC(d, ownerLabel, &hello.nonce, a.pub)
		if !hmac.Equal(want[:], a.owner[:]) {
			return errNoOwnerProof
		}
		sc.serverProof = proofMAC(d, serverLabel, &a.nonce, hello.server)
		sc.proved = true
	}
	return nil
}

// errNoOwnerProof: the client did not prove it holds the private key of
// the public key it registers.
var errNoOwnerProof = errors.New("relay: client did not prove it owns its WireGuard key")

// SetClusterKeys replaces the cluster keys clients may authenticate with
// (rotation); clients already connected stay. Invalid keys are skipped.
func (s *Server) SetClusterKeys(keys [][]byte) {
	var ak [][]byte
	for _, k := range keys {
		if ValidateClusterKey(k) == nil {
			ak = append(ak, authKey(k))
		}
	}
	if len(ak) > 0 {
		s.authKeys.Store(&ak)
	}
}

// finishHandshake sends serverOK and lifts the handshake deadline.
func (s *Server) finishHandshake(sc *sconn) error {
	var proof []byte
	if sc.proved {
		proof = sc.serverProof[:]
	}
	writeFrame(sc.bw, frameServerOK, proof)
	if err := sc.bw.Flush(); err != nil {
		return err
	}
	// The client holds serverOK now: it is accepted. A connection closed
	// meanwhile (replaced by a newer one with its key) fails here; its
	// read loop then ends at once and logs the reason it was closed for.
	sc.conn.SetDeadline(time.Time{})
	return nil
}

func (s *Server) logHandshakeFailure(sc *sconn, err error) {
	switch {
	case errors.Is(err, errBadMAC):
		s.authFailures.Add(1)
		s.unauthWarn("relay: client "+sc.remote+" failed authentication (wrong cluster key?)",
			"remote", sc.remote, "key", sc.key.ShortString())
	case errors.Is(err, net.ErrClosed) && s.isClosed():
		// Shutting down: not worth a line.
	default:
		if isTimeout(err) {
			err = fmt.Errorf("handshake timeout (%v)", s.cfg.HandshakeTimeout)
		}
		if errors.Is(sc.reason, errEvicted) {
			err = errEvicted
		}
		s.unauthLine(slog.LevelInfo, "relay: handshake failed", "remote", sc.remote, "err", err)
	}
}
