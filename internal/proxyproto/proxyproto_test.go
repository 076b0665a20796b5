package proxyproto

import (
	"bufio"
	"bytes"
	"net/netip"
	"testing"
)

func TestHeader(t *testing.T) {
	ap := netip.MustParseAddrPort
	v4s, v4d := ap("192.0.2.7:40000"), ap("127.0.0.1:8080")
	v6s, v6d := ap("[2001:db8::7]:40000"), ap("[::1]:8080")
	tests := []struct {
		version  string
		src, dst netip.AddrPort
		want     string // exact bytes
		wantSrc  netip.AddrPort
	}{
		{V1, v4s, v4d, "PROXY TCP4 192.0.2.7 127.0.0.1 40000 8080\r\n", v4s},
		{V1, v6s, v6d, "PROXY TCP6 2001:db8::7 ::1 40000 8080\r\n", v6s},
		{V1, v4s, v6d, "PROXY TCP6 ::ffff:192.0.2.7 ::1 40000 8080\r\n", ap("[::ffff:192.0.2.7]:40000")},
		{V1, netip.AddrPort{}, v4d, "PROXY UNKNOWN\r\n", netip.AddrPort{}},
		{V2, v4s, v4d, "\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x07\x7f\x00\x00\x01\x9c\x40\x1f\x90", v4s},
		{V2, netip.AddrPort{}, netip.AddrPort{}, "\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00", netip.AddrPort{}},
		{V2, v6s, v6d, "", v6s},
	}
	for _, tc := range tests {
		h, err := Header(tc.version, tc.src, tc.dst)
		if err != nil {
			t.Fatal(err)
		}
		if tc.want != "" && string(h) != tc.want {
			t.Errorf("Header(%s, %v, %v) = %q; want %q", tc.version, tc.src, tc.dst, h, tc.want)
		}
		r := bufio.NewReader(bytes.NewReader(append(h, "payload"...)))
		v, src, _, err := Read(r)
		if err != nil || v != tc.version || src != tc.wantSrc {
			t.Errorf("Read(Header(%s, %v)) = %s %v %v", tc.version, tc.src, v, src, err)
		}
		if rest, _ := r.Peek(7); string(rest) != "payload" {
			t.Errorf("%s: Read left %q", tc.version, rest)
		}
	}
	if _, err := Header("v3", v4s, v4d); err == nil {
		t.Error("Header(v3) succeeded")
	}
	if _, _, _, err := Read(bufio.NewReader(bytes.NewReader([]byte("GET / HTTP/1.1\r\n")))); err != ErrNoHeader {
		t.Errorf("Read(http) = %v", err)
	}
}
