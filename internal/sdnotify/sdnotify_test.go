package sdnotify

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNotify(t *testing.T) {
	t.Setenv(EnvSocket, "")
	if ok, err := Notify(Ready); ok || err != nil {
		t.Fatalf("without %s: ok=%v err=%v; want a no-op", EnvSocket, ok, err)
	}
	for _, abstract := range []bool{false, true} {
		name := filepath.Join(t.TempDir(), "notify.sock")
		env := name
		if abstract {
			name = "\x00meshd-sdnotify-test-" + filepath.Base(t.TempDir())
			env = "@" + name[1:]
		}
		ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv(EnvSocket, env)
		if ok, err := Notify(Ready, "STATUS=up"); !ok || err != nil {
			t.Fatalf("abstract=%v: ok=%v err=%v", abstract, ok, err)
		}
		ln.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 512)
		k, err := ln.Read(buf)
		ln.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := string(buf[:k]); got != "READY=1\nSTATUS=up\n" {
			t.Errorf("abstract=%v: datagram %q", abstract, got)
		}
	}
	for d, want := range map[time.Duration]string{
		1500 * time.Millisecond: "EXTEND_TIMEOUT_USEC=1500000", 0: "EXTEND_TIMEOUT_USEC=0", -time.Second: "EXTEND_TIMEOUT_USEC=0"} {
		if got := ExtendTimeout(d); got != want {
			t.Errorf("ExtendTimeout(%v) = %q; want %q", d, got, want)
		}
	}
	if !strings.HasPrefix(MonotonicUsec(), "MONOTONIC_USEC=") || MonotonicUsec() == "MONOTONIC_USEC=0" {
		t.Errorf("MonotonicUsec() = %q", MonotonicUsec())
	}
}
