//go:build linux

package tunnel

// A minimal rtnetlink client: just enough to bring a link up and give it
// an IPv6 address and a route, without a third-party netlink library.
//
// Every request is one message, sent with NLM_F_ACK, and answered by one
// NLMSG_ERROR whose error code is 0 on success:
//
//	nlmsghdr (16 bytes) | family header (ifinfomsg/ifaddrmsg/rtmsg) | rtattrs
//	rtattr: len uint16 | type uint16 | value, padded to 4 bytes

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// rtnl is a NETLINK_ROUTE socket in the calling process's network
// namespace. It is not safe for concurrent use.
type rtnl struct {
	fd  int
	seq uint32
}

func openRTNL() (*rtnl, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	return &rtnl{fd: fd}, nil
}

func (r *rtnl) Close() error { return unix.Close(r.fd) }

// request sends one message of type typ (body is the family header and
// attributes) and waits for its acknowledgement.
func (r *rtnl) request(typ uint16, flags uint16, body []byte) error {
	r.seq++
	msg := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body))
	ne := binary.NativeEndian
	ne.PutUint32(msg[0:], uint32(unix.SizeofNlMsghdr+len(body)))
	ne.PutUint16(msg[4:], typ)
	ne.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK|flags)
	ne.PutUint32(msg[8:], r.seq)
	msg = append(msg, body...)
	if err := unix.Sendto(r.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 8192)
	for {
		n, _, err := unix.Recvfrom(r.fd, buf, 0)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Seq != r.seq || m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if len(m.Data) < 4 {
				return fmt.Errorf("short netlink ack")
			}
			if code := int32(ne.Uint32(m.Data)); code != 0 {
				return syscall.Errno(-code)
			}
			return nil
		}
	}
}

// attr appends one rtattr to b.
func attr(b []byte, typ uint16, val []byte) []byte {
	l := unix.SizeofRtAttr + len(val)
	b = binary.NativeEndian.AppendUint16(b, uint16(l))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, val...)
	for l%4 != 0 {
		b = append(b, 0)
		l++
	}
	return b
}

// linkUp sets IFF_UP on the link (RTM_NEWLINK with an ifinfomsg).
func (r *rtnl) linkUp(ifindex int) error {
	b := make([]byte, unix.SizeofIfInfomsg)
	b[0] = unix.AF_UNSPEC
	ne := binary.NativeEndian
	ne.PutUint32(b[4:], uint32(int32(ifindex)))
	ne.PutUint32(b[8:], unix.IFF_UP)  // ifi_flags
	ne.PutUint32(b[12:], unix.IFF_UP) // ifi_change
	if err := r.request(unix.RTM_NEWLINK, 0, b); err != nil {
		return fmt.Errorf("link up: %w", err)
	}
	return nil
}

// addAddr assigns p to the link (RTM_NEWADDR). IPv6 addresses skip
// duplicate address detection, so they can be bound at once.
func (r *rtnl) addAddr(ifindex int, p netip.Prefix) error {
	b := make([]byte, unix.SizeofIfAddrmsg)
	b[0] = family(p.Addr())
	b[1] = uint8(p.Bits())
	if p.Addr().Is6() {
		b[2] = unix.IFA_F_NODAD
	}
	b[3] = unix.RT_SCOPE_UNIVERSE
	binary.NativeEndian.PutUint32(b[4:], uint32(int32(ifindex)))
	ip := p.Addr().AsSlice()
	b = attr(b, unix.IFA_LOCAL, ip)
	b = attr(b, unix.IFA_ADDRESS, ip)
	if err := r.request(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, b); err != nil {
		return fmt.Errorf("add address %s: %w", p, err)
	}
	return nil
}

// addRoute routes dst out of the link (RTM_NEWROUTE, main table).
func (r *rtnl) addRoute(ifindex int, dst netip.Prefix) error {
	b := make([]byte, unix.SizeofRtMsg)
	b[0] = family(dst.Addr())
	b[1] = uint8(dst.Bits()) // rtm_dst_len
	b[4] = unix.RT_TABLE_MAIN
	b[5] = unix.RTPROT_BOOT
	b[6] = unix.RT_SCOPE_UNIVERSE
	if dst.Addr().Is4() {
		b[6] = unix.RT_SCOPE_LINK
	}
	b[7] = unix.RTN_UNICAST
	b = attr(b, unix.RTA_DST, dst.Masked().Addr().AsSlice())
	b = attr(b, unix.RTA_OIF, binary.NativeEndian.AppendUint32(nil, uint32(int32(ifindex))))
	if err := r.request(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, b); err != nil {
		return fmt.Errorf("add route %s: %w", dst, err)
	}
	return nil
}

func family(a netip.Addr) uint8 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}
