// Package proxyproto writes (and, for tests and tools, reads) the PROXY
// protocol header of HAProxy's specification, versions 1 (text) and 2
// (binary), for TCP: an exporter with `proxy_protocol: v1|v2` sends it to
// its target first, so the backend sees the real client address and port
// as behind a cloud load balancer that preserves the client IP.
//
// https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
package proxyproto

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// Versions as written in the config.
const (
	V1 = "v1"
	V2 = "v2"
)

// sigV2 starts every version 2 header.
var sigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")

// maxV1 is the longest version 1 line, CRLF included (spec: 107).
const maxV1 = 107

// Header returns the header of version (V1 or V2) for a TCP connection from
// src to dst. Without both addresses (an importer that did not send them)
// it is v1 "PROXY UNKNOWN" or a v2 LOCAL header: the backend then uses the
// connection's own addresses. Mixed families are sent as IPv6 (IPv4
// addresses mapped).
func Header(version string, src, dst netip.AddrPort) ([]byte, error) {
	known := src.IsValid() && dst.IsValid()
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	v4 := known && s.Is4() && d.Is4()
	if known && !v4 {
		s, d = netip.AddrFrom16(s.As16()), netip.AddrFrom16(d.As16())
	}
	switch version {
	case V1:
		if !known {
			return []byte("PROXY UNKNOWN\r\n"), nil
		}
		fam := "TCP6"
		if v4 {
			fam = "TCP4"
		}
		return fmt.Appendf(nil, "PROXY %s %s %s %d %d\r\n", fam, s, d, src.Port(), dst.Port()), nil
	case V2:
		b := append([]byte(nil), sigV2...)
		if !known {
			return append(b, 0x20, 0x00, 0, 0), nil // LOCAL, UNSPEC
		}
		if v4 {
			b = append(b, 0x21, 0x11, 0, 12)
			s4, d4 := s.As4(), d.As4()
			b = append(b, s4[:]...)
			b = append(b, d4[:]...)
		} else {
			b = append(b, 0x21, 0x21, 0, 36)
			s16, d16 := s.As16(), d.As16()
			b = append(b, s16[:]...)
			b = append(b, d16[:]...)
		}
		b = binary.BigEndian.AppendUint16(b, src.Port())
		return binary.BigEndian.AppendUint16(b, dst.Port()), nil
	}
	return nil, fmt.Errorf("proxyproto: unknown version %q (want v1 or v2)", version)
}

// ErrNoHeader: the stream does not start with a PROXY header.
var ErrNoHeader = errors.New("proxyproto: no PROXY protocol header")

// Read reads a v1 or v2 header from r and returns the version and the
// addresses it carries (zero for UNKNOWN/LOCAL). It reads exactly the
// header, leaving the payload in r.
func Read(r *bufio.Reader) (version string, src, dst netip.AddrPort, err error) {
	p, err := r.Peek(len(sigV2))
	if err == nil && bytes.Equal(p, sigV2) {
		return readV2(r)
	}
	if p, _ := r.Peek(6); string(p) == "PROXY " {
		return readV1(r)
	}
	return "", src, dst, ErrNoHeader
}

func readV1(r *bufio.Reader) (string, netip.AddrPort, netip.AddrPort, error) {
	var line []byte
	for len(line) < maxV1 {
		c, err := r.ReadByte()
		if err != nil {
			return "", netip.AddrPort{}, netip.AddrPort{}, fmt.Errorf("proxyproto: v1: %w", err)
		}
		line = append(line, c)
		if c == '\n' {
			break
		}
	}
	s, ok := strings.CutSuffix(string(line), "\r\n")
	if !ok {
		return "", netip.AddrPort{}, netip.AddrPort{}, fmt.Errorf("proxyproto: v1: line not ended by CRLF within %d bytes", maxV1)
	}
	f := strings.Fields(s)
	if len(f) == 2 && f[1] == "UNKNOWN" {
		return V1, netip.AddrPort{}, netip.AddrPort{}, nil
	}
	if len(f) != 6 || (f[1] != "TCP4" && f[1] != "TCP6") {
		return "", netip.AddrPort{}, netip.AddrPort{}, fmt.Errorf("proxyproto: v1: malformed line %q", s)
	}
	sa, err1 := netip.ParseAddr(f[2])
	da, err2 := netip.ParseAddr(f[3])
	sp, err3 := strconv.ParseUint(f[4], 10, 16)
	dp, err4 := strconv.ParseUint(f[5], 10, 16)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return "", netip.AddrPort{}, netip.AddrPort{}, fmt.Errorf("proxyproto: v1: %q: %w", s, err)
	}
	return V1, netip.AddrPortFrom(sa, uint16(sp)), netip.AddrPortFrom(da, uint16(dp)), nil
}

func readV2(r *bufio.Reader) (string, netip.AddrPort, netip.AddrPort, error) {
	var hdr [16]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return "", netip.AddrPort{}, netip.AddrPort{}, fmt.Errorf("proxyproto: v2: %w", err)
	}
	verCmd, fam, n := hdr[12], hdr[13], int(binary.BigEndian.Uint16(hdr[14:]))
	if verCmd>>4 != 2 || n > 512 {
		return "", netip.AddrPort{}, netip.AddrPort{}, fmt.Errorf("proxyproto: v2: version/command %#x, length %d", verCmd, n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return "", netip.AddrPort{}, netip.AddrPort{}, fmt.Errorf("proxyproto: v2: %w", err)
	}
	if verCmd&0xf == 0 { // LOCAL
		return V2, netip.AddrPort{}, netip.AddrPort{}, nil
	}
	switch {
	case fam == 0x11 && n >= 12:
		s, _ := netip.AddrFromSlice(body[0:4])
		d, _ := netip.AddrFromSlice(body[4:8])
		return V2, netip.AddrPortFrom(s, binary.BigEndian.Uint16(body[8:])), netip.AddrPortFrom(d, binary.BigEndian.Uint16(body[10:])), nil
	case fam == 0x21 && n >= 36:
		s, _ := netip.AddrFromSlice(body[0:16])
		d, _ := netip.AddrFromSlice(body[16:32])
		return V2, netip.AddrPortFrom(s, binary.BigEndian.Uint16(body[32:])), netip.AddrPortFrom(d, binary.BigEndian.Uint16(body[34:])), nil
	}
	return "", netip.AddrPort{}, netip.AddrPort{}, fmt.Errorf("proxyproto: v2: family %#x with %d address bytes", fam, n)
}
