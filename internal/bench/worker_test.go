package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"testing"
	"time"
)

// TestServeWorker drives the worker loop over pipes as a parent would:
// servers, a ping, idle connections opened, verified, counted and closed,
// a throughput run, an unknown op; and the loop ends when its input does.
func TestServeWorker(t *testing.T) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- ServeWorker(context.Background(), inR, outW); outW.Close() }()
	sc := bufio.NewScanner(outR)
	id := uint64(0)
	call := func(req WorkerRequest) WorkerResponse {
		t.Helper()
		id++
		req.ID = id
		b, _ := json.Marshal(req)
		if _, err := inW.Write(append(b, '\n')); err != nil {
			t.Fatal(err)
		}
		if !sc.Scan() {
			t.Fatalf("no response to %s: %v", req.Op, sc.Err())
		}
		var r WorkerResponse
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		if r.ID != id {
			t.Fatalf("response id %d, want %d", r.ID, id)
		}
		return r
	}

	r := call(WorkerRequest{Op: OpServe, Sink: "127.0.0.1:0", Echo: "127.0.0.1:0", LeanEcho: "127.0.0.1:0"})
	if r.Error != "" || r.Sink == "" || r.Echo == "" || r.LeanEcho == "" {
		t.Fatalf("serve: %+v", r)
	}
	if p := call(WorkerRequest{Op: OpPing, Addr: r.Echo}); p.Errors != 0 {
		t.Fatalf("ping: %+v", p)
	}
	o := call(WorkerRequest{Op: OpIdleOpen, Addr: r.LeanEcho, N: 50, Parallel: 8, Spread: true})
	if o.Conns != 50 || o.Errors != 0 || o.Held != 50 {
		t.Fatalf("idle_open: %+v", o)
	}
	if v := call(WorkerRequest{Op: OpIdleVerify, Parallel: 8}); v.Errors != 0 || v.Held != 50 {
		t.Fatalf("idle_verify: %+v", v)
	}
	if s := call(WorkerRequest{Op: OpStats}); s.Active != 50 || s.Total != 50 || s.Held != 50 {
		t.Fatalf("stats: %+v", s)
	}
	call(WorkerRequest{Op: OpIdleClose})
	deadline := time.Now().Add(5 * time.Second)
	for call(WorkerRequest{Op: OpStats}).Active != 0 {
		if time.Now().After(deadline) {
			t.Fatal("lean echo still holds connections after idle_close")
		}
		time.Sleep(10 * time.Millisecond)
	}
	tp := call(WorkerRequest{Op: OpThroughput, Addr: r.Sink, Streams: 2, Duration: int64(100 * time.Millisecond)}).Throughput()
	if tp.Errors != 0 || tp.MBps <= 0 {
		t.Fatalf("throughput: %+v", tp)
	}
	if u := call(WorkerRequest{Op: "nope"}); u.Error == "" {
		t.Fatal("unknown op: no error")
	}
	inW.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ServeWorker: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeWorker did not end with its input")
	}
	// Its servers are closed.
	if c, err := net.DialTimeout("tcp", r.Echo, time.Second); err == nil {
		c.Close()
		t.Error("echo still listening after the worker ended")
	}
}
