package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/meshd/meshd/gossip"
)

// Restarts and name conflicts (README "Operations").
//
// The node remembers the gossip addresses of the members it knew in
// data_dir/members.json and joins them at start, after cluster.join, so a
// node with an empty cluster.join (the first node, a seed) rejoins the mesh
// after a restart: the others saw it leave and would not call it back.
//
// A node that finds, while joining, another live member with its name is
// the newcomer: it stops (Fatal) without a leave, which would mark the
// other as gone. Its catalog record is held back until the join has shown
// that its name is its own (gossip Config.Quiet), so the live member's
// record is never replaced.

const (
	membersFileName   = "members.json"
	maxRemembered     = 64
	conflictWindow    = 5 * time.Second // after the first join: a conflict still means we are the newcomer
	maxRememberedTry  = 8               // remembered addresses tried per join round
	rememberThrottle  = 2 * time.Second
	joinBackoffMax    = 30 * time.Second
	joinBackoffFirst  = time.Second
	rememberFileMode  = 0o600
	membersFileFormat = 1
)

// membersFile is the content of data_dir/members.json.
type membersFile struct {
	Format  int                `json:"format"`
	Saved   time.Time          `json:"saved"`
	Members []rememberedMember `json:"members"`
}

type rememberedMember struct {
	Name   string `json:"name"`
	Gossip string `json:"gossip"`
}

func (n *Node) membersPath() string { return filepath.Join(n.cfg.DataDir, membersFileName) }

// loadRemembered reads the members remembered by the last run; a missing or
// unreadable file means none (logged when unreadable).
func (n *Node) loadRemembered() []rememberedMember {
	b, err := os.ReadFile(n.membersPath())
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			n.log.Warn("remembered members unreadable; ignored", "file", n.membersPath(), "err", err)
		}
		return nil
	}
	var f membersFile
	if err := json.Unmarshal(b, &f); err != nil || f.Format != membersFileFormat {
		n.log.Warn("remembered members unreadable; ignored", "file", n.membersPath(), "err", err)
		return nil
	}
	var out []rememberedMember
	for _, m := range f.Members {
		if m.Name != n.cfg.Name && m.Gossip != "" && len(out) < maxRemembered {
			out = append(out, m)
		}
	}
	return out
}

// remember saves the gossip addresses of the members alive now, when they
// changed since the last save. While no other member is alive it keeps the
// file as it is: a node cut off from the mesh still knows whom to call.
// Called from watchGossip only.
func (n *Node) remember(members []gossip.Member, now time.Time) {
	var cur []rememberedMember
	for _, m := range members {
		if (m.State == gossip.StateAlive || m.State == gossip.StateSuspect) && m.Addr.IsValid() {
			cur = append(cur, rememberedMember{Name: m.Name, Gossip: m.Addr.String()})
		}
	}
	// Compared whole, before the sample: a random sample of a mesh larger
	// than maxRemembered differs every time, and the file was rewritten at
	// every reconcile (every 5 s, idle or not) once the mesh had more.
	if len(cur) == 0 || slices.Equal(cur, n.remembered) || now.Sub(n.rememberedAt) < rememberThrottle {
		return
	}
	saved := cur
	if len(cur) > maxRemembered {
		saved = slices.Clone(cur)
		rand.Shuffle(len(saved), func(i, j int) { saved[i], saved[j] = saved[j], saved[i] })
		saved = saved[:maxRemembered]
		slices.SortFunc(saved, func(a, b rememberedMember) int { return strings.Compare(a.Name, b.Name) })
	}
	b, _ := json.MarshalIndent(membersFile{Format: membersFileFormat, Saved: now.UTC(), Members: saved}, "", "  ")
	tmp := n.membersPath() + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), rememberFileMode); err != nil {
		n.log.Warn("remember members", "err", err)
		return
	}
	if err := os.Rename(tmp, n.membersPath()); err != nil {
		n.log.Warn("remember members", "err", err)
		return
	}
	n.remembered, n.rememberedAt = cur, now
}

// joinLoop joins the mesh: cluster.join (every address), else the
// remembered members one at a time, retrying with backoff until one
// answers or the node stops; afterwards gossip keeps membership. Without
// anything to join the node is alone until another node joins it.
func (n *Node) joinLoop() {
	remembered := n.loadRemembered()
	if len(n.cfg.Cluster.Join) == 0 && len(remembered) == 0 {
		n.log.Info("nothing to join (no cluster.join, no remembered members): this node is alone until another node joins it")
		n.joined()
		return
	}
	backoff := joinBackoffFirst
	for round := 0; ; round++ {
		cnt, err := n.joinOnce(remembered)
		if err == nil {
			if other, bad := n.gsp.NameConflict(); bad {
				n.nameConflict(other)
				return
			}
			n.log.Info("joined mesh", "contacted", cnt)
			n.joined()
			return
		}
		if round == 0 {
			// Announce anyway: whoever joins us later must learn our exports.
			n.joined()
		}
		n.log.Warn("join failed; this node is alone until one answers or another node joins it; retrying",
			"in", backoff, "cluster_join", len(n.cfg.Cluster.Join), "remembered", len(remembered), "err", err)
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, joinBackoffMax)
	}
}

// joinOnce tries cluster.join, then up to maxRememberedTry remembered
// members in random order, and stops at the first that answers.
func (n *Node) joinOnce(remembered []rememberedMember) (int, error) {
	var errs []error
	if len(n.cfg.Cluster.Join) > 0 {
		cnt, err := n.gsp.Join(n.cfg.Cluster.Join)
		if err == nil {
			return cnt, nil
		}
		errs = append(errs, err)
	}
	order := rand.Perm(len(remembered))
	for i, k := range order {
		if i == maxRememberedTry {
			break
		}
		m := remembered[k]
		cnt, err := n.gsp.Join([]string{m.Gossip})
		if err == nil {
			n.log.Info("rejoined a remembered member", "peer", m.Name, "gossip", m.Gossip)
			return cnt, nil
		}
		errs = append(errs, fmt.Errorf("remembered %s: %w", m.Name, err))
		if n.ctx.Err() != nil {
			break
		}
	}
	return 0, errors.Join(errs...)
}

// joined ends the quiet start: the catalog record is announced, and for
// conflictWindow a name conflict still means this node is the newcomer.
func (n *Node) joined() {
	n.joinedAt.Store(time.Now().UnixNano())
	n.gsp.Announce()
}

// checkConflict is called on gossip changes: a conflict on our name before
// the join settled makes us the newcomer.
func (n *Node) checkConflict(now time.Time) {
	other, bad := n.gsp.NameConflict()
	if !bad || n.conflicted.Load() {
		return
	}
	at := n.joinedAt.Load()
	if at == 0 || now.Sub(time.Unix(0, at)) < conflictWindow {
		n.nameConflict(other)
	}
}

// nameConflict makes the node stop: Fatal reports it, Close skips the
// drain and the leave (which would speak for the other node).
func (n *Node) nameConflict(other netip.AddrPort) {
	if n.conflicted.Swap(true) {
		return
	}
	err := fmt.Errorf("node: another live node already has the name %q (gossip %s): names must be unique in the mesh; stopping without leaving, the other node is not disturbed", n.cfg.Name, other.String())
	n.log.Error(err.Error())
	select {
	case n.fatal <- err:
	default:
	}
}

// Fatal receives an error when the node cannot go on and must be closed:
// another live member has its name. The node has already stopped serving.
func (n *Node) Fatal() <-chan error { return n.fatal }
