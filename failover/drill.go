package failover

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Drill orders (docs/formats.md) travel over the already encrypted gossip and are
// additionally authenticated with an HMAC keyed by the cluster key.
//
// Wire format, version 1 (integers big-endian):
//
//	offset  size  field
//	0       1     version, drillVersion (1)
//	1       1     flags: bit 0 cancel; other bits are ignored
//	2       16    ID
//	18      8     Issued, int64 Unix milliseconds (sender clock)
//	26      8     Duration, int64 milliseconds, >= 0
//	34      1     len(Site), 1..255
//	35      n     Site
//	35+n    1     len(Origin), 0..255
//	36+n    m     Origin
//	36+n+m  k     unknown trailing fields, ignored by version 1 receivers
//	end-32  32    HMAC-SHA256(K, every preceding byte)
//
// where K = HMAC-SHA256(cluster key, "meshd drill order v1"). A whole
// order is at most MaxDrillOrderSize bytes.
const (
	drillVersion    = 1
	drillFlagCancel = 1 << 0
	drillFixedLen   = 34 // version, flags, ID, Issued, Duration
	drillMACLen     = sha256.Size
	drillMinLen     = drillFixedLen + 1 + 1 + 1 + drillMACLen // one-byte site, no origin
	drillKeyLabel   = "meshd drill order v1"

	// MaxDrillOrderSize is the largest sealed order OpenDrillOrder accepts.
	MaxDrillOrderSize = 1024
	// MaxDrillDuration caps a drill; receivers enforce it on their own clock.
	MaxDrillDuration = 10 * time.Minute
	// DrillClockWindow is how far an order's Issued may be from the
	// receiver's clock, either way, before OpenDrillOrder rejects it.
	DrillClockWindow = 5 * time.Minute
	// drillSeenGrace is how long after its end a drill's ID is remembered.
	drillSeenGrace = 10 * time.Minute
	// maxDrillSeen bounds the IDs a Blackhole remembers.
	maxDrillSeen = 1024
)

// Errors returned (wrapped) by OpenDrillOrder and Seal.
var (
	ErrDrillAuth      = errors.New("drill order not authentic")        // bad MAC or no key
	ErrDrillStale     = errors.New("drill order outside clock window") // Issued too far from now
	ErrDrillMalformed = errors.New("malformed drill order")            // bad size, version or field
)

// DrillOrder asks every node of Site to cut its tunnel traffic to and from
// nodes outside Site for Duration, or, with Cancel, to end drill ID now.
type DrillOrder struct {
	ID       [16]byte      // random (NewDrillID), for idempotence and replay protection
	Site     string        // the site to cut off; 1..255 bytes
	Duration time.Duration // milliseconds on the wire; capped at MaxDrillDuration by the receiver
	Issued   time.Time     // sender clock, Unix milliseconds on the wire
	Origin   string        // node that started the drill; 0..255 bytes
	Cancel   bool          // end the drill with this ID now
}

// NewDrillID returns a random drill ID.
func NewDrillID() [16]byte {
	var id [16]byte
	rand.Read(id[:]) // never fails (crypto/rand crashes the program instead)
	return id
}

// drillKey derives the MAC key from the cluster key.
func drillKey(clusterKey []byte) []byte {
	m := hmac.New(sha256.New, clusterKey)
	m.Write([]byte(drillKeyLabel))
	return m.Sum(nil)
}

// drillMAC appends the MAC of body to dst.
func drillMAC(dst, body, clusterKey []byte) []byte {
	m := hmac.New(sha256.New, drillKey(clusterKey))
	m.Write(body)
	return m.Sum(dst)
}

// Seal encodes o in the version 1 wire format and appends its MAC. It
// fails with ErrDrillAuth for an empty key and ErrDrillMalformed when a
// field cannot be encoded: empty or over-long Site, over-long Origin,
// negative Duration, zero Issued. Durations are truncated to milliseconds.
func (o DrillOrder) Seal(clusterKey []byte) ([]byte, error) {
	switch {
	case len(clusterKey) == 0:
		return nil, fmt.Errorf("failover: seal drill order: empty cluster key: %w", ErrDrillAuth)
	case len(o.Site) == 0 || len(o.Site) > 255:
		return nil, fmt.Errorf("failover: seal drill order: site of %d bytes: %w", len(o.Site), ErrDrillMalformed)
	case len(o.Origin) > 255:
		return nil, fmt.Errorf("failover: seal drill order: origin of %d bytes: %w", len(o.Origin), ErrDrillMalformed)
	case o.Duration < 0:
		return nil, fmt.Errorf("failover: seal drill order: negative duration %v: %w", o.Duration, ErrDrillMalformed)
	case o.Issued.IsZero():
		return nil, fmt.Errorf("failover: seal drill order: issued time not set: %w", ErrDrillMalformed)
	}
	b := make([]byte, 0, drillFixedLen+2+len(o.Site)+len(o.Origin)+drillMACLen)
	var flags byte
	if o.Cancel {
		flags |= drillFlagCancel
	}
	b = append(b, drillVersion, flags)
	b = append(b, o.ID[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(o.Issued.UnixMilli()))
	b = binary.BigEndian.AppendUint64(b, uint64(o.Duration.Milliseconds()))
	b = append(b, byte(len(o.Site)))
	b = append(b, o.Site...)
	b = append(b, byte(len(o.Origin)))
	b = append(b, o.Origin...)
	return drillMAC(b, b, clusterKey), nil
}

// OpenDrillOrder verifies and decodes an order sealed with clusterKey. It
// checks, in this order, the size (at most MaxDrillOrderSize) and version
// (ErrDrillMalformed), the MAC in constant time (ErrDrillAuth; also for an
// empty key), the fields (ErrDrillMalformed), and that Issued lies within
// DrillClockWindow of now (ErrDrillStale). Nothing but the size and version
// is looked at before the MAC has been verified. Issued is returned in UTC.
//
// OpenDrillOrder does not cap Duration or detect replays within the clock
// window; Blackhole.Apply does.
func OpenDrillOrder(b []byte, clusterKey []byte, now time.Time) (DrillOrder, error) {
	if len(b) > MaxDrillOrderSize || len(b) < drillMinLen {
		return DrillOrder{}, fmt.Errorf("failover: drill order of %d bytes: %w", len(b), ErrDrillMalformed)
	}
	if b[0] != drillVersion {
		return DrillOrder{}, fmt.Errorf("failover: drill order version %d: %w", b[0], ErrDrillMalformed)
	}
	if len(clusterKey) == 0 {
		return DrillOrder{}, fmt.Errorf("failover: open drill order: empty cluster key: %w", ErrDrillAuth)
	}
	body, mac := b[:len(b)-drillMACLen], b[len(b)-drillMACLen:]
	if !hmac.Equal(mac, drillMAC(nil, body, clusterKey)) {
		return DrillOrder{}, fmt.Errorf("failover: drill order: bad MAC: %w", ErrDrillAuth)
	}
	o, err := parseDrillBody(body)
	if err != nil {
		return DrillOrder{}, fmt.Errorf("failover: drill order: %v: %w", err, ErrDrillMalformed)
	}
	if d := now.Sub(o.Issued); d > DrillClockWindow || d < -DrillClockWindow {
		return DrillOrder{}, fmt.Errorf("failover: drill order %x issued %v, %v from now: %w", o.ID[:4], o.Issued, d.Round(time.Second), ErrDrillStale)
	}
	return o, nil
}

// parseDrillBody decodes an authenticated body (MAC removed).
func parseDrillBody(body []byte) (DrillOrder, error) {
	var o DrillOrder
	if len(body) < drillFixedLen+1 {
		return o, errors.New("truncated")
	}
	o.Cancel = body[1]&drillFlagCancel != 0
	copy(o.ID[:], body[2:18])
	issued := int64(binary.BigEndian.Uint64(body[18:26]))
	dur := int64(binary.BigEndian.Uint64(body[26:34]))
	if dur < 0 || dur > int64(1<<63-1)/int64(time.Millisecond) {
		return o, fmt.Errorf("duration %dms out of range", dur)
	}
	o.Issued = time.UnixMilli(issued).UTC()
	o.Duration = time.Duration(dur) * time.Millisecond
	rest := body[drillFixedLen:]
	site, rest, ok := cutString(rest)
	if !ok || site == "" {
		return o, errors.New("bad site")
	}
	origin, _, ok := cutString(rest)
	if !ok {
		return o, errors.New("bad origin")
	}
	o.Site, o.Origin = site, origin
	return o, nil
}

// cutString splits a one-byte length-prefixed string off b.
func cutString(b []byte) (s string, rest []byte, ok bool) {
	if len(b) < 1 || len(b)-1 < int(b[0]) {
		return "", nil, false
	}
	n := int(b[0])
	return string(b[1 : 1+n]), b[1+n:], true
}

// Blackhole is a node's state of received drill orders: whether its site
// is currently cut off, and which drill IDs it has seen. The zero value is
// ready to use; it is safe for concurrent use.
//
// Apply does not compare o.Site with the node's own site: the caller
// passes only orders for its own site.
type Blackhole struct {
	mu     sync.Mutex
	seen   map[[16]byte]*drillState // guarded by mu; every remembered ID
	active map[[16]byte]*drillState // guarded by mu; the subset started and not cancelled, pruned by Apply
}

// drillState is what a Blackhole remembers about one drill ID.
type drillState struct {
	site     string
	until    time.Time // the cut ends then; zero or past: not active
	forgetAt time.Time // the ID may be forgotten then
}

// Apply activates, or with o.Cancel ends, drill o.ID at now (the
// receiver's clock) and returns when this drill's cut ends, or the zero
// time if it is not active after the call.
//
// A new drill runs until now + min(o.Duration, MaxDrillDuration); Issued
// is not used, so a sender's clock cannot lengthen it. Applying the same
// ID again does not extend it, and an ID that has ended (expired or
// cancelled) is not started again. A cancel for an ID not yet seen is
// remembered, so the order it cancels is ignored should it arrive later.
// IDs are remembered until 10 minutes after their drill ends, and at most
// 1024 of them, the soonest to be forgotten being dropped first; that
// covers replays within OpenDrillOrder's clock window.
func (b *Blackhole) Apply(o DrillOrder, now time.Time) (until time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pruneLocked(now)
	if s := b.seen[o.ID]; s != nil {
		if o.Cancel {
			s.until = time.Time{}
			s.forgetAt = now.Add(drillSeenGrace)
			delete(b.active, o.ID)
		}
		if now.Before(s.until) {
			return s.until
		}
		return time.Time{}
	}
	s := &drillState{site: o.Site}
	if !o.Cancel && o.Duration > 0 {
		s.until = now.Add(min(o.Duration, MaxDrillDuration))
	}
	s.forgetAt = now.Add(drillSeenGrace)
	if s.until.After(now) {
		s.forgetAt = s.until.Add(drillSeenGrace)
	}
	if b.seen == nil {
		b.seen = make(map[[16]byte]*drillState)
		b.active = make(map[[16]byte]*drillState)
	}
	if len(b.seen) >= maxDrillSeen {
		b.evictLocked()
	}
	b.seen[o.ID] = s
	if !s.until.IsZero() {
		b.active[o.ID] = s
	}
	return s.until
}

// pruneLocked forgets IDs whose time has come and drops ended drills from
// the active set.
func (b *Blackhole) pruneLocked(now time.Time) {
	for id, s := range b.active {
		if !now.Before(s.until) {
			delete(b.active, id)
		}
	}
	for id, s := range b.seen {
		if !now.Before(s.forgetAt) {
			delete(b.seen, id)
		}
	}
}

// evictLocked drops the ID due to be forgotten soonest. Ended drills go
// before active ones, which are forgotten only 10 minutes after their end.
func (b *Blackhole) evictLocked() {
	var (
		oldest [16]byte
		at     time.Time
	)
	for id, s := range b.seen {
		if at.IsZero() || s.forgetAt.Before(at) {
			oldest, at = id, s.forgetAt
		}
	}
	delete(b.seen, oldest)
	delete(b.active, oldest)
}

// Active reports whether the node is cut off at now, for which site and
// until when. With several drills active it reports the one that ends
// last. Drills end by themselves: no call is needed when one expires.
func (b *Blackhole) Active(now time.Time) (site string, until time.Time, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.active {
		if now.Before(s.until) && s.until.After(until) {
			site, until, ok = s.site, s.until, true
		}
	}
	return site, until, ok
}

// Signed drill orders (README "Identity and policy"). A node sends its sealed order wrapped with
// an Ed25519 signature by its own signing key, so that receivers know which
// node issued it (the MAC only proves the cluster key):
//
//	0       1     drillSignedVersion (2)
//	1       2     length of the sealed order, big endian
//	3       n     the sealed order (version 1, above)
//	3+n     64    Ed25519 signature over drillSigContext ‖ sealed order
const (
	drillSignedVersion = 2
	drillSigContext    = "meshd drill order signature v1\x00"
)

// SignDrillOrder wraps a sealed order with k's signature.
func SignDrillOrder(sealed []byte, k ed25519.PrivateKey) []byte {
	b := make([]byte, 0, 3+len(sealed)+ed25519.SignatureSize)
	b = append(b, drillSignedVersion)
	b = binary.BigEndian.AppendUint16(b, uint16(len(sealed)))
	b = append(b, sealed...)
	return append(b, ed25519.Sign(k, append([]byte(drillSigContext), sealed...))...)
}

// SplitSignedDrillOrder returns the sealed order and signature of a signed
// order; an unsigned (version 1) order is returned whole with a nil
// signature.
func SplitSignedDrillOrder(b []byte) (sealed, sig []byte, err error) {
	if len(b) == 0 || len(b) > MaxDrillOrderSize+3+ed25519.SignatureSize {
		return nil, nil, fmt.Errorf("failover: drill order of %d bytes: %w", len(b), ErrDrillMalformed)
	}
	if b[0] == drillVersion {
		return b, nil, nil
	}
	if b[0] != drillSignedVersion || len(b) < 3 {
		return nil, nil, fmt.Errorf("failover: drill order version %d: %w", b[0], ErrDrillMalformed)
	}
	n := int(binary.BigEndian.Uint16(b[1:3]))
	if len(b) != 3+n+ed25519.SignatureSize {
		return nil, nil, fmt.Errorf("failover: signed drill order of %d bytes holds %d: %w", len(b), n, ErrDrillMalformed)
	}
	return b[3 : 3+n], b[3+n:], nil
}

// VerifyDrillSignature reports whether sig is pub's signature of sealed.
func VerifyDrillSignature(sealed, sig []byte, pub ed25519.PublicKey) bool {
	return len(pub) == ed25519.PublicKeySize && len(sig) == ed25519.SignatureSize &&
		ed25519.Verify(pub, append([]byte(drillSigContext), sealed...), sig)
}
