package bench

import (
	"context"
	"testing"
	"time"
)

// TestThroughputLateStream: a stream whose run is over before it connects
// (dur 0 stands for a connect slower than the run) still sends a buffer
// and is measured, rather than counting 0 bytes without an error.
func TestThroughputLateStream(t *testing.T) {
	sink, err := ListenSink("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r := Throughput(ctx, sink.Addr(), 4, 0)
	if r.Errors != 0 || r.Bytes < 4*64<<10 || r.MBps <= 0 {
		t.Errorf("Throughput with a run over before the connect = %+v, want every stream's first buffer measured", r)
	}
}
