package lab

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Env is what the nodes of one mesh share: the meshd binary, a temporary
// directory (configs, data dirs, logs, control sockets) and a cluster key.
type Env struct {
	Exe     string // the meshd binary
	Dir     string
	KeyFile string // dir/cluster.key
	// Verbose: nodes log at info level to Stderr; otherwise at warn level
	// to dir/NAME.log (read back by Proc.LogTail).
	Verbose bool
	Stderr  io.Writer
	// ChildEnv is the environment of the nodes; nil: this process's.
	ChildEnv []string
}

// NewEnv makes a temporary directory named pattern (os.MkdirTemp) with a
// fresh cluster key in it, for nodes run by the binary exe ("" for this
// executable). Close removes it.
func NewEnv(exe, pattern string, verbose bool) (*Env, error) {
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("lab: find this executable: %w", err)
		}
	}
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	e := &Env{Exe: exe, Dir: dir, Verbose: verbose, Stderr: os.Stderr}
	if e.KeyFile, err = e.NewKey("cluster"); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return e, nil
}

// NewKey writes another cluster key to dir/name.key and returns its path.
func (e *Env) NewKey(name string) (string, error) {
	k := make([]byte, 32)
	rand.Read(k)
	p := filepath.Join(e.Dir, name+".key")
	if err := os.WriteFile(p, []byte(base64.StdEncoding.EncodeToString(k)+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("lab: %w", err)
	}
	return p, nil
}

// Close removes the directory. Stop the nodes first.
func (e *Env) Close() { os.RemoveAll(e.Dir) }

// Node is the starting point of a node config in e: name, site, the data
// dir dir/name, the control socket dir/name.sock, the cluster key, the
// log level, and a drain grace of 1 s so that stopping is quick.
func (e *Env) Node(name, site string) Node {
	level := "warn"
	if e.Verbose {
		level = "info"
	}
	return Node{Name: name, Site: site, DataDir: filepath.Join(e.Dir, name), KeyFile: e.KeyFile,
		Socket: filepath.Join(e.Dir, name+".sock"), LogLevel: level, Failover: Failover{DrainGrace: time.Second}}
}

// Proc is one `meshd join` child process.
type Proc struct {
	Name    string
	Config  string // its config file
	Sock    string // its control socket
	LogPath string // its log ("" when verbose: the log goes to stderr)

	argv    []string
	env     []string  // nil: this process's
	stderr  io.Writer // the log's destination when verbose
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error // valid after done
}

// Start writes n's config to dir/NAME.yaml and starts `meshd join` with
// it, behind the command prefix (e.g. ip netns exec NS) if any. The node
// runs in its own process group, so a terminal's Ctrl-C reaches only the
// parent, which then stops the nodes in order; it gets SIGKILL when the
// parent dies without stopping it.
func (e *Env) Start(n Node, prefix ...string) (*Proc, error) { return e.StartWith(n, prefix, nil) }

// StartWith is Start with extra flags after `meshd join --config FILE`.
func (e *Env) StartWith(n Node, prefix, flags []string) (*Proc, error) {
	p := &Proc{Name: n.Name, Config: filepath.Join(e.Dir, n.Name+".yaml"), Sock: n.Socket}
	if p.Sock == "" {
		p.Sock = filepath.Join(n.DataDir, "meshd.sock")
	}
	if err := os.WriteFile(p.Config, []byte(n.YAML()), 0o600); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	p.argv = append(append(append([]string(nil), prefix...), e.Exe, "join", "--config", p.Config), flags...)
	p.env = e.ChildEnv
	if e.Verbose {
		p.stderr = e.Stderr
	} else {
		p.LogPath = filepath.Join(e.Dir, n.Name+".log")
	}
	if err := p.start(os.O_TRUNC); err != nil {
		return nil, err
	}
	return p, nil
}

// start runs p.argv, its output to the log opened with mode (O_TRUNC or
// O_APPEND).
func (p *Proc) start(mode int) error {
	p.cmd = exec.Command(p.argv[0], p.argv[1:]...)
	p.cmd.Env = p.env
	p.cmd.SysProcAttr = childAttr()
	if p.LogPath == "" {
		p.cmd.Stdout, p.cmd.Stderr = p.stderr, p.stderr
	} else {
		lf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|mode, 0o600)
		if err != nil {
			return fmt.Errorf("lab: %w", err)
		}
		defer lf.Close() // the child has its own descriptor
		p.cmd.Stdout, p.cmd.Stderr = lf, lf
	}
	p.done = make(chan struct{})
	if err := p.cmd.Start(); err != nil {
		close(p.done)
		p.waitErr = err
		return fmt.Errorf("lab: start %s: %w", p.Name, err)
	}
	go func(cmd *exec.Cmd, done chan struct{}) { // owned by p: ends when the process exits
		p.waitErr = cmd.Wait()
		close(done)
	}(p.cmd, p.done)
	return nil
}

// Restart starts the node again, with the same config, data dir and
// flags, its output appended to the same log, once the process has
// exited (after Stop or Kill, say). Not concurrently with p's other
// methods.
func (p *Proc) Restart() error {
	if !p.Exited() {
		return fmt.Errorf("lab: restart %s: still running", p.Name)
	}
	return p.start(os.O_APPEND)
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed when the process has exited (the current one, after a
// Restart).
func (p *Proc) Done() <-chan struct{} { return p.done }

// WaitErr is the process's exit error; valid once Exited.
func (p *Proc) WaitErr() error {
	<-p.done
	return p.waitErr
}

// Stop asks the node to leave (SIGTERM) and kills it if it takes longer
// than 5 s. It returns when the process is gone.
func (p *Proc) Stop() {
	if p.Exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// Signal sends sig to the process (SIGSTOP and SIGCONT freeze and thaw a
// node, as a hung host would).
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return fmt.Errorf("lab: %s has exited", p.Name)
	}
	return p.cmd.Process.Signal(sig)
}

// Kill kills the process (no leave, no drain: a crash) and waits for it.
func (p *Proc) Kill() {
	if !p.Exited() {
		p.cmd.Process.Kill()
	}
	<-p.done
}

// LogTail is the last 4,000 bytes of the node's log.
func (p *Proc) LogTail() string {
	if p.LogPath == "" {
		return "(no log: it went to stderr)"
	}
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(bytes.TrimSpace(b))
}
