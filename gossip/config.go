package gossip

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/meshd/meshd/internal/pace"
)

// A Gossip's configuration, its defaults and its validation.

// Config configures a Gossip. The zero value of each optional field means
// its default.
type Config struct {
	Name      string         // unique in the mesh; required
	Bind      netip.AddrPort // memberlist bind (TCP+UDP same port); zero = 0.0.0.0:7946; port 0 = ephemeral
	Advertise netip.AddrPort // zero = Bind (memberlist picks a private IP if Bind's IP is 0.0.0.0); port 0 = bound port
	Key       []byte         // cluster key (16, 24 or 32 bytes); required
	Meta      Meta
	Logger    *slog.Logger // nil = slog.Default()

	// Keys, if set, are every cluster key (rotation): Keys[0] encrypts
	// (and must equal Key), all decrypt. Change them with SetKeys.
	Keys [][]byte
	// SignKey signs this node's records (README "Identity and policy"); nil = a random key for
	// this run. Cert is this node's certificate (pki), carried in its record.
	SignKey ed25519.PrivateKey
	Cert    []byte
	// Identity, if set (pki), vets every other node's record before it is
	// stored: the certificate cert must name the node and bind meta's site
	// and WireGuard key and signKey. A record it refuses is dropped; the
	// check logs the refusal. It is called without locks held, possibly
	// concurrently. Without it, the
	// first signing key seen for a name holds until that node leaves.
	Identity func(name string, meta Meta, cert []byte, signKey ed25519.PublicKey) error
	// Quiet holds this node's catalog record back (not gossiped, not in
	// push/pull) until Announce: a node that may turn out to carry the name
	// of a live member (NameConflict) must not replace that member's record.
	Quiet bool

	// Pacer, if set, gets a beat at every UDP message memberlist sends
	// (it asks for broadcasts to piggyback then: its probe every
	// BeatInterval, answers to others' probes, gossip rounds), and paces
	// this Gossip's own upkeep: the node's unhurried loops ride a wakeup
	// that happens anyway (package pace).
	Pacer *pace.Pacer

	// MaxMembers bounds the other members this node keeps (SPEC §9: nothing
	// from the network grows memory without bound, and a holder of the
	// cluster key can announce any number of names): memberlist ignores an
	// alive message for a new name while this many are listed, dead and
	// left ones included until forgotten. Default DefaultMaxMembers.
	MaxMembers int

	RetainGone        time.Duration // how long dead/left members stay listed; default 10m
	ReconnectInterval time.Duration // how often to retry dead members' addresses; default 5s

	transport memberlist.NodeAwareTransport // replaces memberlist's network transport (tests)
	guardTune func(*guardTransport)         // changes the guard's limits before it starts (tests)
}

// Defaults for Config.
const (
	DefaultBindPort          = 7946
	DefaultRetainGone        = 10 * time.Minute
	DefaultMaxMembers        = 16384
	DefaultReconnectInterval = 5 * time.Second
	DefaultLeaveTimeout      = 5 * time.Second
)

// Validate reports whether c can be used, without applying defaults.
func (c *Config) Validate() error {
	if c.Name == "" {
		return errors.New("gossip: config: name is required")
	}
	if len(c.Name) > maxNameLen {
		return fmt.Errorf("gossip: config: name %q is longer than %d bytes", c.Name, maxNameLen)
	}
	switch len(c.Key) {
	case 16, 24, 32:
	case 0:
		return errors.New("gossip: config: cluster key is required")
	default:
		return fmt.Errorf("gossip: config: cluster key must be 16, 24 or 32 bytes, not %d", len(c.Key))
	}
	if c.Bind.IsValid() && c.Bind.Port() == 0 && c.Advertise.IsValid() && c.Advertise.Port() != 0 {
		return errors.New("gossip: config: an advertised port needs a fixed bind port")
	}
	if c.Bind.IsValid() && c.Bind.Addr().Is6() && c.Bind.Addr().IsUnspecified() && !c.Advertise.IsValid() {
		return fmt.Errorf("gossip: config: bind %s needs an advertise address", c.Bind)
	}
	if c.RetainGone < 0 || c.ReconnectInterval < 0 {
		return errors.New("gossip: config: durations must not be negative")
	}
	if _, err := encodeMeta(c.Meta); err != nil {
		return err
	}
	for _, k := range c.Keys {
		switch len(k) {
		case 16, 24, 32:
		default:
			return fmt.Errorf("gossip: config: cluster key must be 16, 24 or 32 bytes, not %d", len(k))
		}
	}
	if len(c.Keys) > 0 && !bytes.Equal(c.Keys[0], c.Key) {
		return errors.New("gossip: config: the first of Keys must be Key")
	}
	if c.SignKey != nil && len(c.SignKey) != ed25519.PrivateKeySize {
		return errors.New("gossip: config: signing key must be an Ed25519 private key")
	}
	if len(c.Cert) > maxCertBytes {
		return fmt.Errorf("gossip: config: certificate of %d bytes exceeds %d", len(c.Cert), maxCertBytes)
	}
	return nil
}
