package wire

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestRequestRoundTrip(t *testing.T) {
	tests := []struct {
		req  Request
		want []byte
	}{
		{Request{Service: "db"}, []byte{1, 1, 0, 4, 0, 2, 'd', 'b'}},
		{Request{Service: "postgres", Flags: FlagProbe}, append([]byte{1, 1, 0, 10, 1, 8}, "postgres"...)},
		{Request{Service: "x", Flags: 0xfe}, []byte{1, 1, 0, 3, 0xfe, 1, 'x'}},
		{Request{Service: strings.Repeat("s", 255)}, append([]byte{1, 1, 1, 1, 0, 255}, strings.Repeat("s", 255)...)},
		{Request{Service: "naïve-✓"}, append([]byte{1, 1, 0, 12, 0, 10}, "naïve-✓"...)},
	}
	for _, tt := range tests {
		t.Run(tt.req.Service[:min(len(tt.req.Service), 16)], func(t *testing.T) {
			frame, err := tt.req.AppendBinary([]byte("prefix"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(frame[6:], tt.want) || string(frame[:6]) != "prefix" {
				t.Fatalf("AppendBinary = %x, want prefix+%x", frame, tt.want)
			}
			got, n, err := ParseRequest(frame[6:])
			if err != nil || got != tt.req || n != len(tt.want) {
				t.Fatalf("ParseRequest = %+v, %d, %v; want %+v, %d", got, n, err, tt.req, len(tt.want))
			}
			var w countWriter
			if err := WriteRequest(&w, tt.req); err != nil || w.calls != 1 || !bytes.Equal(w.buf.Bytes(), tt.want) {
				t.Fatalf("WriteRequest: %v, %d calls, %x", err, w.calls, w.buf.Bytes())
			}
			got, err = ReadRequest(&w.buf)
			if err != nil || got != tt.req {
				t.Fatalf("ReadRequest = %+v, %v", got, err)
			}
		})
	}
}

func TestResponseRoundTrip(t *testing.T) {
	long := strings.Repeat("m", 255)
	tests := []struct {
		name string
		resp Response
		want []byte
	}{
		{"ok", Response{Status: StatusOK, Node: "n1"}, []byte{1, 2, 0, 5, 0, 2, 'n', '1', 0}},
		{"refused", Response{Status: StatusBackendRefused, Node: "cloud-1", Message: "dial: refused"},
			append(append([]byte{1, 2, 0, 23, 2, 7}, "cloud-1"...), append([]byte{13}, "dial: refused"...)...)},
		{"empty node", Response{Status: StatusUnknownService, Message: "no"}, []byte{1, 2, 0, 5, 1, 0, 2, 'n', 'o'}},
		{"unknown status", Response{Status: 200, Node: "n"}, []byte{1, 2, 0, 4, 200, 1, 'n', 0}},
		{"max fields", Response{Status: StatusDenied, Node: strings.Repeat("n", 255), Message: long},
			append(append(append([]byte{1, 2, 2, 1, 3, 255}, strings.Repeat("n", 255)...), 255), long...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame, err := tt.resp.AppendBinary(nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(frame, tt.want) {
				t.Fatalf("AppendBinary = %x, want %x", frame, tt.want)
			}
			got, n, err := ParseResponse(frame)
			if err != nil || got != tt.resp || n != len(frame) {
				t.Fatalf("ParseResponse = %+v, %d, %v", got, n, err)
			}
			var w countWriter
			if err := WriteResponse(&w, tt.resp); err != nil || w.calls != 1 || !bytes.Equal(w.buf.Bytes(), tt.want) {
				t.Fatalf("WriteResponse: %v, %d calls, %x", err, w.calls, w.buf.Bytes())
			}
			got, err = ReadResponse(&w.buf)
			if err != nil || got != tt.resp {
				t.Fatalf("ReadResponse = %+v, %v", got, err)
			}
		})
	}
}

func TestResponseTruncatesMessage(t *testing.T) {
	for _, msg := range []string{
		strings.Repeat("a", 300),
		strings.Repeat("a", 254) + "✓✓", // ✓ is 3 bytes and straddles byte 255
		strings.Repeat("a", 253) + "é" + "tail",
		strings.Repeat("\xff", 300), // not UTF-8: plain cut
	} {
		frame, err := Response{Status: StatusBackendRefused, Message: msg}.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := ParseResponse(frame)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Message) > MaxField || !strings.HasPrefix(msg, got.Message) || len(got.Message) < MaxField-3 {
			t.Errorf("message of %d bytes truncated to %d bytes %q", len(msg), len(got.Message), got.Message)
		}
		if utf8.ValidString(msg) && !utf8.ValidString(got.Message) {
			t.Errorf("truncation split a character: %q", got.Message[len(got.Message)-4:])
		}
	}
}

func TestEncodeErrors(t *testing.T) {
	tests := []struct {
		name string
		enc  func() ([]byte, error)
		want error
	}{
		{"empty service", func() ([]byte, error) { return Request{}.AppendBinary(nil) }, ErrMalformed},
		{"long service", func() ([]byte, error) { return Request{Service: strings.Repeat("s", 256)}.AppendBinary(nil) }, ErrTooLarge},
		{"long node", func() ([]byte, error) { return Response{Node: strings.Repeat("n", 256)}.AppendBinary(nil) }, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.enc()
			if !errors.Is(err, tt.want) || len(b) != 0 || !strings.HasPrefix(err.Error(), "wire: ") {
				t.Fatalf("got %x, %v; want %v", b, err, tt.want)
			}
		})
	}
	var w countWriter
	if err := WriteRequest(&w, Request{}); !errors.Is(err, ErrMalformed) || w.calls != 0 {
		t.Errorf("WriteRequest(empty) = %v after %d writes", err, w.calls)
	}
	if err := WriteResponse(&w, Response{Node: strings.Repeat("n", 256)}); !errors.Is(err, ErrTooLarge) || w.calls != 0 {
		t.Errorf("WriteResponse(long node) = %v after %d writes", err, w.calls)
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name  string
		frame []byte
		req   error // from ParseRequest/ReadRequest
		resp  error // from ParseResponse/ReadResponse
	}{
		{"empty input", nil, io.ErrUnexpectedEOF, io.ErrUnexpectedEOF},
		{"short header", []byte{1, 1, 0}, io.ErrUnexpectedEOF, io.ErrUnexpectedEOF},
		{"version 0", []byte{0, 1, 0, 3, 0, 1, 'x'}, ErrVersion, ErrVersion},
		{"version 2", []byte{2, 1, 0, 3, 0, 1, 'x'}, ErrVersion, ErrVersion},
		{"kind 0", []byte{1, 0, 0, 0}, ErrKind, ErrKind},
		{"kind 9", []byte{1, 9, 0, 0}, ErrKind, ErrKind},
		{"request as response", []byte{1, 1, 0, 3, 0, 1, 'x'}, nil, ErrKind},
		{"response as request", []byte{1, 2, 0, 3, 0, 0, 0}, ErrKind, nil},
		{"request too large", []byte{1, 1, 0x04, 0x01}, ErrTooLarge, ErrKind},
		{"response too large", []byte{1, 2, 0xff, 0xff}, ErrKind, ErrTooLarge},
		{"truncated body", []byte{1, 1, 0, 9, 0, 7, 'p', 'o'}, io.ErrUnexpectedEOF, ErrKind},
		{"request empty body", []byte{1, 1, 0, 0}, ErrMalformed, ErrKind},
		{"request no name length", []byte{1, 1, 0, 1, 0}, ErrMalformed, ErrKind},
		{"request empty name", []byte{1, 1, 0, 2, 0, 0}, ErrMalformed, ErrKind},
		{"request name overruns body", []byte{1, 1, 0, 4, 0, 5, 'a', 'b', 'c', 'd', 'e'}, ErrMalformed, ErrKind},
		{"response empty body", []byte{1, 2, 0, 0}, ErrKind, ErrMalformed},
		{"response no node length", []byte{1, 2, 0, 1, 0}, ErrKind, ErrMalformed},
		{"response node overruns", []byte{1, 2, 0, 3, 0, 9, 'n'}, ErrKind, ErrMalformed},
		{"response no msg length", []byte{1, 2, 0, 3, 0, 1, 'n'}, ErrKind, ErrMalformed},
		{"response msg overruns", []byte{1, 2, 0, 5, 0, 1, 'n', 2, 'm'}, ErrKind, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, n, err := ParseRequest(tt.frame)
			checkErr(t, "ParseRequest", err, tt.req)
			if err != nil && n != 0 {
				t.Errorf("ParseRequest consumed %d on error", n)
			}
			_, err = ReadRequest(bytes.NewReader(tt.frame))
			checkErr(t, "ReadRequest", err, readErr(tt.frame, tt.req))
			_, n, err = ParseResponse(tt.frame)
			checkErr(t, "ParseResponse", err, tt.resp)
			if err != nil && n != 0 {
				t.Errorf("ParseResponse consumed %d on error", n)
			}
			_, err = ReadResponse(bytes.NewReader(tt.frame))
			checkErr(t, "ReadResponse", err, readErr(tt.frame, tt.resp))
		})
	}
}

// readErr is the error a reader gives where a parser gives want: a stream
// that ends before its first byte is a clean io.EOF.
func readErr(frame []byte, want error) error {
	if len(frame) == 0 && want == io.ErrUnexpectedEOF {
		return io.EOF
	}
	return want
}

func checkErr(t *testing.T, fn string, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Errorf("%s: %v", fn, err)
	case want == nil:
	case !errors.Is(err, want):
		t.Errorf("%s = %v, want %v", fn, err, want)
	case !strings.HasPrefix(err.Error(), "wire: "):
		t.Errorf("%s = %q, want a wire: prefix", fn, err)
	}
}

func TestVersionErrorNamesVersion(t *testing.T) {
	_, err := ReadRequest(bytes.NewReader([]byte{7, 1, 0, 0}))
	if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "version 7") {
		t.Fatalf("err = %v", err)
	}
}

func TestReadCleanEOF(t *testing.T) {
	// A stream closed before any byte is a plain EOF, not a protocol error.
	if _, err := ReadRequest(bytes.NewReader(nil)); !errors.Is(err, io.EOF) {
		t.Errorf("ReadRequest(empty) = %v, want io.EOF", err)
	}
	// A stream closed inside a frame is unexpected.
	if _, err := ReadResponse(bytes.NewReader([]byte{1, 2, 0, 5, 0})); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("ReadResponse(cut) = %v, want io.ErrUnexpectedEOF", err)
	}
}

// TestReadNeverOverReads reads frames followed by payload from a reader that
// records every Read, and checks that the payload is left in place and that
// no buffer larger than the frame's body was asked for.
func TestReadNeverOverReads(t *testing.T) {
	payload := []byte("payload bytes that belong to the backend")
	req, _ := Request{Service: "postgres", Flags: FlagProbe}.AppendBinary(nil)
	req = append(req, 0xaa, 0xbb) // trailing body bytes from a newer version
	req[3] += 2                   // ... counted in bodyLen
	resp, _ := Response{Status: StatusOK, Node: "n1"}.AppendBinary(nil)
	maxBody := append([]byte{1, 1, MaxBody >> 8, MaxBody & 0xff, 0, 1, 'x'}, make([]byte, MaxBody-3)...)

	for _, tc := range []struct {
		name  string
		frame []byte
		read  func(io.Reader) error
	}{
		{"request", req, func(r io.Reader) error { _, err := ReadRequest(r); return err }},
		{"response", resp, func(r io.Reader) error { _, err := ReadResponse(r); return err }},
		{"max body", maxBody, func(r io.Reader) error { _, err := ReadRequest(r); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &recordingReader{r: bytes.NewReader(append(append([]byte{}, tc.frame...), payload...))}
			if err := tc.read(src); err != nil {
				t.Fatal(err)
			}
			rest, _ := io.ReadAll(src.r)
			if !bytes.Equal(rest, payload) {
				t.Fatalf("left %q, want %q", rest, payload)
			}
			if src.maxAsk > MaxBody || src.totalAsk != len(tc.frame) {
				t.Errorf("asked for up to %d bytes per Read, %d in all; frame is %d", src.maxAsk, src.totalAsk, len(tc.frame))
			}
		})
	}
}

func TestReadRejectsOversizeBeforeReadingBody(t *testing.T) {
	src := &recordingReader{r: bytes.NewReader(append([]byte{1, 1, 0xff, 0xff}, make([]byte, 70000)...))}
	if _, err := ReadRequest(src); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v", err)
	}
	if src.totalAsk != HeaderLen {
		t.Errorf("read %d bytes, want only the %d header bytes", src.totalAsk, HeaderLen)
	}
}

func TestWriteShortWrite(t *testing.T) {
	err := WriteRequest(shortWriter{}, Request{Service: "db"})
	if !errors.Is(err, io.ErrShortWrite) || !strings.HasPrefix(err.Error(), "wire: write request") {
		t.Fatalf("err = %v", err)
	}
}

func TestStatusString(t *testing.T) {
	for s, want := range map[Status]string{
		StatusOK: "ok", StatusUnknownService: "unknown service", StatusBackendRefused: "backend refused",
		StatusDenied: "denied", StatusBadRequest: "bad request", StatusNotAllowed: "not allowed", 6: "status(6)", 255: "status(255)",
	} {
		if got := s.String(); got != want {
			t.Errorf("Status(%d) = %q, want %q", uint8(s), got, want)
		}
	}
}

func TestResponseErr(t *testing.T) {
	if err := (Response{Status: StatusOK, Node: "n"}).Err(); err != nil {
		t.Errorf("OK: %v", err)
	}
	want := "wire: cloud-1 answered backend refused: dial refused"
	if err := (Response{Status: StatusBackendRefused, Node: "cloud-1", Message: "dial refused"}).Err(); err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	if err := (Response{Status: StatusDenied}).Err(); err == nil || err.Error() != "wire: exporter answered denied" {
		t.Errorf("got %v", err)
	}
}

func TestRequestProbe(t *testing.T) {
	if (Request{Flags: FlagProbe | 0x80}).Probe() != true || (Request{Flags: 0x80}).Probe() {
		t.Error("Probe mismatch")
	}
}

type countWriter struct {
	buf   bytes.Buffer
	calls int
}

func (w *countWriter) Write(p []byte) (int, error) {
	w.calls++
	return w.buf.Write(p)
}

type shortWriter struct{}

func (shortWriter) Write(p []byte) (int, error) { return len(p) / 2, nil }

// recordingReader records how many bytes its callers ask for.
type recordingReader struct {
	r        io.Reader
	maxAsk   int
	totalAsk int
}

func (r *recordingReader) Read(p []byte) (int, error) {
	r.maxAsk = max(r.maxAsk, len(p))
	r.totalAsk += len(p)
	return r.r.Read(p)
}

// BenchmarkOpenHeader measures one request and one response written and
// read back, the per-stream cost of the open handshake.
func BenchmarkOpenHeader(b *testing.B) {
	req := Request{Service: "postgres"}
	resp := Response{Status: StatusOK, Node: "cloud-1"}
	var buf bytes.Buffer
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		if err := WriteRequest(&buf, req); err != nil {
			b.Fatal(err)
		}
		if err := WriteResponse(&buf, resp); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(buf.Len()))
		if _, err := ReadRequest(&buf); err != nil {
			b.Fatal(err)
		}
		if _, err := ReadResponse(&buf); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRequestOptions: the client's source and destination addresses travel
// as options after the service name; frames without them (older
// importers) parse as before, and option bytes a reader does not know are
// skipped.
func TestRequestOptions(t *testing.T) {
	src, dst := netip.MustParseAddrPort("192.0.2.7:40000"), netip.MustParseAddrPort("[2001:db8::1]:8080")
	for _, r := range []Request{
		{Service: "web", Source: src, Dest: dst},
		{Service: "web", Source: src},
		{Service: "meshd.ping", Flags: FlagPing},
		{Service: "web", Source: netip.AddrPortFrom(netip.MustParseAddr("::ffff:10.0.0.1"), 5)},
	} {
		b, err := r.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		got, n, err := ParseRequest(b)
		want := r
		want.Source = netip.AddrPortFrom(r.Source.Addr().Unmap(), r.Source.Port())
		if !r.Source.IsValid() {
			want.Source = netip.AddrPort{}
		}
		if err != nil || got != want || n != len(b) {
			t.Errorf("round trip of %+v: %+v, %d, %v", r, got, n, err)
		}
		if r.Ping() != got.Ping() {
			t.Errorf("Ping() lost")
		}
		// A reader of the old format sees the service and ignores the rest.
		body := b[HeaderLen:]
		if name := string(body[2 : 2+body[1]]); name != r.Service {
			t.Errorf("old reader's view: %q", name)
		}
	}
	// Unknown option, then a source: the source is found.
	b, _ := Request{Service: "x"}.AppendBinary(nil)
	b = append(b, 9, 2, 0xaa, 0xbb)
	b = appendAddrOpt(b, OptSource, src)
	b[3] = byte(len(b) - HeaderLen)
	if got, _, err := ParseRequest(b); err != nil || got.Source != src {
		t.Errorf("after an unknown option: %+v, %v", got, err)
	}
}
