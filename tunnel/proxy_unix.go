//go:build unix

package tunnel

import (
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// copyFromTCP reads a TCP connection through its raw descriptor: each
// read takes a pooled buffer and gives it back when the socket has
// nothing more, so a connection waiting in the poller holds no buffer.
// When the socket runs dry after moving data it may return errHandedOff
// instead of waiting (see direction).
func copyFromTCP(c *net.TCPConn, d *direction) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return copyGeneric(c, d.write)
	}
	moved := false
	for {
		var (
			bp   *[]byte
			n    int
			rerr error
			dry  bool
		)
		err := rc.Read(func(fd uintptr) bool {
			bp = copyBufs.Get().(*[]byte)
			for {
				n, rerr = unix.Read(int(fd), *bp)
				if rerr != unix.EINTR {
					break
				}
			}
			if rerr == unix.EAGAIN {
				copyBufs.Put(bp)
				bp = nil
				dry = moved && d.handOff()
				return dry // else park here
			}
			return true
		})
		if err != nil {
			return err // deadline (an abort) or closed
		}
		if dry {
			return errHandedOff
		}
		if rerr != nil {
			copyBufs.Put(bp)
			return os.NewSyscallError("read", rerr)
		}
		if n == 0 {
			copyBufs.Put(bp)
			return io.EOF
		}
		ok := d.write((*bp)[:n])
		copyBufs.Put(bp)
		if !ok {
			return errWriteFailed
		}
		moved = true
	}
}
