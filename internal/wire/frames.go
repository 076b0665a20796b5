package wire

import (
	"encoding"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"unicode/utf8"
)

var (
	_ encoding.BinaryAppender = Request{}
	_ encoding.BinaryAppender = Response{}
)

// Request opens a stream to an export. The importer sends it first.
type Request struct {
	Service string         // export name, 1..255 bytes
	Flags   uint8          // FlagProbe, ...
	Source  netip.AddrPort // the client's address (OptSource); zero when unknown
	Dest    netip.AddrPort // the address the client connected to (OptDest); zero when unknown
}

// Ping reports whether FlagPing is set.
func (r Request) Ping() bool { return r.Flags&FlagPing != 0 }

// appendAddrOpt appends an address option; a zero address adds nothing.
func appendAddrOpt(b []byte, tag byte, ap netip.AddrPort) []byte {
	if !ap.IsValid() {
		return b
	}
	a := ap.Addr().Unmap()
	ip := a.AsSlice()
	b = append(b, tag, byte(len(ip)+2))
	b = append(b, ip...)
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

// parseAddrOpt decodes an address option's value; ok is false for a value
// that is not 6 or 18 bytes.
func parseAddrOpt(v []byte) (netip.AddrPort, bool) {
	if len(v) != 6 && len(v) != 18 {
		return netip.AddrPort{}, false
	}
	a, _ := netip.AddrFromSlice(v[:len(v)-2])
	return netip.AddrPortFrom(a.Unmap(), binary.BigEndian.Uint16(v[len(v)-2:])), true
}

// Probe reports whether FlagProbe is set.
func (r Request) Probe() bool { return r.Flags&FlagProbe != 0 }

// AppendBinary appends r's frame to b. It fails, wrapping ErrMalformed, on
// an empty service name and, wrapping ErrTooLarge, on one over 255 bytes.
func (r Request) AppendBinary(b []byte) ([]byte, error) {
	switch {
	case r.Service == "":
		return b, fmt.Errorf("wire: request: empty service name: %w", ErrMalformed)
	case len(r.Service) > MaxField:
		return b, fmt.Errorf("wire: request: service name of %d bytes exceeds %d: %w", len(r.Service), MaxField, ErrTooLarge)
	}
	return appendFrame(b, KindRequest, func(b []byte) []byte {
		b = append(b, r.Flags, byte(len(r.Service)))
		b = append(b, r.Service...)
		b = appendAddrOpt(b, OptSource, r.Source)
		return appendAddrOpt(b, OptDest, r.Dest)
	}), nil
}

// WriteRequest writes r's frame to w in one Write call.
func WriteRequest(w io.Writer, r Request) error {
	frame, err := r.AppendBinary(make([]byte, 0, HeaderLen+2+len(r.Service)+40))
	if err != nil {
		return err
	}
	return writeFrame(w, frame, "request")
}

// ReadRequest reads exactly one request frame from r: HeaderLen bytes, then
// the body, never more. It allocates at most MaxBody bytes. It does not set
// deadlines; the caller bounds the read on its connection.
func ReadRequest(r io.Reader) (Request, error) {
	body, err := readFrame(r, KindRequest, "request")
	if err != nil {
		return Request{}, err
	}
	return parseRequestBody(body)
}

// ParseRequest parses the request frame at the start of frame and returns
// it with the number of bytes it occupies. Bytes after the frame are not
// looked at. A frame cut short fails wrapping io.ErrUnexpectedEOF.
func ParseRequest(frame []byte) (Request, int, error) {
	body, n, err := parseFrame(frame, KindRequest, "request")
	if err != nil {
		return Request{}, 0, err
	}
	req, err := parseRequestBody(body)
	if err != nil {
		return Request{}, 0, err
	}
	return req, n, nil
}

func parseRequestBody(body []byte) (Request, error) {
	if len(body) < 1 {
		return Request{}, fmt.Errorf("wire: request: empty body: %w", ErrMalformed)
	}
	name, off, err := field(body, 1, "request", "service name")
	if err != nil {
		return Request{}, err
	}
	if name == "" {
		return Request{}, fmt.Errorf("wire: request: empty service name: %w", ErrMalformed)
	}
	req := Request{Service: name, Flags: body[0]}
	for off+2 <= len(body) {
		tag, n := body[off], int(body[off+1])
		if off+2+n > len(body) {
			break // not an option of this format: ignored
		}
		v := body[off+2 : off+2+n]
		off += 2 + n
		switch tag {
		case OptSource:
			if ap, ok := parseAddrOpt(v); ok {
				req.Source = ap
			}
		case OptDest:
			if ap, ok := parseAddrOpt(v); ok {
				req.Dest = ap
			}
		}
	}
	return req, nil
}

// Response is the exporter's answer to a Request.
type Response struct {
	Status  Status
	Node    string // the answering node's name, 0..255 bytes
	Message string // detail for a non-OK status; longer than 255 bytes is truncated
}

// Err returns nil for StatusOK and otherwise an error describing the
// answer, for example "wire: cloud-1 answered backend refused: dial tcp
// 127.0.0.1:5432: connection refused".
func (r Response) Err() error {
	if r.Status == StatusOK {
		return nil
	}
	node := r.Node
	if node == "" {
		node = "exporter"
	}
	if r.Message == "" {
		return fmt.Errorf("wire: %s answered %v", node, r.Status)
	}
	return fmt.Errorf("wire: %s answered %v: %s", node, r.Status, r.Message)
}

// AppendBinary appends r's frame to b. A node name over 255 bytes fails,
// wrapping ErrTooLarge; a message over 255 bytes is truncated to at most
// 255 bytes at a UTF-8 character boundary, since a shortened diagnostic is
// better than no answer.
func (r Response) AppendBinary(b []byte) ([]byte, error) {
	if len(r.Node) > MaxField {
		return b, fmt.Errorf("wire: response: node name of %d bytes exceeds %d: %w", len(r.Node), MaxField, ErrTooLarge)
	}
	msg := truncate(r.Message, MaxField)
	return appendFrame(b, KindResponse, func(b []byte) []byte {
		b = append(b, byte(r.Status), byte(len(r.Node)))
		b = append(b, r.Node...)
		b = append(b, byte(len(msg)))
		return append(b, msg...)
	}), nil
}

// truncate shortens s to at most n bytes without splitting a UTF-8
// sequence (invalid input is cut at n).
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for i := n; i > 0 && n-i < utf8.UTFMax; i-- {
		if utf8.RuneStart(s[i]) {
			cut = i
			break
		}
	}
	return s[:cut]
}

// WriteResponse writes r's frame to w in one Write call.
func WriteResponse(w io.Writer, r Response) error {
	frame, err := r.AppendBinary(make([]byte, 0, HeaderLen+3+len(r.Node)+min(len(r.Message), MaxField)))
	if err != nil {
		return err
	}
	return writeFrame(w, frame, "response")
}

// ReadResponse reads exactly one response frame from r: HeaderLen bytes,
// then the body, never more. It allocates at most MaxBody bytes.
func ReadResponse(r io.Reader) (Response, error) {
	body, err := readFrame(r, KindResponse, "response")
	if err != nil {
		return Response{}, err
	}
	return parseResponseBody(body)
}

// ParseResponse parses the response frame at the start of frame and returns
// it with the number of bytes it occupies. Bytes after the frame are not
// looked at. A frame cut short fails wrapping io.ErrUnexpectedEOF.
func ParseResponse(frame []byte) (Response, int, error) {
	body, n, err := parseFrame(frame, KindResponse, "response")
	if err != nil {
		return Response{}, 0, err
	}
	resp, err := parseResponseBody(body)
	if err != nil {
		return Response{}, 0, err
	}
	return resp, n, nil
}

func parseResponseBody(body []byte) (Response, error) {
	if len(body) < 1 {
		return Response{}, fmt.Errorf("wire: response: empty body: %w", ErrMalformed)
	}
	node, off, err := field(body, 1, "response", "node name")
	if err != nil {
		return Response{}, err
	}
	msg, _, err := field(body, off, "response", "message")
	if err != nil {
		return Response{}, err
	}
	return Response{Status: Status(body[0]), Node: node, Message: msg}, nil
}
