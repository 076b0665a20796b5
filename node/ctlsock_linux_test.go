package node

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCtlSockHelper is not a test: run as another user by
// TestControlSocketOwnerOnly, it dials the socket named by the environment
// and prints what it read.
func TestCtlSockHelper(t *testing.T) {
	path := os.Getenv("MESHD_CTLSOCK_DIAL")
	if path == "" {
		t.Skip("helper process only")
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		os.Stdout.WriteString("dial error: " + err.Error() + "\n")
		return
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	b, err := io.ReadAll(c)
	os.Stdout.WriteString("read " + strings.TrimSpace(string(b)) + " err=" + errString(err) + "\n")
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

// TestControlSocketOwnerOnly: the socket exists only with mode 0600, and
// even with its mode opened up by hand, a process of another user is
// closed at accept (SO_PEERCRED) while the owner is served.
func TestControlSocketOwnerOnly(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "meshd.sock")
	ln, err := listenControl(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v mode %v, want a socket with mode 0600", err, fi.Mode())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("directory holds %d entries, want only the socket", len(ents))
	}

	var logs bytes.Buffer
	ol := newOwnerListener(ln, slog.New(slog.NewTextHandler(&logs, nil)))
	served := make(chan struct{})
	go func() {
		defer close(served)
		for {
			c, err := ol.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello\n"))
			c.Close()
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if line != "hello\n" {
		t.Fatalf("owner got %q", line)
	}

	if os.Geteuid() != 0 {
		t.Skip("needs root to run a process as another user")
	}
	// Open the path up for another user, as a careless chmod would.
	for _, d := range []string{filepath.Dir(dir), dir} {
		os.Chmod(d, 0o711)
	}
	os.Chmod(path, 0o666)
	// The test binary where the other user may run it.
	self, _ := os.Executable()
	bin, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "helper.test")
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestCtlSockHelper$", "-test.v")
	cmd.Env = append(os.Environ(), "MESHD_CTLSOCK_DIAL="+path)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil && !strings.Contains(string(out), "read ") {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "read  err=nil") {
		t.Fatalf("another user was served or not closed cleanly:\n%s", out)
	}
	ln.Close()
	<-served
	if !strings.Contains(logs.String(), "connection from another user refused") || !strings.Contains(logs.String(), "uid=65534") {
		t.Fatalf("refusal not logged: %q", logs.String())
	}
}
