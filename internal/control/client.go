// Package control is the client side of a node's control socket: HTTP
// over a unix socket, JSON in and out (the server is in package node).
// Do and Get are the transport; Status, Reload, Maint, Ping and Drill are
// the typed requests of the `meshd` commands that talk to a running node,
// and FindSocket says which socket they use. The lab uses it too, reading
// a started node's status to know when a mesh is ready.
package control

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// maxResponse bounds the answer read from a node.
const maxResponse = 64 << 20

// Get fetches path from the node's control socket sock into v, bounded by
// 10 s.
func Get(ctx context.Context, sock, path string, v any) error {
	return Do(ctx, sock, http.MethodGet, path, nil, v, 10*time.Second)
}

// Do sends a request (body as JSON when non-nil) to the node's control
// socket sock and decodes the JSON answer into v, bounded by timeout. A
// non-200 answer is an error with the node's message.
func Do(ctx context.Context, sock, method, path string, body, v any, timeout time.Duration) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Timeout: timeout, Transport: tr}
	req, err := http.NewRequestWithContext(ctx, method, "http://meshd"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the node at %s (is `meshd join` running?): %w", sock, unwrapURLError(err))
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("read %s from %s: %w", path, sock, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", strings.TrimSpace(string(rb)))
	}
	if err := json.Unmarshal(rb, v); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

// unwrapURLError strips the url.Error wrapping down to the *net.OpError
// (or the innermost error), which says what went wrong in the user's terms.
func unwrapURLError(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		if _, isOp := err.(*net.OpError); isOp {
			return err
		}
		next := u.Unwrap()
		if next == nil {
			return err
		}
		err = next
	}
}
