// Package relay forwards opaque WireGuard packets between nodes that cannot
// reach each other directly over UDP. A relay Server accepts authenticated
// nodes over TCP and forwards packets addressed by destination WireGuard
// public key; a Client keeps one such connection and is one packet path for
// the tunnel layer. The relay only ever sees WireGuard ciphertext.
//
// The design follows Tailscale's DERP: a tiny framed protocol, one bounded
// outbound queue and one writer goroutine per client, and packets dropped
// (and counted) rather than buffered when a destination is slow.
//
// # Wire protocol, version 1 (ProtocolVersion)
//
// Everything is a frame; integers are big-endian:
//
//	frame      = type u8 | length u32 | payload [length]      length <= MaxFrame (64 KiB)
//
// A peer that announces a longer frame is disconnected. Frame types and
// payloads (trailing bytes after the fields below are ignored, so a later
// version may append fields):
//
//	0x01 serverHello  server→client  version u8 | nonce [32]
//	0x02 clientAuth   client→server  version u8 | pubkey [32] | mac [32]
//	0x03 serverOK     server→client  (empty)
//	0x04 send         client→server  dst [32] | packet
//	0x05 recv         server→client  src [32] | packet
//	0x06 ping         either way     data u64
//	0x07 pong         either way     data u64 (echoes a ping's data)
//
// Handshake: on connect the server sends serverHello with a fresh random
// nonce; the client answers clientAuth with
//
//	K   = HMAC-SHA256(clusterKey, "meshd relay key v1")
//	mac = HMAC-SHA256(K, "meshd relay v1" || nonce || pubkey)
//
// so the cluster key never crosses the wire.
//
// Key ownership (trailing fields of the frames above; README "Identity and policy"). A server
// that has its node's WireGuard private key appends its public key to
// serverHello; a client that has its private key appends a fresh client
// nonce and an owner proof to clientAuth, and the server answers serverOK
// with a server proof. With D = X25519(own private key, the other's public
// key), the static Diffie-Hellman of the two WireGuard keys, which only the
// holders of either private key can compute:
//
//	serverHello += serverPub [32]
//	clientAuth  += clientNonce [32] | owner [32]
//	serverOK     = server [32]
//	owner  = HMAC-SHA256(D, "meshd relay owner v1"  || nonce || pubkey)
//	server = HMAC-SHA256(D, "meshd relay server v1" || clientNonce || serverPub)
//
// A server with a private key refuses a client without a valid owner proof
// (so nobody can register, and displace, a key it does not hold); a client
// told which key the relay must have refuses a relay that announces another
// or cannot prove it. The server checks the mac in
// constant time, makes the client routable and then answers serverOK (so a
// client is reachable as soon as its Dial returns), or closes the
// connection, logging one WARN line. Handshake frames are at most 1 KiB and the whole handshake has
// a deadline (ServerConfig.HandshakeTimeout, 5 s).
//
// After the handshake the client sends send frames and receives recv frames;
// packets for a destination that is not connected are dropped. Either side
// answers a ping with a pong carrying the same data; the client pings every
// PingInterval to keep the connection alive and to measure RTT. Unknown frame
// types after the handshake are skipped by both sides (forward
// compatibility); during the handshake any unexpected frame closes the
// connection. A second connection authenticated with the same public key
// replaces the first, which the server closes.
package relay

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/curve25519"

	"github.com/meshd/meshd/internal/key"
)

// ProtocolVersion is the relay protocol version spoken by this package.
const ProtocolVersion = 1

const (
	// MaxFrame is the largest frame payload, in bytes.
	MaxFrame = 64 << 10
	// MaxPacket is the largest packet a Client can send (MaxFrame minus the
	// 32-byte key that precedes it).
	MaxPacket = MaxFrame - key.Len

	frameHeaderLen    = 5
	maxHandshakeFrame = 1 << 10
	nonceLen          = 32
	macLen            = sha256.Size
	helloLen          = 1 + nonceLen
	authLen           = 1 + key.Len + macLen
)

// frameType is the first byte of every frame.
type frameType byte

const (
	frameServerHello frameType = 0x01
	frameClientAuth  frameType = 0x02
	frameServerOK    frameType = 0x03
	frameSend        frameType = 0x04
	frameRecv        frameType = 0x05
	framePing        frameType = 0x06
	framePong        frameType = 0x07
)

func (t frameType) String() string {
	switch t {
	case frameServerHello:
		return "serverHello"
	case frameClientAuth:
		return "clientAuth"
	case frameServerOK:
		return "serverOK"
	case frameSend:
		return "send"
	case frameRecv:
		return "recv"
	case framePing:
		return "ping"
	case framePong:
		return "pong"
	}
	return fmt.Sprintf("frame(0x%02x)", byte(t))
}

// Errors returned by this package; match them with errors.Is.
var (
	// ErrQueueFull: Client.Send dropped the packet because the outbound
	// queue is full.
	ErrQueueFull = errors.New("relay: send queue full")
	// ErrPacketTooLarge: the packet is longer than MaxPacket.
	ErrPacketTooLarge = errors.New("relay: packet too large")
	// ErrAuthFailed: the server rejected the handshake, most likely
	// because the cluster keys differ.
	ErrAuthFailed = errors.New("relay: authentication failed (wrong cluster key?)")
	// ErrRelayIdentity: the relay is not the node the client expected (it
	// announced another WireGuard key or could not prove it holds it).
	ErrRelayIdentity = errors.New("relay: relay identity not proven")
	// ErrKeepaliveTimeout: nothing arrived from the server for three ping
	// intervals.
	ErrKeepaliveTimeout = errors.New("relay: keepalive timeout")
	// ErrFrameTooLarge: a peer announced a frame above the limit.
	ErrFrameTooLarge = errors.New("relay: frame too large")
	// ErrProtocol: a malformed or unexpected frame.
	ErrProtocol = errors.New("relay: protocol error")
	// ErrVersion: the peer speaks an unsupported protocol version.
	ErrVersion = errors.New("relay: unsupported protocol version")
	// ErrReplaced: the connection was replaced by a newer one with the same
	// public key (server side reason).
	ErrReplaced = errors.New("relay: replaced by a newer connection with the same key")
)

// ValidateClusterKey reports whether k can be used as a cluster key.
func ValidateClusterKey(k []byte) error {
	switch len(k) {
	case 16, 24, 32:
		return nil
	}
	return fmt.Errorf("relay: cluster key is %d bytes, want 16, 24 or 32", len(k))
}

// authKey derives K from the cluster key.
func authKey(clusterKey []byte) []byte {
	m := hmac.New(sha256.New, clusterKey)
	m.Write([]byte("meshd relay key v1"))
	return m.Sum(nil)
}

// authMAC computes the clientAuth mac for nonce and pub under K.
func authMAC(k []byte, nonce *[nonceLen]byte, pub key.PublicKey) [macLen]byte {
	m := hmac.New(sha256.New, k)
	m.Write([]byte("meshd relay v1"))
	m.Write(nonce[:])
	m.Write(pub[:])
	var out [macLen]byte
	m.Sum(out[:0])
	return out
}

// readFrameHeader reads a frame header and checks the length against max.
// It peeks rather than reading into an array, which would escape to the
// heap through io.ReadFull.
func readFrameHeader(br *bufio.Reader, max int) (frameType, int, error) {
	hdr, err := br.Peek(frameHeaderLen)
	if err != nil {
		if len(hdr) > 0 {
			err = unexpectedEOF(err)
		}
		return 0, 0, err
	}
	t := frameType(hdr[0])
	n := binary.BigEndian.Uint32(hdr[1:])
	br.Discard(frameHeaderLen)
	if n > uint32(max) {
		return t, 0, fmt.Errorf("%w: %s of %d bytes (max %d)", ErrFrameTooLarge, t, n, max)
	}
	return t, int(n), nil
}

// readKey reads a key without allocating.
func readKey(br *bufio.Reader) (key.PublicKey, error) {
	var k key.PublicKey
	b, err := br.Peek(key.Len)
	if err != nil {
		return k, unexpectedEOF(err)
	}
	copy(k[:], b)
	br.Discard(key.Len)
	return k, nil
}

// readFrame reads a whole frame of at most len(buf) bytes into buf.
func readFrame(br *bufio.Reader, buf []byte) (frameType, []byte, error) {
	t, n, err := readFrameHeader(br, len(buf))
	if err != nil {
		return t, nil, err
	}
	if _, err := io.ReadFull(br, buf[:n]); err != nil {
		return t, nil, unexpectedEOF(err)
	}
	return t, buf[:n], nil
}

// unexpectedEOF turns io.EOF in the middle of a frame into ErrUnexpectedEOF.
func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// writeFrameHeader writes a frame header. Like writeKeyFrame it appends to
// the writer's own buffer: a stack array passed to Write would escape.
func writeFrameHeader(bw *bufio.Writer, t frameType, n int) error {
	if bw.Available() < frameHeaderLen {
		if err := bw.Flush(); err != nil {
			return err
		}
	}
	_, err := bw.Write(appendHeader(bw.AvailableBuffer(), t, n))
	return err
}

func appendHeader(b []byte, t frameType, n int) []byte {
	return append(b, byte(t), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// writeKeyFrame writes a send or recv frame: k followed by pkt.
func writeKeyFrame(bw *bufio.Writer, t frameType, k *key.PublicKey, pkt []byte) error {
	if bw.Available() < frameHeaderLen+key.Len {
		if err := bw.Flush(); err != nil {
			return err
		}
	}
	b := appendHeader(bw.AvailableBuffer(), t, key.Len+len(pkt))
	if _, err := bw.Write(append(b, k[:]...)); err != nil {
		return err
	}
	_, err := bw.Write(pkt)
	return err
}

// writeU64Frame writes a ping or pong frame.
func writeU64Frame(bw *bufio.Writer, t frameType, v uint64) error {
	if bw.Available() < frameHeaderLen+8 {
		if err := bw.Flush(); err != nil {
			return err
		}
	}
	b := appendHeader(bw.AvailableBuffer(), t, 8)
	_, err := bw.Write(binary.BigEndian.AppendUint64(b, v))
	return err
}

// writeFrame writes a frame with an arbitrary payload (handshake frames).
func writeFrame(bw *bufio.Writer, t frameType, payload []byte) error {
	writeFrameHeader(bw, t, len(payload))
	_, err := bw.Write(payload)
	return err
}

// serverHello is the first frame of a connection.
type serverHello struct {
	version byte
	nonce   [nonceLen]byte
	server  key.PublicKey // zero: the server proves no key
}

func (h *serverHello) marshal() []byte {
	b := make([]byte, 0, helloLen+key.Len)
	b = append(b, h.version)
	b = append(b, h.nonce[:]...)
	if !h.server.IsZero() {
		b = append(b, h.server[:]...)
	}
	return b
}

func parseServerHello(p []byte) (serverHello, error) {
	var h serverHello
	if len(p) < helloLen {
		return h, fmt.Errorf("%w: serverHello of %d bytes", ErrProtocol, len(p))
	}
	h.version = p[0]
	copy(h.nonce[:], p[1:])
	if len(p) >= helloLen+key.Len {
		copy(h.server[:], p[helloLen:])
	}
	return h, nil
}

// Key ownership proofs (see the package doc).
const (
	ownerLabel  = "meshd relay owner v1"
	serverLabel = "meshd relay server v1"
)

// sharedKey is X25519(priv, pub), or nil for a low-order pub.
func sharedKey(priv key.PrivateKey, pub key.PublicKey) []byte {
	d, err := curve25519.X25519(priv[:], pub[:])
	if err != nil {
		return nil
	}
	return d
}

func proofMAC(d []byte, label string, nonce *[nonceLen]byte, pub key.PublicKey) [macLen]byte {
	m := hmac.New(sha256.New, d)
	m.Write([]byte(label))
	m.Write(nonce[:])
	m.Write(pub[:])
	var out [macLen]byte
	m.Sum(out[:0])
	return out
}

// clientAuth is the client's answer to serverHello.
type clientAuth struct {
	version  byte
	pub      key.PublicKey
	mac      [macLen]byte
	hasProof bool // the ownership fields follow
	nonce    [nonceLen]byte
	owner    [macLen]byte
}

func (a *clientAuth) marshal() []byte {
	b := make([]byte, 0, authLen+nonceLen+macLen)
	b = append(b, a.version)
	b = append(b, a.pub[:]...)
	b = append(b, a.mac[:]...)
	if a.hasProof {
		b = append(b, a.nonce[:]...)
		b = append(b, a.owner[:]...)
	}
	return b
}

func parseClientAuth(p []byte) (clientAuth, error) {
	var a clientAuth
	if len(p) < authLen {
		return a, fmt.Errorf("%w: clientAuth of %d bytes", ErrProtocol, len(p))
	}
	a.version = p[0]
	copy(a.pub[:], p[1:])
	copy(a.mac[:], p[1+key.Len:])
	if len(p) >= authLen+nonceLen+macLen {
		a.hasProof = true
		copy(a.nonce[:], p[authLen:])
		copy(a.owner[:], p[authLen+nonceLen:])
	}
	return a, nil
}

// verify reports whether a's mac is right for nonce under K, in constant time.
func (a *clientAuth) verify(k []byte, nonce *[nonceLen]byte) bool {
	want := authMAC(k, nonce, a.pub)
	return hmac.Equal(want[:], a.mac[:])
}

// parseKeyPayload splits a send or recv payload into key and packet.
func parseKeyPayload(p []byte) (key.PublicKey, []byte, error) {
	var k key.PublicKey
	if len(p) < key.Len {
		return k, nil, fmt.Errorf("%w: packet frame of %d bytes", ErrProtocol, len(p))
	}
	copy(k[:], p)
	return k, p[key.Len:], nil
}

// parseU64 decodes a ping or pong payload.
func parseU64(p []byte) (uint64, error) {
	if len(p) < 8 {
		return 0, fmt.Errorf("%w: ping/pong of %d bytes", ErrProtocol, len(p))
	}
	return binary.BigEndian.Uint64(p), nil
}
