package node

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	"github.com/meshd/meshd/internal/config"
)

// Reload (README "Operations") applies a new configuration to the running node in two
// phases, so that an invalid or inapplicable one changes nothing:
//
//  1. every reload step, in order, checks the new config against the one in
//     force and prepares its change without changing behaviour (binds new
//     listeners, reads files, runs a first health check). If one fails, the
//     steps already prepared are aborted in reverse order and Reload returns
//     that step's error: the node runs on exactly as before.
//  2. every step's commit makes its change live. Commits cannot fail.
//
// The node's own steps come first: the keys a restart must change (refused
// with a one-line error naming the key), then exports, then imports. Other
// subsystems add theirs with OnReload. A step must leave alone what it does
// not own, and a connection through an import or export that still exists
// is never touched.

// ReloadFunc is one subsystem's step of a reload. old is the config in
// force, cfg the new one (both valid, neither to be modified). It checks that
// the change can be applied and acquires what it needs without changing the
// node's behaviour, and returns commit, which makes the change live and must
// not fail, and abort, which releases what it acquired if a later step
// fails. Either may be nil; with an error, neither is called. Steps run one
// at a time (never concurrently with another reload) and may block briefly,
// never on the network.
type ReloadFunc func(old, cfg *config.Config) (commit, abort func(), err error)

type reloadHook struct {
	name string
	f    ReloadFunc
}

// OnReload adds a reload step named name (for messages), run after the
// node's own steps and the ones added before it. Call it before Start or at
// any time after; it waits for a reload in progress.
func (n *Node) OnReload(name string, f ReloadFunc) {
	n.reloadMu.Lock()
	defer n.reloadMu.Unlock()
	n.hooks = append(n.hooks, reloadHook{name: name, f: f})
}

// noteChange records one change of the reload in progress for its report
// (ReloadResult). Called from commits, under reloadMu.
func (n *Node) noteChange(format string, args ...any) {
	n.reloadNotes = append(n.reloadNotes, fmt.Sprintf(format, args...))
}

// ReloadNote adds a short phrase ("log level debug") to the report of the
// reload in progress (`meshd reload` prints it). Call it only from a
// ReloadFunc's commit.
func (n *Node) ReloadNote(format string, args ...any) { n.noteChange(format, args...) }

// LastReload returns what the last successful reload changed, one short
// phrase per change (empty when nothing did).
func (n *Node) LastReload() []string {
	n.reloadMu.Lock()
	defer n.reloadMu.Unlock()
	return slices.Clone(n.lastNotes)
}

// ReloadFile reads the config file the node runs from again, with the same
// command-line overrides, and applies it (Reload). A file that does not
// parse changes nothing; the error is the file:line one.
func (n *Node) ReloadFile() error {
	cur := n.Config()
	if cur.Path == "" {
		return errors.New("reload: the node was not started from a config file")
	}
	cfg, err := config.Load(cur.Path, cur.Overrides)
	if err != nil {
		return err
	}
	return n.Reload(cfg)
}

// Reload applies cfg, a validated configuration, to the running node: see
// the two phases above. It returns nil when everything applied (also when
// nothing changed).
func (n *Node) Reload(cfg *config.Config) error {
	if cfg == nil {
		return errors.New("reload: nil config")
	}
	n.reloadMu.Lock()
	defer n.reloadMu.Unlock()
	n.mu.Lock()
	running := n.started && !n.closed
	n.mu.Unlock()
	if !running || n.draining.Load() {
		return errors.New("reload: the node is not running")
	}
	old := n.Config()
	steps := append([]reloadHook{
		{"restart-only keys", restartOnly},
		{"exports", n.reloadExports},
		{"imports", n.reloadImports},
		{"failover", reloadFailover},
	}, n.hooks...)
	var commits, aborts []func()
	n.reloadNotes = nil
	for _, st := range steps {
		commit, abort, err := st.f(old, cfg)
		if err != nil {
			for i := len(aborts) - 1; i >= 0; i-- {
				aborts[i]()
			}
			return prefixFile(cfg.Path, err)
		}
		if commit != nil {
			commits = append(commits, commit)
		}
		if abort != nil {
			aborts = append(aborts, abort)
		}
	}
	for _, c := range commits {
		c()
	}
	n.live.Store(cfg)
	n.lastNotes = append([]string{}, n.reloadNotes...)
	n.publishExports()
	n.rebuildCatalog()
	n.log.Info("config reloaded", "file", cfg.Path, "exports", len(cfg.Exports), "imports", len(cfg.Imports))
	return nil
}

// prefixFile makes err name the config file unless it already does (a
// config.Error always does); a restart-only key the file sets is named
// with its line (FILE:LINE: KEY: ...).
func prefixFile(path string, err error) error {
	var ce *config.Error
	if path == "" || errors.As(err, &ce) || strings.HasPrefix(err.Error(), path) {
		return err
	}
	var re *RestartError
	if errors.As(err, &re) {
		if line := config.KeyLine(path, re.Key); line > 0 {
			return fmt.Errorf("%s:%d: %w", path, line, err)
		}
	}
	return fmt.Errorf("%s: %w", path, err)
}

// RestartError is a reload refused because a key changed that only a
// restart can change.
type RestartError struct {
	Key      string
	Old, New string
}

func (e *RestartError) Error() string {
	return fmt.Sprintf("%s: changed from %s to %s, which needs a restart (set it back, or restart the node)", e.Key, e.Old, e.New)
}

// restartOnly refuses changes to what the running node cannot change:
// its identity in the mesh, its files and every address it listens on or
// advertises.
func restartOnly(old, cfg *config.Config) (func(), func(), error) {
	str := func(v any) string {
		switch x := v.(type) {
		case string:
			return fmt.Sprintf("%q", x)
		case netip.AddrPort:
			if !x.IsValid() {
				return `""`
			}
		}
		return fmt.Sprintf("%v", v)
	}
	for _, k := range []struct {
		key      string
		old, new any
	}{
		{"name", old.Name, cfg.Name},
		{"site", old.Site, cfg.Site},
		{"data_dir", old.DataDir, cfg.DataDir},
		{"gossip.bind", old.Gossip.Bind, cfg.Gossip.Bind},
		{"gossip.advertise", old.Gossip.Advertise, cfg.Gossip.Advertise},
		{"tunnel.listen", old.Tunnel.Listen, cfg.Tunnel.Listen},
		{"tunnel.advertise", old.Tunnel.Advertise, cfg.Tunnel.Advertise},
		{"tunnel.mode", old.Tunnel.Mode, cfg.Tunnel.Mode},
		{"relay.enabled", old.Relay.Enabled, cfg.Relay.Enabled},
		{"relay.listen", old.Relay.Listen, cfg.Relay.Listen},
		{"relay.advertise", old.Relay.Advertise, cfg.Relay.Advertise},
		{"control.socket", old.Control.Socket, cfg.Control.Socket},
		{"metrics.listen", old.Metrics.Listen, cfg.Metrics.Listen},
		{"log.format", old.Log.Format, cfg.Log.Format},
		{"failover.session_timeout", old.Failover.SessionTimeout, cfg.Failover.SessionTimeout},
		{"failover.hold_down", old.Failover.HoldDown, cfg.Failover.HoldDown},
	} {
		if !reflect.DeepEqual(k.old, k.new) {
			return nil, nil, &RestartError{Key: k.key, Old: str(k.old), New: str(k.new)}
		}
	}
	// Cluster keys change by reload (rotation): reloadClusterKeys.
	return nil, nil, nil
}

// reloadFailover: drain_grace is read when it is needed (Config()); the
// other failover keys are refused by restartOnly.
func reloadFailover(old, cfg *config.Config) (func(), func(), error) { return nil, nil, nil }

// reloadExports adds, removes and changes exports. A removed export leaves
// the catalog and refuses new streams at once; its active streams finish. A
// changed one keeps its active streams (they stay with the target they
// dialled) and serves new ones with the new settings.
func (n *Node) reloadExports(old, cfg *config.Config) (func(), func(), error) {
	cur := n.exportMap()
	next := make(map[string]*exporter, len(cfg.Exports))
	var added, changed []*exporter
	var changes []config.Export
	for _, ec := range cfg.Exports {
		e := cur[ec.Name]
		switch {
		case e == nil:
			e = newExporter(n, ec)
			e.checkOnce() // enters the catalog with its real health
			added = append(added, e)
		case !reflect.DeepEqual(*e.cfg(), withLine(ec, e.cfg().Line)):
			changed = append(changed, e)
			changes = append(changes, ec)
		}
		next[ec.Name] = e
	}
	var removed []*exporter
	for name, e := range cur {
		if next[name] == nil {
			removed = append(removed, e)
		}
	}
	if len(added)+len(changed)+len(removed) == 0 {
		return nil, nil, nil
	}
	commit := func() {
		for i, e := range changed {
			e.setConfig(changes[i])
			n.log.Info("reload: export changed", "export", changes[i].Name, "target", changes[i].Target)
			n.noteChange("export %s changed", changes[i].Name)
		}
		n.exports.Store(&next)
		n.retiredX = slices.DeleteFunc(n.retiredX, func(e *exporter) bool { return e.active.Load() == 0 })
		for _, e := range removed {
			n.retiredX = append(n.retiredX, e)
			close(e.gone)
			n.log.Info("reload: export removed; its active streams finish", "export", e.cfg().Name, "active", e.active.Load())
			n.noteChange("export %s removed", e.cfg().Name)
		}
		for _, e := range added {
			n.goFunc(e.checkLoop)
			n.log.Info("reload: export added", "export", e.cfg().Name, "target", e.cfg().Target, "healthy", e.healthy.Load())
			n.noteChange("export %s added", e.cfg().Name)
		}
	}
	return commit, nil, nil
}

// withLine returns e with its Line set to line: an entry that only moved
// in the file has not changed.
func withLine(e config.Export, line int) config.Export {
	e.Line = line
	return e
}

// reloadImports adds, removes and changes imports. A new import (or a new
// listen address) is bound in the prepare phase, so an address in use fails
// the reload before anything changed. A removed import closes its listener
// and lets its active connections finish; a changed one (sites, balance,
// connect_timeout, ...) applies to new connections.
func (n *Node) reloadImports(old, cfg *config.Config) (func(), func(), error) {
	cur := n.importList()
	byName := make(map[string]*importer, len(cur))
	for _, im := range cur {
		byName[im.cfg().Name] = im
	}
	var next, added, removed []*importer
	type change struct {
		im  *importer
		cfg config.Import
	}
	var changed []change
	keep := make(map[*importer]bool)
	abort := func() {
		for _, im := range added {
			im.ln.Close()
		}
	}
	for _, ic := range cfg.Imports {
		im := byName[ic.Name]
		if im != nil && im.cfg().Listen == ic.Listen {
			keep[im] = true
			ic2 := ic
			ic2.Line = im.cfg().Line
			if !reflect.DeepEqual(*im.cfg(), ic2) {
				changed = append(changed, change{im, ic})
			}
			next = append(next, im)
			continue
		}
		nim, err := newImporter(n, ic)
		if err != nil {
			abort()
			return nil, nil, fmt.Errorf("imports: %s: %w", ic.Name, err)
		}
		added = append(added, nim)
		next = append(next, nim)
	}
	for _, im := range cur {
		if !keep[im] {
			removed = append(removed, im)
		}
	}
	if len(added)+len(changed)+len(removed) == 0 {
		return nil, nil, nil
	}
	commit := func() {
		for _, c := range changed {
			c.im.conf.Store(&c.cfg)
			n.log.Info("reload: import changed", "import", c.cfg.Name, "sites", strings.Join(c.cfg.Sites, ","), "balance", c.cfg.Balance)
			n.noteChange("import %s changed", c.cfg.Name)
		}
		n.imports.Store(&next)
		for _, im := range removed {
			im.close()
			n.retired = append(n.retired, im)
			n.noteChange("import %s removed", im.cfg().Name)
			n.log.Info("reload: import removed; listener closed, active connections finish", "import", im.cfg().Name,
				"listen", im.cfg().Listen.String(), "active", im.active.Load())
		}
		for _, im := range added {
			n.goFunc(im.serve)
			n.log.Info("reload: import added", "import", im.cfg().Name, "listen", im.ln.Addr().String())
			n.noteChange("import %s added", im.cfg().Name)
		}
		// Forget retired imports whose connections have all finished.
		n.retired = slices.DeleteFunc(n.retired, func(im *importer) bool { return im.active.Load() == 0 })
	}
	return commit, abort, nil
}
