package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/internal/config"
	"github.com/meshd/meshd/internal/control"
	"github.com/meshd/meshd/node"
)

// socketFlags are shared by the commands that talk to a running node.
func socketFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "the node's configuration `FILE` (to find its control socket)"},
		&cli.StringFlag{Name: "socket", Usage: "the node's control socket `PATH` (default: from --config, else " + filepath.Join(config.DefaultDataDir, "meshd.sock") + ")"},
	}
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "show this node, its peers and the service catalog",
		UsageText: "meshd status [--json] [--config FILE | --socket PATH]",
		Flags: append(socketFlags(),
			&cli.BoolFlag{Name: "json", Usage: "print JSON (the format is in docs/formats.md)"}),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return cli.Exit(fmt.Sprintf("status takes no arguments, got %q", c.Args().First()), 2)
			}
			sock, err := socketPath(c)
			if err != nil {
				return err
			}
			var st node.Status
			if err := controlGet(c.Context, sock, "/status", &st); err != nil {
				return err
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printStatus(c.App.Writer, st)
			return nil
		},
	}
}

// socketPath finds the control socket: --socket, else the config's
// control.socket (which defaults to <data_dir>/meshd.sock).
func socketPath(c *cli.Context) (string, error) {
	if s := c.String("socket"); s != "" {
		return s, nil
	}
	if f := c.String("config"); f != "" {
		cfg, err := config.Load(f, config.Overrides{})
		if err != nil {
			return "", err
		}
		return cfg.Control.Socket, nil
	}
	return filepath.Join(config.DefaultDataDir, "meshd.sock"), nil
}

// controlGet fetches path from the node's control socket into v.
func controlGet(ctx context.Context, sock, path string, v any) error {
	return control.Get(ctx, sock, path, v)
}

// controlDo sends a request (body as JSON when non-nil) to the node's
// control socket and decodes the JSON answer into v.
func controlDo(ctx context.Context, sock, method, path string, body, v any, timeout time.Duration) error {
	return control.Do(ctx, sock, method, path, body, v, timeout)
}

// printStatus writes the human-readable form of st.
func printStatus(w io.Writer, st node.Status) {
	n := st.Node
	fmt.Fprintf(w, "node %s  site %s  mesh %s  mode %s\n", n.Name, n.Site, n.MeshIP, n.Mode)
	fmt.Fprintf(w, "gossip %s  tunnel %s  relay %v\n", n.Gossip, n.Tunnel, n.Relay)
	if n.Maintenance {
		fmt.Fprintf(w, "maintenance on%s since %s: exports withdrawn, new streams refused\n", reasonSuffix(n.MaintenanceReason), n.MaintenanceSince)
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tSITE\tSTATE\tUP\tPATH\tENDPOINT\tRTT\tSTREAMS\tTX\tRX\tHANDSHAKE")
	for _, p := range st.Peers {
		ep := p.Endpoint
		if p.RelayVia != "" {
			ep += " via " + p.RelayVia
		}
		rtt := "-"
		if p.RTT() > 0 {
			rtt = fmt.Sprintf("%.2fms", p.RTT())
		}
		hs := p.LastHandshake
		if hs == "" {
			hs = "never"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", p.Name, p.Site, p.State, p.Up, p.Path,
			dash(ep), rtt, p.Streams, humanBytes(p.TxBytes), humanBytes(p.RxBytes), hs)
	}
	tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tNODE\tSITE\tHEALTHY\tACTIVE")
	for _, s := range st.Services {
		for _, e := range s.Endpoints {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%d\n", s.Name, e.Node, e.Site, e.Healthy, e.Active)
		}
	}
	tw.Flush()

	if len(st.Imports) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "IMPORT\tLISTEN\tACTIVE\tTOTAL\tFAILED")
		for _, im := range st.Imports {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\n", im.Name, im.Listen, im.Active, im.Total, im.Failed)
		}
		tw.Flush()
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func humanBytes(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%dB", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(b)/float64(div), "KMGTPE"[exp])
}
