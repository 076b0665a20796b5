package tunnel

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Batched UDP on Linux: a run of equal-size WireGuard packets to one peer
// leaves in one sendmsg with UDP_SEGMENT (generic segmentation offload:
// the kernel, or the NIC, cuts it into datagrams), and with UDP_GRO the
// kernel hands consecutive datagrams of one flow up as one large buffer
// with their segment size. On loopback and veth a GSO send stays one
// buffer all the way to the receiving socket: one syscall each way for up
// to 64 packets instead of one per packet.
const (
	maxGSOSegments = 64    // UDP_MAX_SEGMENTS on older kernels
	maxGSOPayload  = 65000 // below the 64 KiB IP datagram limit
)

// udpConn is the bind's socket with batched I/O.
type udpConn struct {
	c   *net.UDPConn
	rc  syscall.RawConn
	gso atomic.Bool // sendmsg with UDP_SEGMENT works here
	gro bool        // the kernel may coalesce what we receive
	is6 bool        // an AF_INET6 socket: IPv4 peers as mapped addresses
}

func newUDPConn(c *net.UDPConn, offload bool) *udpConn {
	la, _ := c.LocalAddr().(*net.UDPAddr)
	u := &udpConn{c: c, is6: la != nil && la.IP.To4() == nil}
	rc, err := c.SyscallConn()
	if err != nil || !offload {
		return u
	}
	u.rc = rc
	rc.Control(func(fd uintptr) {
		// A kernel that knows UDP_SEGMENT answers the getsockopt.
		if _, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT); err == nil {
			u.gso.Store(true)
		}
		u.gro = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
	})
	return u
}

// writeBatch sends bufs to dst, coalescing runs of packets of one size
// (the last of a run may be shorter) into single GSO sends.
func (u *udpConn) writeBatch(bufs [][]byte, dst netip.AddrPort) error {
	if !u.gso.Load() || len(bufs) == 1 || u.rc == nil {
		return u.writeEach(bufs, dst)
	}
	sa := sockaddr(dst, u.is6)
	var oob [unix.SizeofCmsghdr + 8]byte // room for one uint16, aligned
	for start := 0; start < len(bufs); {
		size := len(bufs[start])
		end, total := start+1, size
		for end < len(bufs) && end-start < maxGSOSegments && len(bufs[end]) <= size &&
			total+len(bufs[end]) <= maxGSOPayload {
			total += len(bufs[end])
			end++
			if len(bufs[end-1]) < size {
				break // a shorter packet ends the run
			}
		}
		run := bufs[start:end]
		var err error
		if len(run) == 1 {
			err = u.writeEach(run, dst)
		} else {
			err = u.sendmsg(run, gsoControl(oob[:], size), sa)
			if errors.Is(err, unix.EIO) {
				// GSO refused by the device (checksum offload off, say):
				// stop using it and send these one by one.
				u.gso.Store(false)
				err = u.writeEach(run, dst)
			}
		}
		if err != nil {
			return err
		}
		start = end
	}
	return nil
}

func (u *udpConn) writeEach(bufs [][]byte, dst netip.AddrPort) error {
	for _, b := range bufs {
		if _, err := u.c.WriteToUDPAddrPort(b, dst); err != nil {
			return err
		}
	}
	return nil
}

func (u *udpConn) sendmsg(bufs [][]byte, oob []byte, sa unix.Sockaddr) error {
	var serr error
	err := u.rc.Write(func(fd uintptr) bool {
		_, serr = unix.SendmsgBuffers(int(fd), bufs, oob, sa, 0)
		return serr != unix.EAGAIN
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return &net.OpError{Op: "sendmsg", Net: "udp", Err: serr}
	}
	return nil
}

// gsoControl writes a UDP_SEGMENT control message for segments of size
// into b and returns it.
func gsoControl(b []byte, size int) []byte {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.IPPROTO_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], uint16(size))
	return b[:unix.CmsgSpace(2)]
}

// read reads one datagram, or with GRO a run of coalesced ones, into buf.
// seg is the size of each coalesced datagram (the last may be shorter),
// or n when there is just one.
func (u *udpConn) read(buf, oob []byte) (n, seg int, from netip.AddrPort, err error) {
	n, oobn, _, from, err := u.c.ReadMsgUDPAddrPort(buf, oob)
	if err != nil {
		return 0, 0, from, err
	}
	seg = n
	if u.gro && oobn > 0 {
		if s := groSize(oob[:oobn]); s > 0 && s < n {
			seg = s
		}
	}
	return n, seg, from, nil
}

// oobSize is the control buffer a read needs for the GRO segment size.
const oobSize = 64

// groSize returns the UDP_GRO segment size in a control message, or 0.
func groSize(oob []byte) int {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return 0
		}
		if h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO && l >= unix.CmsgLen(2) {
			data := oob[unix.CmsgLen(0):l]
			if len(data) >= 4 {
				return int(binary.NativeEndian.Uint32(data))
			}
			return int(binary.NativeEndian.Uint16(data))
		}
		oob = oob[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(oob)):]
	}
	return 0
}

func sockaddr(ap netip.AddrPort, is6 bool) unix.Sockaddr {
	a := ap.Addr()
	if !is6 {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.Unmap().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
}
