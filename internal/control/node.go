package control

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"github.com/meshd/meshd/failover"
	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/node"
)

// The typed requests of the node's control API, one per `meshd` command
// that talks to a running node. Each bounds its own wait.

// Timeouts of the requests that do not depend on their arguments.
const (
	StatusTimeout = 10 * time.Second
	ReloadTimeout = 30 * time.Second
	MaintTimeout  = 10 * time.Second
)

// DefaultSocket is the control socket of a node with the default data_dir.
var DefaultSocket = filepath.Join(config.DefaultDataDir, config.DefaultSocketName)

// FindSocket returns the control socket to use: socket when set, else the
// control.socket of the config file (default <data_dir>/meshd.sock), else
// DefaultSocket. A config file that does not load is an error.
func FindSocket(socket, configFile string) (string, error) {
	if socket != "" {
		return socket, nil
	}
	if configFile == "" {
		return DefaultSocket, nil
	}
	cfg, err := config.Load(configFile, config.Overrides{})
	if err != nil {
		return "", err
	}
	return cfg.Control.Socket, nil
}

// FindSocketLenient is FindSocket for requests that must reach the node
// while its config file is broken (a reload reports the file's error from
// the node): when the file does not load it falls back to the socket a
// lenient read of it names (config.SocketHint), and fails only if the
// file cannot be read as YAML at all.
func FindSocketLenient(socket, configFile string) (string, error) {
	if socket != "" || configFile == "" {
		return FindSocket(socket, configFile)
	}
	cfg, err := config.Load(configFile, config.Overrides{})
	if err == nil {
		return cfg.Control.Socket, nil
	}
	if sock, ok := config.SocketHint(configFile); ok {
		return sock, nil
	}
	return "", err
}

// Status fetches the node's status (GET /status).
func Status(ctx context.Context, sock string) (node.Status, error) {
	var st node.Status
	err := Do(ctx, sock, http.MethodGet, "/status", nil, &st, StatusTimeout)
	return st, err
}

// Reload asks the node to re-read its config file (POST /reload). A
// refused reload changed nothing, and its error says so.
func Reload(ctx context.Context, sock string) (node.ReloadResult, error) {
	var res node.ReloadResult
	if err := Do(ctx, sock, http.MethodPost, "/reload", struct{}{}, &res, ReloadTimeout); err != nil {
		return res, fmt.Errorf("reload refused; nothing changed: %w", err)
	}
	return res, nil
}

// Maint turns the node's maintenance mode on (with a reason) or off (POST
// /maint) and returns the state the node answered.
func Maint(ctx context.Context, sock string, on bool, reason string) (node.MaintRequest, error) {
	var res node.MaintRequest
	err := Do(ctx, sock, http.MethodPost, "/maint", node.MaintRequest{On: on, Reason: reason}, &res, MaintTimeout)
	return res, err
}

// PingTimeout bounds a ping request: each round trip may take its
// interval and a few seconds more.
func PingTimeout(req node.PingRequest) time.Duration {
	iv := time.Duration(req.IntervalMS) * time.Millisecond
	return time.Duration(req.Count)*(iv+3*time.Second) + 10*time.Second
}

// Ping asks the node for round trips to a peer through the tunnel (POST
// /ping), bounded by PingTimeout.
func Ping(ctx context.Context, sock string, req node.PingRequest) (node.PingResult, error) {
	var res node.PingResult
	err := Do(ctx, sock, http.MethodPost, "/ping", req, &res, PingTimeout(req))
	return res, err
}

// Drill asks the node to run a failover drill (POST /drill) and waits for
// its report: the drill's duration and a minute more. Cancelling ctx ends
// the request; the node then cancels the drill everywhere.
func Drill(ctx context.Context, sock string, req node.DrillRequest) (failover.Report, error) {
	var rep failover.Report
	err := Do(ctx, sock, http.MethodPost, "/drill", req, &rep, time.Duration(req.DurationMS)*time.Millisecond+time.Minute)
	return rep, err
}
