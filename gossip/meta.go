package gossip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/hashicorp/memberlist"

	"github.com/meshd/meshd/internal/key"
)

// metaVersion is the first byte of every node meta this package writes.
const metaVersion = 1

// maxSiteLen bounds Meta.Site so that the encoded meta always fits in
// memberlist.MetaMaxSize (512 bytes).
const maxSiteLen = 255

// maxVersionLen bounds Meta.Version (longer ones are cut).
const maxVersionLen = 64

// Node meta wire layout, version 1 (at most 1+1+255+32+19+19+1+64 = 392 bytes):
//
//	version   u8  = 1
//	site      u8 length, then that many bytes (UTF-8)
//	publickey 32 bytes
//	tunnel    addrport
//	relay     addrport
//	build     u8 length, then that many bytes: the node's meshd version
//	          (appended later; absent in metas of older nodes)
//
//	addrport  = family u8 (0: none, 4: IPv4, 6: IPv6), then, unless family is 0,
//	            the address (4 or 16 bytes) and the port (u16, big endian).
//
// Bytes after the build field are ignored, so later versions may append
// fields. IPv6 zones are not carried; IPv4-mapped IPv6 addresses are sent as
// IPv4.

var errBadMeta = errors.New("gossip: malformed node meta")

// encodeMeta returns the wire form of m.
func encodeMeta(m Meta) ([]byte, error) {
	if len(m.Site) > maxSiteLen {
		return nil, fmt.Errorf("gossip: site %q is longer than %d bytes", m.Site, maxSiteLen)
	}
	b := make([]byte, 0, 2+len(m.Site)+key.Len+2*19)
	b = append(b, metaVersion, byte(len(m.Site)))
	b = append(b, m.Site...)
	b = append(b, m.PublicKey[:]...)
	b = appendAddrPort(b, m.Tunnel)
	b = appendAddrPort(b, m.Relay)
	v := m.Version
	if len(v) > maxVersionLen {
		v = v[:maxVersionLen]
	}
	b = append(b, byte(len(v)))
	b = append(b, v...)
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("gossip: node meta is %d bytes, more than memberlist's %d", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

func appendAddrPort(b []byte, ap netip.AddrPort) []byte {
	if !ap.IsValid() {
		return append(b, 0)
	}
	a := ap.Addr().Unmap().WithZone("")
	if a.Is4() {
		b = append(b, 4)
		a4 := a.As4()
		b = append(b, a4[:]...)
	} else {
		b = append(b, 6)
		a16 := a.As16()
		b = append(b, a16[:]...)
	}
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

// decodeMeta parses a node meta written by encodeMeta. It never panics.
func decodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) < 2 {
		return Meta{}, fmt.Errorf("%w: %d bytes", errBadMeta, len(b))
	}
	if b[0] != metaVersion {
		return Meta{}, fmt.Errorf("%w: unknown version %d", errBadMeta, b[0])
	}
	n := int(b[1])
	b = b[2:]
	if len(b) < n+key.Len {
		return Meta{}, fmt.Errorf("%w: truncated", errBadMeta)
	}
	m.Site = string(b[:n])
	b = b[n:]
	copy(m.PublicKey[:], b[:key.Len])
	b = b[key.Len:]
	var err error
	if m.Tunnel, b, err = readAddrPort(b); err != nil {
		return Meta{}, err
	}
	if m.Relay, b, err = readAddrPort(b); err != nil {
		return Meta{}, err
	}
	if len(b) >= 1 && len(b) >= 1+int(b[0]) { // absent or cut short: older node, no version
		m.Version = string(b[1 : 1+int(b[0])])
	}
	return m, nil
}

func readAddrPort(b []byte) (netip.AddrPort, []byte, error) {
	if len(b) < 1 {
		return netip.AddrPort{}, nil, fmt.Errorf("%w: truncated address", errBadMeta)
	}
	var n int
	switch b[0] {
	case 0:
		return netip.AddrPort{}, b[1:], nil
	case 4:
		n = 4
	case 6:
		n = 16
	default:
		return netip.AddrPort{}, nil, fmt.Errorf("%w: address family %d", errBadMeta, b[0])
	}
	b = b[1:]
	if len(b) < n+2 {
		return netip.AddrPort{}, nil, fmt.Errorf("%w: truncated address", errBadMeta)
	}
	a, _ := netip.AddrFromSlice(b[:n])
	port := binary.BigEndian.Uint16(b[n : n+2])
	return netip.AddrPortFrom(a, port), b[n+2:], nil
}
