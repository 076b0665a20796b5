//go:build linux

package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// The address-family wrapper (TestSystemdAddressFamilies): the test binary
// re-executed with MESHD_E2E_AFWRAP_FAMILIES set, in a network namespace of
// its own, gives that namespace a non-loopback interface and a default
// route (as a host has), restricts socket(2) to those address families with
// a seccomp filter, as systemd's RestrictAddressFamilies= does, and
// executes MESHD_E2E_AFWRAP_CMD (newline-separated argv).
const (
	envAFFamilies = "MESHD_E2E_AFWRAP_FAMILIES"
	envAFCmd      = "MESHD_E2E_AFWRAP_CMD"
)

// afFamilies are the address families systemd units name, by number.
var afFamilies = map[string]uint32{"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16, "AF_PACKET": 17}

// afWrapMain runs the wrapper when the environment asks for it; ok false
// otherwise (a normal test run).
func afWrapMain() (code int, ok bool) {
	fams := os.Getenv(envAFFamilies)
	if fams == "" {
		return 0, false
	}
	fail := func(format string, args ...any) (int, bool) {
		fmt.Fprintf(os.Stderr, "afwrap: "+format+"\n", args...)
		return 1, true
	}
	if runtime.GOARCH != "amd64" {
		return fail("only linux/amd64")
	}
	for _, c := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "af0", "type", "veth", "peer", "name", "af1"},
		{"addr", "add", "10.77.0.2/24", "dev", "af0"},
		{"link", "set", "af0", "up"},
		{"link", "set", "af1", "up"},
		{"route", "add", "default", "via", "10.77.0.1", "dev", "af0"},
	} {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			return fail("ip %s: %v %s", strings.Join(c, " "), err, out)
		}
	}
	var allow []uint32
	for _, f := range strings.Fields(fams) {
		n, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return fail("family %q", f)
		}
		allow = append(allow, uint32(n))
	}
	argv := strings.Split(os.Getenv(envAFCmd), "\n")
	type sockFilter struct {
		code   uint16
		jt, jf uint8
		k      uint32
	}
	const (
		ldAbs    = 0x20 // BPF_LD|BPF_W|BPF_ABS
		jeq      = 0x15 // BPF_JMP|BPF_JEQ|BPF_K
		ret      = 0x06 // BPF_RET|BPF_K
		allowAll = 0x7fff0000
		retErrno = 0x00050000
	)
	prog := []sockFilter{
		{ldAbs, 0, 0, 4}, {jeq, 1, 0, 0xc000003e}, {ret, 0, 0, allowAll}, // arch x86_64
		{ldAbs, 0, 0, 0}, {jeq, 1, 0, uint32(syscall.SYS_SOCKET)}, {ret, 0, 0, allowAll},
		{ldAbs, 0, 0, 16}, // args[0], low 32 bits: the family
	}
	for i, f := range allow {
		prog = append(prog, sockFilter{jeq, uint8(len(allow) - i), 0, f})
	}
	prog = append(prog, sockFilter{ret, 0, 0, retErrno | uint32(syscall.EAFNOSUPPORT)}, sockFilter{ret, 0, 0, allowAll})
	fprog := struct {
		len    uint16
		filter *sockFilter
	}{uint16(len(prog)), &prog[0]}
	// The filter is the calling thread's; exec keeps only that thread.
	runtime.LockOSThread()
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, 38 /* PR_SET_NO_NEW_PRIVS */, 1, 0); e != 0 {
		return fail("no_new_privs: %v", e)
	}
	if _, _, e := syscall.RawSyscall(317 /* SYS_seccomp, amd64 */, 1 /* SECCOMP_SET_MODE_FILTER */, 0, uintptr(unsafe.Pointer(&fprog))); e != 0 {
		return fail("seccomp: %v", e)
	}
	err := syscall.Exec(argv[0], argv, os.Environ())
	return fail("exec %s: %v", argv[0], err)
}

// TestSystemdAddressFamilies (issue #12 problem 9): meshd starts under the
// address families examples/meshd.service allows (RestrictAddressFamilies=,
// emulated by a seccomp filter in a network namespace of the test's own
// with an interface and a default route) with the default gossip.bind
// 0.0.0.0 and no gossip.advertise, where memberlist picks the advertised
// private IP from the interface list (netlink on Linux). Without AF_NETLINK
// the same start fails, which shows that the restriction is in force.
func TestSystemdAddressFamilies(t *testing.T) {
	if os.Geteuid() != 0 || runtime.GOARCH != "amd64" {
		t.Skip("needs root (a network namespace) and linux/amd64 (the seccomp filter)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (iproute2)")
	}
	src, err := os.ReadFile(filepath.Join("..", "examples", "meshd.service"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range strings.Split(string(src), "\n") {
		if v, ok := strings.CutPrefix(l, "RestrictAddressFamilies="); ok {
			names = strings.Fields(v) // the last one is in force
		}
	}
	if len(names) == 0 {
		t.Fatal("examples/meshd.service has no RestrictAddressFamilies=")
	}
	c := newCluster(t)
	cfg := filepath.Join(c.dir, "af.yaml")
	text := fmt.Sprintf("name: af\nsite: s1\ndata_dir: %s\ncluster:\n  key_file: %s\ngossip:\n  bind: 0.0.0.0:%d\ntunnel:\n  listen: 0.0.0.0:%d\n",
		filepath.Join(c.dir, "af"), c.keyFile, freePort(t), freePort(t))
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	// start runs meshd join under families; it returns what it printed
	// and whether it logged "node started" within 15 s.
	start := func(families []string) (string, bool) {
		var nums []string
		for _, f := range families {
			n, ok := afFamilies[f]
			if !ok {
				t.Fatalf("unknown address family %s in the unit", f)
			}
			nums = append(nums, strconv.Itoa(int(n)))
		}
		var out syncBuffer
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), envAFFamilies+"="+strings.Join(nums, " "),
			envAFCmd+"="+strings.Join([]string{meshdBin, "join", "--config", cfg}, "\n"))
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) {
				t.Skipf("a network namespace of its own: %v; needs CAP_SYS_ADMIN and a kernel with netns", err)
			}
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		started := false
		deadline := time.Now().Add(15 * time.Second)
	wait:
		for time.Now().Before(deadline) {
			if strings.Contains(out.String(), "node started") {
				started = true
				break
			}
			select {
			case <-exited:
				break wait
			case <-time.After(50 * time.Millisecond):
			}
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		return out.String(), started
	}
	if out, ok := start(names); !ok {
		t.Errorf("meshd did not start under RestrictAddressFamilies=%s with gossip.bind 0.0.0.0:\n%s", strings.Join(names, " "), out)
	}
	var without []string
	for _, f := range names {
		if f != "AF_NETLINK" {
			without = append(without, f)
		}
	}
	out, ok := start(without)
	if ok || !strings.Contains(out, "address family not supported") {
		t.Errorf("without AF_NETLINK meshd started or failed otherwise (the filter is not in force?):\n%s", out)
	} else {
		t.Logf("without AF_NETLINK: %s", strings.TrimSpace(grepLines(out, "meshd:")))
	}
}

// syncBuffer is a bytes.Buffer safe for a process's output and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
