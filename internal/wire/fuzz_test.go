package wire

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The seed corpus lives in testdata/fuzz/<FuzzName>/; plain `go test` runs
// it. The f.Add seeds below are generated from the encoder so they track
// format changes.

func FuzzParseRequest(f *testing.F) {
	for _, r := range []Request{{Service: "postgres"}, {Service: "x", Flags: FlagProbe | 0x40},
		{Service: "web", Source: netip.MustParseAddrPort("192.0.2.7:40000"), Dest: netip.MustParseAddrPort("127.0.0.1:8080")},
		{Service: "meshd.ping", Flags: FlagPing, Source: netip.MustParseAddrPort("[2001:db8::1]:1")}} {
		b, err := r.AppendBinary(nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		req, n, err := ParseRequest(in)
		checkAgainstReader(t, in, n, err, func(r *bytes.Reader) (any, error) { return ReadRequest(r) }, req)
		if err != nil {
			return
		}
		if req.Service == "" || n > len(in) || n < HeaderLen+2 {
			t.Fatalf("ParseRequest(%x) = %+v, consumed %d", in, req, n)
		}
		out, err := req.AppendBinary(nil)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", req, err)
		}
		again, m, err := ParseRequest(out)
		if err != nil || again != req || m != len(out) {
			t.Fatalf("re-parse of %x = %+v, %d, %v; want %+v, %d", out, again, m, err, req, len(out))
		}
	})
}

func FuzzParseResponse(f *testing.F) {
	for _, r := range []Response{{Status: StatusOK, Node: "cloud-1"}, {Status: StatusBackendRefused, Node: "n", Message: "refused"}} {
		b, err := r.AppendBinary(nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		resp, n, err := ParseResponse(in)
		checkAgainstReader(t, in, n, err, func(r *bytes.Reader) (any, error) { return ReadResponse(r) }, resp)
		if err != nil {
			return
		}
		if n > len(in) || n < HeaderLen+3 {
			t.Fatalf("ParseResponse(%x) = %+v, consumed %d", in, resp, n)
		}
		out, err := resp.AppendBinary(nil)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", resp, err)
		}
		again, m, err := ParseResponse(out)
		if err != nil || again != resp || m != len(out) {
			t.Fatalf("re-parse of %x = %+v, %d, %v; want %+v, %d", out, again, m, err, resp, len(out))
		}
	})
}

// checkAgainstReader checks that the streaming reader agrees with the
// buffer parser on in: same value or both failing with the same sentinel,
// and on success exactly n bytes consumed.
func checkAgainstReader(t *testing.T, in []byte, n int, parseErr error, read func(*bytes.Reader) (any, error), want any) {
	t.Helper()
	r := bytes.NewReader(in)
	got, err := read(r)
	if (err == nil) != (parseErr == nil) {
		t.Fatalf("reader err %v, parser err %v on %x", err, parseErr, in)
	}
	if err != nil {
		for _, s := range []error{ErrVersion, ErrKind, ErrTooLarge, ErrMalformed} {
			if errors.Is(err, s) != errors.Is(parseErr, s) {
				t.Fatalf("reader err %v, parser err %v on %x", err, parseErr, in)
			}
		}
		return
	}
	if got != want {
		t.Fatalf("reader %+v, parser %+v on %x", got, want, in)
	}
	if consumed := len(in) - r.Len(); consumed != n {
		t.Fatalf("reader consumed %d, parser %d on %x", consumed, n, in)
	}
}

// TestSeedCorpus keeps the committed seeds honest: files named valid* must
// parse and all others must fail.
func TestSeedCorpus(t *testing.T) {
	for fuzzer, parse := range map[string]func([]byte) error{
		"FuzzParseRequest":  func(b []byte) error { _, _, err := ParseRequest(b); return err },
		"FuzzParseResponse": func(b []byte) error { _, _, err := ParseResponse(b); return err },
	} {
		files, err := filepath.Glob(filepath.Join("testdata", "fuzz", fuzzer, "*"))
		if err != nil || len(files) < 5 {
			t.Fatalf("%s: %d seed files, %v", fuzzer, len(files), err)
		}
		for _, file := range files {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
			if len(lines) != 2 || lines[0] != "go test fuzz v1" ||
				!strings.HasPrefix(lines[1], "[]byte(") || !strings.HasSuffix(lines[1], ")") {
				t.Fatalf("%s: not a one-value go test fuzz v1 file", file)
			}
			in, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			err = parse([]byte(in))
			if valid := strings.HasPrefix(filepath.Base(file), "valid"); valid != (err == nil) {
				t.Errorf("%s: parse error %v", file, err)
			}
		}
	}
}
