package node

import (
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/meshd/meshd/internal/ratelimit"
)

// listenControl creates the control socket at path with mode 0600 from the
// start: it is bound inside a fresh 0700 directory next to path, chmod'ed
// there (where nobody else can reach it), then renamed into place, so there
// is no moment at which another user could connect. The caller has removed
// any stale file at path.
func listenControl(path string) (*net.UnixListener, error) {
	dir, err := os.MkdirTemp(filepath.Dir(path), ".meshd-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(dir)
	tmp := filepath.Join(dir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false) // the socket moves; close() removes path
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, err
	}
	return ln, nil
}

// ownerListener serves only connections from processes of the node's own
// user or root (SO_PEERCRED where the system has it); others are closed at
// accept, and logged at most once a second. The socket's mode already keeps
// other users out; this holds even if the mode or the directory is changed
// by hand.
type ownerListener struct {
	*net.UnixListener
	uid  int
	log  *slog.Logger
	gate *ratelimit.Every
}

func newOwnerListener(ln *net.UnixListener, lg *slog.Logger) *ownerListener {
	return &ownerListener{UnixListener: ln, uid: os.Geteuid(), log: lg, gate: ratelimit.NewEvery(time.Second)}
}

func (l *ownerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		uid, pid, err := peerCred(c)
		if err != nil || (uid != 0 && uid != l.uid) {
			c.Close()
			if ok, n := l.gate.Allow(time.Now()); ok {
				args := []any{"uid", uid, "pid", pid, "owner_uid", l.uid}
				if err != nil {
					args = append(args, "err", err)
				}
				if n > 0 {
					args = append(args, "suppressed", n)
				}
				l.log.Warn("control socket: connection from another user refused", args...)
			}
			continue
		}
		return c, nil
	}
}
