package gossip

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/meshd/meshd/internal/key"
	"github.com/meshd/meshd/internal/wire"
)

// Export catalog wire format.
//
// Each node is authoritative for its own record (its exports plus a
// "leaving" flag), stamped with a version that only grows: it starts at the
// wall clock in nanoseconds when the node starts and is bumped on every
// change, so a restarted node's record beats the one it had before. A record
// replaces the one held for the same node only if its version is higher.
// Records travel in two kinds of envelopes:
//
//	envelope = wireVersion u8 (= 1), kind u8, body
//	kind 1 (record): body = record          — memberlist user message / broadcast
//	kind 2 (state):  body = count uvarint,  — push/pull LocalState
//	                        record × count
//
//	record   = length uvarint, then length bytes:
//	             name    str
//	             version uvarint
//	             flags   u8 (bit 0: the node is leaving the mesh)
//	             count   uvarint
//	             export × count
//	             site    str           ┐ identity (since signed records):
//	             wgkey   str (32)      │ the node's meta, which receivers
//	             tunnel  addrport      │ prefer to memberlist's unsigned one
//	             relay   addrport      │
//	             signkey str (32)      │ Ed25519 public key of the node
//	             cert    str           ┘ its certificate (empty without pki)
//	             …       (unknown bytes up to the signature are ignored)
//	             sig     64 bytes: Ed25519 by signkey over
//	                     "meshd-record-v1\x00" ‖ everything above in this record
//	export   = length uvarint, then length bytes:
//	             name    str
//	             weight  varint (zig-zag)
//	             flags   u8 (bit 0: healthy)
//	             …       (unknown trailing bytes are ignored)
//	str      = length uvarint, then that many bytes
//
// A record that is not signed, or whose signature does not verify, is
// dropped on receipt (see mergeRecords for which key must have signed it).
//
// Limits: a message is at most maxMessageBytes, a state at most
// maxStateBytes, a record holds at most maxExports exports, a node or export
// name at most maxNameLen bytes. Anything beyond a limit is rejected whole.
const (
	wireVersion = 1

	kindRecord = 1
	kindState  = 2

	flagLeaving = 1 << 0
	flagHealthy = 1 << 0

	maxMessageBytes = 64 << 10
	maxStateBytes   = 1 << 20
	maxExports      = 1024
	maxNameLen      = 255
	maxStateRecords = 4096
	maxCertBytes    = 16 << 10

	// MaxWeight is the largest export weight; remote weights are clamped
	// to 1..MaxWeight.
	MaxWeight = 1000

	// maxBroadcastBytes is the largest record sent by UDP gossip. memberlist
	// packs broadcasts into UDP packets of UDPBufferSize (1400) bytes minus
	// encryption and framing overhead; bigger records go by TCP to every
	// member (and by push/pull).
	maxBroadcastBytes = 1000
)

var errDecode = errors.New("gossip: malformed catalog message")

// record is one node's export catalog as this node knows it.
type record struct {
	name    string
	version uint64
	leaving bool
	exports []Export // never nil once decoded or set

	meta    Meta // zero in an unsigned record
	signKey ed25519.PublicKey
	cert    []byte

	signed []byte // the signed bytes (context excluded); nil if unsigned
	sig    []byte
	raw    []byte // the record's wire form as received or signed, re-sent as is
}

// sigContext separates record signatures from any other use of the key.
const sigContext = "meshd-record-v1\x00"

// signRecord fills r's identity fields and signs it with k.
func signRecord(r *record, m Meta, cert []byte, k ed25519.PrivateKey) {
	r.meta, r.cert = m, cert
	r.signKey = k.Public().(ed25519.PublicKey)
	r.raw = nil
	inner := appendInner(nil, r)
	sig := ed25519.Sign(k, append([]byte(sigContext), inner...))
	r.signed, r.sig = inner, sig
	inner = append(inner, sig...)
	r.raw = binary.AppendUvarint(make([]byte, 0, len(inner)+binary.MaxVarintLen64), uint64(len(inner)))
	r.raw = append(r.raw, inner...)
}

// verifySig reports whether r carries a valid signature by r.signKey.
func (r *record) verifySig() bool {
	return len(r.signKey) == ed25519.PublicKeySize && len(r.sig) == ed25519.SignatureSize && r.signed != nil &&
		ed25519.Verify(r.signKey, append([]byte(sigContext), r.signed...), r.sig)
}

// appendRecord appends the wire form of r to b: as received or signed if it
// was, else the unsigned fields (tests, and the size estimate).
func appendRecord(b []byte, r *record) []byte {
	if r.raw != nil {
		return append(b, r.raw...)
	}
	inner := appendInner(nil, r)
	b = binary.AppendUvarint(b, uint64(len(inner)))
	return append(b, inner...)
}

// appendInner appends the fields of r, without length prefix or signature.
// The identity fields are written only when r has a signing key.
func appendInner(inner []byte, r *record) []byte {
	inner = wire.AppendString(inner, r.name)
	inner = binary.AppendUvarint(inner, r.version)
	var flags byte
	if r.leaving {
		flags |= flagLeaving
	}
	inner = append(inner, flags)
	inner = binary.AppendUvarint(inner, uint64(len(r.exports)))
	var ex []byte
	for _, e := range r.exports {
		ex = ex[:0]
		ex = wire.AppendString(ex, e.Name)
		ex = binary.AppendVarint(ex, int64(e.Weight))
		var f byte
		if e.Healthy {
			f |= flagHealthy
		}
		ex = append(ex, f)
		inner = binary.AppendUvarint(inner, uint64(len(ex)))
		inner = append(inner, ex...)
	}
	if r.signKey == nil {
		return inner
	}
	inner = wire.AppendString(inner, r.meta.Site)
	inner = wire.AppendString(inner, string(r.meta.PublicKey[:]))
	inner = appendAddrPort(inner, r.meta.Tunnel)
	inner = appendAddrPort(inner, r.meta.Relay)
	inner = wire.AppendString(inner, string(r.signKey))
	return wire.AppendString(inner, string(r.cert))
}

// encodeRecordMsg returns the message (kind 1) carrying r.
func encodeRecordMsg(r *record) []byte {
	return appendRecord([]byte{wireVersion, kindRecord}, r)
}

// reader decodes the wire format (wire.Decoder); the first error sticks
// and every later read returns zero values.
type reader struct{ wire.Decoder }

func newReader(b []byte) reader {
	return reader{wire.Decoder{Buf: b, Malformed: errDecode}}
}

// readRecord decodes one record. name is set as soon as it is known, so that
// errors can be attributed to a sender.
func (r *reader) readRecord() (rec *record, name string) {
	start := r.Buf
	body := r.Bytes("record", maxMessageBytes)
	if r.Err != nil {
		return nil, ""
	}
	in := newReader(body)
	rec = &record{}
	rec.name = string(in.Bytes("node name", maxNameLen))
	rec.version = in.Uvarint("version")
	flags := in.Byte("flags")
	rec.leaving = flags&flagLeaving != 0
	n := in.Uvarint("export count")
	if in.Err == nil && n > maxExports {
		in.Fail("%d exports (limit %d)", n, maxExports)
	}
	if in.Err == nil && n > uint64(len(in.Buf)) {
		in.Fail("%d exports in %d bytes", n, len(in.Buf))
	}
	if in.Err == nil && rec.name == "" {
		in.Fail("empty node name")
	}
	if in.Err != nil {
		r.Err = in.Err
		return nil, rec.name
	}
	rec.exports = make([]Export, 0, n)
	for range n {
		eb := in.Bytes("export", maxMessageBytes)
		if in.Err != nil {
			break
		}
		er := newReader(eb)
		var e Export
		e.Name = string(er.Bytes("export name", maxNameLen))
		w := er.Varint("weight")
		e.Healthy = er.Byte("export flags")&flagHealthy != 0
		if er.Err == nil && (w < math.MinInt32 || w > math.MaxInt32) {
			er.Fail("weight %d out of range", w)
		}
		if er.Err != nil {
			in.Err = er.Err
			break
		}
		e.Weight = int(min(max(w, 1), MaxWeight))
		rec.exports = append(rec.exports, e)
	}
	if in.Err == nil && len(in.Buf) > 0 {
		in.readIdentity(rec, body)
	}
	if in.Err != nil {
		r.Err = in.Err
		return nil, rec.name
	}
	rec.raw = start[:len(start)-len(r.Buf)]
	return rec, rec.name
}

// readIdentity decodes the identity fields and signature that follow the
// exports of a signed record whose whole inner bytes are body.
func (in *reader) readIdentity(rec *record, body []byte) {
	if len(in.Buf) < ed25519.SignatureSize {
		in.Fail("truncated signature")
		return
	}
	sigAt := len(body) - ed25519.SignatureSize
	rec.sig = body[sigAt:]
	rec.signed = body[:sigAt]
	in.Buf = in.Buf[:len(in.Buf)-ed25519.SignatureSize]
	rec.meta.Site = string(in.Bytes("site", maxSiteLen))
	if pk := in.Bytes("wireguard key", key.Len); in.Err == nil {
		if len(pk) != key.Len {
			in.Fail("wireguard key of %d bytes", len(pk))
			return
		}
		copy(rec.meta.PublicKey[:], pk)
	}
	if in.Err != nil {
		return
	}
	var err error
	if rec.meta.Tunnel, in.Buf, err = readAddrPort(in.Buf); err == nil {
		rec.meta.Relay, in.Buf, err = readAddrPort(in.Buf)
	}
	if err != nil {
		in.Fail("address: %v", err)
		return
	}
	sk := in.Bytes("signing key", ed25519.PublicKeySize)
	if in.Err == nil && len(sk) != ed25519.PublicKeySize {
		in.Fail("signing key of %d bytes", len(sk))
	}
	rec.signKey = ed25519.PublicKey(sk)
	rec.cert = in.Bytes("certificate", maxCertBytes)
	if in.Err == nil && len(rec.cert) == 0 {
		rec.cert = nil
	}
	in.Buf = nil // unknown fields up to the signature are ignored
}

// decodeEnvelope checks the size, version and kind of a message or state.
func decodeEnvelope(b []byte, kind byte, limit int) (*reader, error) {
	if len(b) > limit {
		return nil, fmt.Errorf("%w: %d bytes (limit %d)", errDecode, len(b), limit)
	}
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: %d bytes", errDecode, len(b))
	}
	if b[0] != wireVersion {
		return nil, fmt.Errorf("%w: unknown version %d", errDecode, b[0])
	}
	if b[1] != kind {
		return nil, fmt.Errorf("%w: unexpected kind %d", errDecode, b[1])
	}
	// Records keep slices of their wire form; memberlist reuses b.
	r := newReader(slices.Clone(b[2:]))
	return &r, nil
}

// decodeRecordMsg decodes a kind 1 message. The returned name is the sender
// when it could be read, for error reports.
func decodeRecordMsg(b []byte) (*record, string, error) {
	r, err := decodeEnvelope(b, kindRecord, maxMessageBytes)
	if err != nil {
		return nil, "", err
	}
	rec, name := r.readRecord()
	if r.Err != nil {
		return nil, name, r.Err
	}
	return rec, name, nil
}

// decodeState decodes a kind 2 push/pull state.
func decodeState(b []byte) ([]*record, error) {
	r, err := decodeEnvelope(b, kindState, maxStateBytes)
	if err != nil {
		return nil, err
	}
	n := r.Uvarint("record count")
	if r.Err == nil && (n > maxStateRecords || n > uint64(len(r.Buf))) {
		r.Fail("%d records", n)
	}
	if r.Err != nil {
		return nil, r.Err
	}
	recs := make([]*record, 0, n)
	for range n {
		rec, _ := r.readRecord()
		if r.Err != nil {
			return nil, r.Err
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

// encodeState returns the kind 2 state holding own first, then others in
// order, leaving out whatever would push it past maxStateBytes. dropped
// counts the records left out.
func encodeState(own *record, others []*record) (b []byte, dropped int) {
	encoded := make([][]byte, 0, 1+len(others))
	size := 2 + binary.MaxVarintLen64
	recs := others
	if own != nil { // nil while the node holds its record back (Config.Quiet)
		recs = append([]*record{own}, others...)
	}
	for i, r := range recs {
		e := appendRecord(nil, r)
		if size+len(e) > maxStateBytes || len(encoded) >= maxStateRecords {
			dropped = len(recs) - i
			break
		}
		size += len(e)
		encoded = append(encoded, e)
	}
	b = make([]byte, 0, size)
	b = append(b, wireVersion, kindState)
	b = binary.AppendUvarint(b, uint64(len(encoded)))
	for _, e := range encoded {
		b = append(b, e...)
	}
	return b, dropped
}

// sanitizeExports copies exps, keeping what the wire format can carry: at
// most maxExports entries with non-empty names of at most maxNameLen bytes,
// and no more than fits in one message. It reports how many were dropped.
func sanitizeExports(name string, exps []Export, certLen int) ([]Export, int) {
	out := make([]Export, 0, min(len(exps), maxExports))
	size := len(encodeRecordMsg(&record{name: name, version: math.MaxUint64, exports: nil})) + identityOverhead + certLen
	for _, e := range exps {
		if e.Name == "" || len(e.Name) > maxNameLen || len(out) >= maxExports {
			continue
		}
		e.Weight = max(math.MinInt32, min(math.MaxInt32, e.Weight))
		n := len(appendRecord(nil, &record{exports: []Export{e}})) // upper bound of its share
		if size+n > maxMessageBytes {
			continue
		}
		size += n
		out = append(out, e)
	}
	return out, len(exps) - len(out)
}

// identityOverhead bounds the identity fields and signature of a signed
// record, certificate aside.
const identityOverhead = 2 + maxSiteLen + 2 + key.Len + 2*19 + 2 + ed25519.PublicKeySize + 3 + ed25519.SignatureSize

// equalExports reports whether two catalogs hold the same entries in order.
func equalExports(a, b []Export) bool { return slices.Equal(a, b) }
