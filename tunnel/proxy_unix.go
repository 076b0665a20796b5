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
func copyFromTCP(c *net.TCPConn, write func([]byte) bool) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return copyGeneric(c, write)
	}
	for {
		var (
			bp   *[]byte
			n    int
			rerr error
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
				return false
			}
			return true
		})
		if err != nil {
			return err // deadline (an abort) or closed
		}
		if rerr != nil {
			copyBufs.Put(bp)
			return os.NewSyscallError("read", rerr)
		}
		if n == 0 {
			copyBufs.Put(bp)
			return io.EOF
		}
		ok := write((*bp)[:n])
		copyBufs.Put(bp)
		if !ok {
			return errWriteFailed
		}
	}
}
