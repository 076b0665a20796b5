package node

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/echo"
	"github.com/meshd/meshd/internal/testutil"
)

var loop = netip.MustParseAddrPort("127.0.0.1:0")

func testConfig(t *testing.T, dir, name, site string, clusterKey []byte) *config.Config {
	t.Helper()
	return &config.Config{
		Name: name, Site: site, DataDir: filepath.Join(dir, name),
		Cluster: config.Cluster{Key: clusterKey},
		Gossip:  config.Gossip{Bind: loop},
		Tunnel:  config.Tunnel{Listen: loop, Mode: config.ModeUserspace},
		Control: config.Control{Socket: filepath.Join(dir, name+".sock")},
		Log:     config.Log{Level: "info", Format: "text"},
	}
}

// TestLifecycleNoLeaks runs two nodes in-process, pushes traffic through an
// import, closes both and checks that goroutines and file descriptors are
// back where they started, and that the node key was kept with mode 0600.
func TestLifecycleNoLeaks(t *testing.T) {
	dir, err := os.MkdirTemp("", "meshd-node")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	backend, err := echo.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()

	base := testutil.Snapshot()
	ck := make([]byte, 32)
	rand.Read(ck)

	for round := 0; round < 2; round++ { // second round reuses the node keys
		exp := testConfig(t, dir, "exp", "cloud", ck)
		exp.Exports = []config.Export{{Name: "echo", Target: backend.Addr(), Weight: 1}}
		imp := testConfig(t, dir, "imp", "onprem", ck)
		imp.Imports = []config.Import{{Name: "echo", Listen: loop, Balance: config.BalanceLeastConn}}

		en, err := New(exp, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := en.Start(); err != nil {
			t.Fatal(err)
		}
		imp.Cluster.Join = []string{en.GossipAddr().String()}
		in, err := New(imp, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := in.Start(); err != nil {
			t.Fatal(err)
		}

		deadline := time.Now().Add(10 * time.Second)
		for {
			st := in.Status()
			if len(st.Services) == 1 && len(st.Peers) == 1 && st.Peers[0].State == "alive" && st.Peers[0].Path == PathDirect {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("mesh did not converge: %+v", st)
			}
			time.Sleep(20 * time.Millisecond)
		}
		for i := 0; i < 5; i++ {
			c, err := net.Dial("tcp", in.ImportAddr("echo"))
			if err != nil {
				t.Fatal(err)
			}
			msg := bytes.Repeat([]byte{byte(i)}, 100<<10)
			c.Write(msg)
			c.(*net.TCPConn).CloseWrite()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(c)
			c.Close()
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("echo %d: %d bytes, %v", i, len(got), err)
			}
		}
		// Leave one connection open across Close: it must be ended, not leaked.
		idle, err := net.Dial("tcp", in.ImportAddr("echo"))
		if err != nil {
			t.Fatal(err)
		}
		idle.Write([]byte("x"))
		buf := make([]byte, 1)
		idle.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(idle, buf); err != nil {
			t.Fatal(err)
		}

		in.Close()
		en.Close()
		in.Close()
		if _, err := idle.Read(buf); err == nil {
			t.Fatal("client connection still open after Close")
		}
		idle.Close()

		fi, err := os.Stat(filepath.Join(dir, "exp", "node.key"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("node.key: %v %v", fi, err)
		}
		if _, err := os.Stat(exp.Control.Socket); !os.IsNotExist(err) {
			t.Fatalf("control socket left behind: %v", err)
		}
	}

	base.Check(t, 10*time.Second, 2)
}

// TestStartFailureLeavesNothing: an import whose address is taken makes
// Start fail, and everything it had started is stopped again.
func TestStartFailureLeavesNothing(t *testing.T) {
	dir, err := os.MkdirTemp("", "meshd-node")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	base := testutil.Snapshot()

	ck := make([]byte, 32)
	rand.Read(ck)
	cfg := testConfig(t, dir, "n", "onprem", ck)
	cfg.Imports = []config.Import{
		{Name: "a", Listen: loop},
		{Name: "b", Listen: netip.MustParseAddrPort(taken.Addr().String())},
	}
	n, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err == nil {
		t.Fatal("Start succeeded on a taken address")
	}
	n.Close()
	if _, err := os.Stat(cfg.Control.Socket); !os.IsNotExist(err) {
		t.Fatalf("control socket exists after failed start")
	}
	base.Check(t, 10*time.Second, 2)
}
