package wire

import (
	"encoding/binary"
	"fmt"
)

// Fields: the encoding of byte strings as a sequence of fields, shared by
// the formats that use it (the gossip catalog record, the certificate):
// uvarints and varints (encoding/binary), single bytes, fixed-size runs,
// and strings prefixed by their length as a uvarint (AppendString). Each
// format names its fields and their limits; this is only the mechanism.

// AppendString appends s prefixed by its length as a uvarint.
func AppendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// Decoder reads fields from Buf, which it advances past each one. The
// first error sticks: it is kept in Err, and every later read returns a
// zero value and leaves Buf alone. Every error wraps Malformed, the
// format's own error, and names the field (what). A Decoder never panics
// on any input and allocates nothing: Bytes and Fixed return sub-slices
// of Buf.
type Decoder struct {
	Buf       []byte // the bytes not read yet
	Err       error  // the first error; nil while every read succeeded
	Malformed error  // what every error wraps (set before the first read)
}

// Fail records the error format describes (wrapping Malformed), unless
// there is one already.
func (d *Decoder) Fail(format string, args ...any) {
	if d.Err == nil {
		d.Err = fmt.Errorf("%w: %s", d.Malformed, fmt.Sprintf(format, args...))
	}
}

// Uvarint reads a uvarint.
func (d *Decoder) Uvarint(what string) uint64 {
	if d.Err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.Buf)
	if n <= 0 {
		d.Fail("bad %s", what)
		return 0
	}
	d.Buf = d.Buf[n:]
	return v
}

// Varint reads a varint.
func (d *Decoder) Varint(what string) int64 {
	if d.Err != nil {
		return 0
	}
	v, n := binary.Varint(d.Buf)
	if n <= 0 {
		d.Fail("bad %s", what)
		return 0
	}
	d.Buf = d.Buf[n:]
	return v
}

// Byte reads one byte.
func (d *Decoder) Byte(what string) byte {
	if b := d.Fixed(what, 1); b != nil {
		return b[0]
	}
	return 0
}

// Fixed reads the next n bytes (nil on error).
func (d *Decoder) Fixed(what string, n int) []byte {
	if d.Err != nil {
		return nil
	}
	if n < 0 || len(d.Buf) < n {
		d.Fail("truncated %s", what)
		return nil
	}
	v := d.Buf[:n]
	d.Buf = d.Buf[n:]
	return v
}

// Bytes reads a string prefixed by its length as a uvarint (AppendString),
// at most limit bytes long (nil on error).
func (d *Decoder) Bytes(what string, limit int) []byte {
	n := d.Uvarint(what + " length")
	if d.Err != nil {
		return nil
	}
	if n > uint64(max(limit, 0)) || n > uint64(len(d.Buf)) {
		d.Fail("%s of %d bytes (limit %d, %d left)", what, n, limit, len(d.Buf))
		return nil
	}
	v := d.Buf[:n]
	d.Buf = d.Buf[n:]
	return v
}
