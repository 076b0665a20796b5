package gossip

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Joining: Join and the one-line errors it returns.

// Join contacts the given gossip addresses (host:port) and exchanges full
// state with each, so that on success this node knows the mesh's members and
// catalog. It returns how many addresses answered; the error is non-nil only
// if none did.
func (g *Gossip) Join(addrs []string) (int, error) {
	if g.closed.Load() {
		return 0, ErrClosed
	}
	if len(addrs) == 0 {
		return 0, errors.New("gossip: join: no addresses")
	}
	var errs []string
	n := 0
	var seed netip.AddrPort
	for _, a := range addrs {
		k, err := g.ml.Join([]string{a})
		n += k
		if err != nil {
			errs = append(errs, joinError(a, err))
		}
		if k > 0 {
			seed, _ = netip.ParseAddrPort(a) // zero for a host name: then any member may be the first sync's
		}
	}
	if n > 0 {
		// The seeds' state lacks the members they held suspect, and
		// broadcasts sent before this node was known never reached it:
		// catch-up syncs with other members soon (catchup.go).
		g.kickCatchUp(seed)
		if len(errs) > 0 {
			g.log.Warn("gossip: some join addresses failed", "joined", n, "errors", strings.Join(errs, "; "))
		}
		return n, nil
	}
	return 0, errors.New(strings.Join(errs, "; "))
}

// joinError turns memberlist's multi-line join error into one line and says
// so when the likely cause is a different cluster key.
func joinError(addr string, err error) string {
	var causes []string
	var multi interface{ WrappedErrors() []error }
	if errors.As(err, &multi) {
		for _, e := range multi.WrappedErrors() {
			causes = append(causes, e.Error())
		}
	} else {
		causes = []string{err.Error()}
	}
	for i, c := range causes {
		if _, rest, ok := strings.Cut(c, "failed to join "); ok {
			if _, after, ok := strings.Cut(rest, ": "); ok {
				c = after
			}
		}
		causes[i] = c
	}
	cause := strings.Join(causes, "; ")
	if keyMismatch(cause) {
		if !containsAny(cause, decryptFailures) {
			// A hang-up alone may also be the peer's guard refusing a
			// stream beyond its caps (a busy seed); say both.
			return fmt.Sprintf("gossip: join %s: refused or unreadable — cluster key mismatch? or the peer at its gossip stream limit (%s)", addr, cause)
		}
		return fmt.Sprintf("gossip: join %s: refused or unreadable — cluster key mismatch? (%s)", addr, cause)
	}
	return fmt.Sprintf("gossip: join %s: %s", addr, cause)
}

// keyMismatch reports whether a join failure looks like the peer uses
// another cluster key: its reply could not be decrypted, or it hung up on us
// after reading our (undecryptable) state.
func keyMismatch(cause string) bool {
	return containsAny(cause, decryptFailures) ||
		containsAny(cause, []string{
			"remote state is encrypted and encryption is not configured",
			"encryption is configured but remote state is not encrypted",
			"EOF",
			"connection reset by peer",
			"remote error",
		})
}
