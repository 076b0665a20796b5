package lab

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// TestUntilClosed: the run's context ends when its input closes, when the
// parent context ends, and after the lifetime; run's error is returned.
func TestUntilClosed(t *testing.T) {
	wait := func(ctx context.Context) error { <-ctx.Done(); return nil }
	for _, tc := range []struct {
		name     string
		lifetime time.Duration
		act      func(cancel context.CancelFunc, w *io.PipeWriter)
	}{
		{"stdin closes", time.Hour, func(_ context.CancelFunc, w *io.PipeWriter) { w.Close() }},
		{"parent ends", time.Hour, func(cancel context.CancelFunc, _ *io.PipeWriter) { cancel() }},
		{"lifetime", 20 * time.Millisecond, func(context.CancelFunc, *io.PipeWriter) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r, w := io.Pipe()
			defer w.Close()
			done := make(chan error, 1)
			go func() { done <- untilClosed(ctx, r, tc.lifetime, wait) }()
			w.Write([]byte("data is read and ignored\n"))
			tc.act(cancel, w)
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("untilClosed = %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("run's context did not end")
			}
		})
	}
	boom := errors.New("boom")
	if err := untilClosed(context.Background(), strings.NewReader(""), time.Hour, func(context.Context) error { return boom }); err != boom {
		t.Errorf("untilClosed = %v, want run's error", err)
	}
}

// TestServeBadRef: a WGRef that does not check out fails before touching
// any device.
func TestServeBadRef(t *testing.T) {
	var out strings.Builder
	err := WGRef{Dev: "x"}.Serve(context.Background(), strings.NewReader(""), &out)
	if err == nil || !strings.HasPrefix(err.Error(), "wgref: ") || out.Len() != 0 {
		t.Errorf("Serve of an empty WGRef = %v, out %q", err, out.String())
	}
}
