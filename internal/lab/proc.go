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

	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error // valid after done
}

// Start writes n's config to dir/NAME.yaml and starts `meshd join` with
// it, behind the command prefix (e.g. ip netns exec NS) if any. The node
// runs in its own process group, so a terminal's Ctrl-C reaches only the
// parent, which then stops the nodes in order; it gets SIGKILL when the
// parent dies without stopping it.
func (e *Env) Start(n Node, prefix ...string) (*Proc, error) {
	p := &Proc{Name: n.Name, Config: filepath.Join(e.Dir, n.Name+".yaml"), Sock: n.Socket, done: make(chan struct{})}
	if p.Sock == "" {
		p.Sock = filepath.Join(n.DataDir, "meshd.sock")
	}
	if err := os.WriteFile(p.Config, []byte(n.YAML()), 0o600); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	argv := append(append([]string(nil), prefix...), e.Exe, "join", "--config", p.Config)
	p.cmd = exec.Command(argv[0], argv[1:]...)
	// ip netns exec execs in place, so Pdeathsig reaches meshd itself.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if e.Verbose {
		p.cmd.Stdout, p.cmd.Stderr = e.Stderr, e.Stderr
	} else {
		p.LogPath = filepath.Join(e.Dir, n.Name+".log")
		lf, err := os.Create(p.LogPath)
		if err != nil {
			return nil, fmt.Errorf("lab: %w", err)
		}
		defer lf.Close() // the child has its own descriptor
		p.cmd.Stdout, p.cmd.Stderr = lf, lf
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("lab: start %s: %w", n.Name, err)
	}
	go func() { // owned by p: ends when the process exits
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
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
