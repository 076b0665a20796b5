// Package wire encodes the stream open header: the first bytes of every
// import connection's yamux stream. The importer writes one Request frame,
// the exporter answers with one Response frame, and only then does payload
// flow. Both sides read exactly one frame and nothing more, so the payload
// that follows is left untouched in the stream.
//
// # Frame (Version 1)
//
// All integers are unsigned, multi-byte ones big-endian.
//
//	offset  size     field
//	0       1        version   Version (1)
//	1       1        kind      KindRequest (1) or KindResponse (2)
//	2       2        bodyLen   length of body, <= MaxBody (1024)
//	4       bodyLen  body
//
// Request body (kind 1):
//
//	0       1        flags     FlagProbe = 1<<0, FlagPing = 1<<1; unknown bits are carried, not interpreted
//	1       1        nameLen   1..255
//	2       nameLen  name      service name, non-empty
//	...              options   zero or more TLVs to the end of the body (below)
//
// Request options (added compatibly: version 1 readers that predate them
// skip the trailing bytes), each:
//
//	0       1        tag       OptSource (1), OptDest (2); others are skipped
//	1       1        len       length of value
//	2       len      value
//
// OptSource is the client's address as the importer saw it, OptDest the
// address the client connected to (the import's listener): an IP (4 or 16
// bytes) followed by the port (2 bytes), so len is 6 or 18; an option with
// another length is skipped. The exporter uses them for the PROXY protocol
// header. A TLV that overruns the body ends the options (its bytes are
// ignored), so trailing bytes of any later format are never an error.
//
// Response body (kind 2):
//
//	0       1        status    Status; unknown values are carried as-is
//	1       1        nodeLen   0..255
//	2       nodeLen  node      name of the answering (exporting) node
//	.       1        msgLen    0..255
//	.       msgLen   msg       human-readable detail, e.g. the dial error
//	...              ignored   trailing bytes, reserved for later fields
//
// A reader rejects a frame whose version is not Version (ErrVersion), whose
// kind is not the one expected (ErrKind), whose bodyLen exceeds MaxBody
// (ErrTooLarge; checked before anything is allocated) or whose body is
// inconsistent (ErrMalformed). Fields added later go at the end of a body,
// where version 1 readers skip them; a change that old readers cannot skip
// needs a new Version.
//
// # Fields
//
// The package also holds the field encoding that other formats share
// (the gossip catalog record, the certificate): AppendString and Decoder,
// which reads uvarints, varints, bytes and uvarint-length-prefixed strings
// with a sticky error.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
)

const (
	// Version is the frame format version this package reads and writes.
	Version = 1
	// HeaderLen is the length of the fixed frame header.
	HeaderLen = 4
	// MaxBody is the largest body a reader accepts; a reader allocates at
	// most this much per frame.
	MaxBody = 1024
	// MaxField is the longest service name, node name or message.
	MaxField = 255
)

// Frame kinds.
const (
	KindRequest  = 1
	KindResponse = 2
)

// Request flags.
const (
	// FlagProbe marks a drill probe: the exporter dials the backend,
	// answers, then closes the stream without copying payload.
	FlagProbe uint8 = 1 << 0
	// FlagPing marks a ping (meshd ping): the exporter answers StatusOK with
	// its node name and closes the stream; the service name is not looked
	// up and nothing is dialled. An exporter that predates it answers
	// StatusUnknownService, which still measures the round trip.
	FlagPing uint8 = 1 << 1
)

// Request option tags.
const (
	OptSource = 1
	OptDest   = 2
)

// Errors, wrapped with context by every function of this package.
var (
	ErrVersion   = errors.New("unsupported version")
	ErrKind      = errors.New("unexpected frame kind")
	ErrTooLarge  = errors.New("too large")
	ErrMalformed = errors.New("malformed frame")
)

// Status is the exporter's answer to a Request.
type Status uint8

// Statuses.
const (
	StatusOK             Status = 0 // backend dialled; payload follows
	StatusUnknownService Status = 1 // no such export on this node
	StatusBackendRefused Status = 2 // export known but its target could not be dialled
	StatusDenied         Status = 3 // the importer may not use this export
	StatusBadRequest     Status = 4 // the request frame could not be parsed
	// StatusNotAllowed: the export's allow list refuses the importing node
	// (README "Identity and policy"). Final: the importer tries no other endpoint.
	StatusNotAllowed Status = 5
)

var statusNames = [...]string{
	StatusOK:             "ok",
	StatusUnknownService: "unknown service",
	StatusBackendRefused: "backend refused",
	StatusDenied:         "denied",
	StatusBadRequest:     "bad request",
	StatusNotAllowed:     "not allowed",
}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "status(" + strconv.Itoa(int(s)) + ")"
}

// header is a decoded frame header.
type header struct {
	version, kind uint8
	bodyLen       int
}

func decodeHeader(b []byte) header {
	return header{version: b[0], kind: b[1], bodyLen: int(binary.BigEndian.Uint16(b[2:4]))}
}

// check validates h for a frame of kind want; what names the frame in
// errors.
func (h header) check(want uint8, what string) error {
	if h.version != Version {
		return fmt.Errorf("wire: %s: version %d, this build speaks %d: %w", what, h.version, Version, ErrVersion)
	}
	if h.kind != want {
		return fmt.Errorf("wire: %s: kind %d, want %d: %w", what, h.kind, want, ErrKind)
	}
	if h.bodyLen > MaxBody {
		return fmt.Errorf("wire: %s: body of %d bytes exceeds %d: %w", what, h.bodyLen, MaxBody, ErrTooLarge)
	}
	return nil
}

// appendFrame appends a frame of the given kind whose body is produced by
// body, then fills in the length.
func appendFrame(b []byte, kind uint8, body func([]byte) []byte) []byte {
	start := len(b)
	b = append(b, Version, kind, 0, 0)
	b = body(b)
	binary.BigEndian.PutUint16(b[start+2:], uint16(len(b)-start-HeaderLen))
	return b
}

// parseFrame splits the first frame of kind want off buf and returns its
// body and the frame's total length.
func parseFrame(buf []byte, want uint8, what string) ([]byte, int, error) {
	if len(buf) < HeaderLen {
		return nil, 0, fmt.Errorf("wire: %s: %d of %d header bytes: %w", what, len(buf), HeaderLen, io.ErrUnexpectedEOF)
	}
	h := decodeHeader(buf)
	if err := h.check(want, what); err != nil {
		return nil, 0, err
	}
	n := HeaderLen + h.bodyLen
	if len(buf) < n {
		return nil, 0, fmt.Errorf("wire: %s: %d of %d body bytes: %w", what, len(buf)-HeaderLen, h.bodyLen, io.ErrUnexpectedEOF)
	}
	return buf[HeaderLen:n], n, nil
}

// readFrame reads exactly one frame of kind want from r and returns its
// body. It allocates the body only after checking its length.
func readFrame(r io.Reader, want uint8, what string) ([]byte, error) {
	var hb [HeaderLen]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return nil, fmt.Errorf("wire: read %s header: %w", what, err)
	}
	h := decodeHeader(hb[:])
	if err := h.check(want, what); err != nil {
		return nil, err
	}
	body := make([]byte, h.bodyLen)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("wire: read %s body (%d bytes): %w", what, h.bodyLen, err)
	}
	return body, nil
}

// writeFrame writes frame with one Write call.
func writeFrame(w io.Writer, frame []byte, what string) error {
	n, err := w.Write(frame)
	if err == nil && n < len(frame) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return fmt.Errorf("wire: write %s: %w", what, err)
	}
	return nil
}

// field reads a length-prefixed field at body[off:] and returns it and the
// offset after it.
func field(body []byte, off int, what, name string) (string, int, error) {
	if off >= len(body) {
		return "", 0, fmt.Errorf("wire: %s: body ends before %s length: %w", what, name, ErrMalformed)
	}
	n := int(body[off])
	off++
	if off+n > len(body) {
		return "", 0, fmt.Errorf("wire: %s: %s of %d bytes overruns body: %w", what, name, n, ErrMalformed)
	}
	return string(body[off : off+n]), off + n, nil
}
