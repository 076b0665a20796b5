package node

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/meshd/meshd/failover"
)

func TestOnlyTimeouts(t *testing.T) {
	to := failover.Failure{Err: context.DeadlineExceeded}
	io := failover.Failure{Err: os.ErrDeadlineExceeded}
	refused := failover.Failure{Err: errors.New("backend refused: connection refused")}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"all timed out", &failover.AllFailedError{Total: 2, Failures: []failover.Failure{to, io}}, true},
		{"one refused", &failover.AllFailedError{Total: 2, Failures: []failover.Failure{to, refused}}, false},
		{"caller gave up", &failover.AllFailedError{Total: 2, Failures: []failover.Failure{to}, Err: context.Canceled}, false},
		{"no endpoints", failover.ErrNoEndpoints, false},
	} {
		if got := onlyTimeouts(tc.err); got != tc.want {
			t.Errorf("%s: got %v want %v", tc.name, got, tc.want)
		}
	}
}
