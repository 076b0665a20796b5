package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

var errTestMalformed = errors.New("test: malformed")

func TestAppendString(t *testing.T) {
	for _, tt := range []struct {
		s    string
		want []byte
	}{
		{"", []byte{0}},
		{"ab", []byte{2, 'a', 'b'}},
		{strings.Repeat("x", 200), append([]byte{200, 1}, strings.Repeat("x", 200)...)},
	} {
		if got := AppendString([]byte("p"), tt.s); !bytes.Equal(got, append([]byte("p"), tt.want...)) {
			t.Errorf("AppendString(%q) = %x, want p+%x", tt.s, got, tt.want)
		}
	}
}

// TestDecoder steps a Decoder through each kind of field, well-formed and
// not; the error message is what the formats built on it report.
func TestDecoder(t *testing.T) {
	steps := []struct {
		name    string
		in      []byte
		read    func(d *Decoder) any
		want    any
		wantErr string // "" for none
		left    int
	}{
		{"uvarint", []byte{0xac, 0x02, 9}, func(d *Decoder) any { return d.Uvarint("n") }, uint64(300), "", 1},
		{"uvarint truncated", []byte{0x80}, func(d *Decoder) any { return d.Uvarint("n") }, uint64(0), "test: malformed: bad n", 1},
		{"uvarint overflow", bytes.Repeat([]byte{0xff}, 11), func(d *Decoder) any { return d.Uvarint("n") }, uint64(0), "test: malformed: bad n", 11},
		{"varint", []byte{0x03}, func(d *Decoder) any { return d.Varint("w") }, int64(-2), "", 0},
		{"varint empty", nil, func(d *Decoder) any { return d.Varint("w") }, int64(0), "test: malformed: bad w", 0},
		{"byte", []byte{7, 8}, func(d *Decoder) any { return d.Byte("flags") }, byte(7), "", 1},
		{"byte empty", nil, func(d *Decoder) any { return d.Byte("flags") }, byte(0), "test: malformed: truncated flags", 0},
		{"fixed", []byte{1, 2, 3}, func(d *Decoder) any { return string(d.Fixed("key", 2)) }, "\x01\x02", "", 1},
		{"fixed short", []byte{1}, func(d *Decoder) any { return d.Fixed("key", 2) == nil }, true, "test: malformed: truncated key", 1},
		{"bytes", []byte{2, 'h', 'i', 0}, func(d *Decoder) any { return string(d.Bytes("name", 10)) }, "hi", "", 1},
		{"bytes empty", []byte{0}, func(d *Decoder) any { return string(d.Bytes("name", 10)) }, "", "", 0},
		{"bytes over limit", []byte{3, 'a', 'b', 'c'}, func(d *Decoder) any { return d.Bytes("name", 2) == nil }, true,
			"test: malformed: name of 3 bytes (limit 2, 3 left)", 3},
		{"bytes overrun", []byte{5, 'a'}, func(d *Decoder) any { return d.Bytes("name", 10) == nil }, true,
			"test: malformed: name of 5 bytes (limit 10, 1 left)", 1},
		{"bytes huge length", binary.AppendUvarint(nil, 1<<63), func(d *Decoder) any { return d.Bytes("name", 10) == nil }, true,
			"test: malformed: name of 9223372036854775808 bytes (limit 10, 0 left)", 0},
		{"bytes bad length", []byte{0x80}, func(d *Decoder) any { return d.Bytes("name", 10) == nil }, true,
			"test: malformed: bad name length", 1},
		{"the first error sticks", []byte{0x80, 0x80}, func(d *Decoder) any {
			d.Uvarint("first")
			d.Fail("second")
			return []any{d.Byte("b"), d.Fixed("f", 1) == nil, d.Bytes("s", 9) == nil, d.Uvarint("u"), d.Varint("v")}
		}, []any{byte(0), true, true, uint64(0), int64(0)}, "test: malformed: bad first", 2},
		{"fail", []byte{1}, func(d *Decoder) any { d.Fail("%d exports", 3); return d.Byte("b") }, byte(0),
			"test: malformed: 3 exports", 1},
	}
	for _, s := range steps {
		d := Decoder{Buf: s.in, Malformed: errTestMalformed}
		got := s.read(&d)
		if !equalAny(got, s.want) {
			t.Errorf("%s: read %v, want %v", s.name, got, s.want)
		}
		switch {
		case s.wantErr == "" && d.Err != nil:
			t.Errorf("%s: error %v", s.name, d.Err)
		case s.wantErr != "" && (d.Err == nil || d.Err.Error() != s.wantErr || !errors.Is(d.Err, errTestMalformed)):
			t.Errorf("%s: error %v, want %q wrapping Malformed", s.name, d.Err, s.wantErr)
		}
		if len(d.Buf) != s.left {
			t.Errorf("%s: %d bytes left, want %d", s.name, len(d.Buf), s.left)
		}
	}
}

func equalAny(a, b any) bool {
	as, aok := a.([]any)
	bs, bok := b.([]any)
	if aok != bok {
		return false
	}
	if !aok {
		return a == b
	}
	if len(as) != len(bs) {
		return false
	}
	for i := range as {
		if as[i] != bs[i] {
			return false
		}
	}
	return true
}

// FuzzDecoder reads arbitrary input as a program of field reads (each
// opcode byte picks one) and checks that a Decoder never panics, only
// moves forward through its input, returns results within their limits,
// and stops for good at the first error; and that strings it encodes
// decode back.
func FuzzDecoder(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4}, []byte{2, 'h', 'i', 0xac, 0x02, 3, 9, 9, 9})
	f.Add([]byte{3, 3, 3}, []byte{0x80})
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, ops, in []byte) {
		d := Decoder{Buf: in, Malformed: errTestMalformed}
		for _, op := range ops {
			before, failed := d.Buf, d.Err != nil
			limit := int(op >> 3)
			switch op % 5 {
			case 0:
				d.Uvarint("u")
			case 1:
				d.Varint("v")
			case 2:
				d.Byte("b")
			case 3:
				if v := d.Bytes("s", limit); len(v) > limit {
					t.Fatalf("Bytes returned %d bytes over limit %d", len(v), limit)
				}
			case 4:
				if v := d.Fixed("f", limit); v != nil && len(v) != limit {
					t.Fatalf("Fixed(%d) returned %d bytes", limit, len(v))
				}
			}
			if len(d.Buf) > len(before) || !bytes.Equal(before[len(before)-len(d.Buf):], d.Buf) {
				t.Fatalf("Buf is not a suffix of what it was")
			}
			if failed && len(d.Buf) != len(before) {
				t.Fatalf("a read after an error consumed input")
			}
			if d.Err != nil && !errors.Is(d.Err, errTestMalformed) {
				t.Fatalf("error %v does not wrap Malformed", d.Err)
			}
		}
		// Round trip: in as a string decodes back whole.
		e := Decoder{Buf: AppendString(nil, string(in)), Malformed: errTestMalformed}
		if got := e.Bytes("s", len(in)); e.Err != nil || !bytes.Equal(got, in) || len(e.Buf) != 0 {
			t.Fatalf("AppendString round trip: %x, %v, %d left", got, e.Err, len(e.Buf))
		}
	})
}
