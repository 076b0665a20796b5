// Package sdnotify implements the sender side of systemd's service
// notification protocol (sd_notify(3)): one datagram of newline-separated
// VAR=value assignments sent to the unix datagram socket named by
// $NOTIFY_SOCKET ("@name" is the abstract namespace). Without
// $NOTIFY_SOCKET (not started by systemd with Type=notify) every call is a
// no-op.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// Well-known states.
const (
	Ready     = "READY=1"
	Reloading = "RELOADING=1"
	Stopping  = "STOPPING=1"
)

// EnvSocket is the environment variable systemd sets for Type=notify units.
const EnvSocket = "NOTIFY_SOCKET"

// Notify sends the given assignments (like Ready, or "STATUS=...") as one
// datagram. It reports whether a socket was configured; the error is
// non-nil only if sending to it failed.
func Notify(states ...string) (bool, error) {
	path := os.Getenv(EnvSocket)
	if path == "" {
		return false, nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return true, fmt.Errorf("sdnotify: %w", err)
	}
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(strings.Join(states, "\n") + "\n")); err != nil {
		return true, fmt.Errorf("sdnotify: %w", err)
	}
	return true, nil
}

// ExtendTimeout is the EXTEND_TIMEOUT_USEC assignment (systemd 236+): the
// service manager does not time out the current state (here: stopping)
// before d from now, even when that is beyond the unit's TimeoutStopSec.
// A negative d counts as 0.
func ExtendTimeout(d time.Duration) string {
	return fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", max(d, 0).Microseconds())
}

// MonotonicUsec is the MONOTONIC_USEC assignment systemd wants with
// RELOADING=1 (Type=notify-reload): CLOCK_MONOTONIC in microseconds.
func MonotonicUsec() string {
	return fmt.Sprintf("MONOTONIC_USEC=%d", monotonicNow()/1000)
}
