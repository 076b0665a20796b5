package main

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshd/meshd/internal/cert"
)

func caCommand() *cli.Command {
	return &cli.Command{
		Name:  "ca",
		Usage: "manage the mesh certificate authority (pki; see README.md)",
		Subcommands: []*cli.Command{{
			Name:      "init",
			Usage:     "create a CA: DIR/ca.crt and DIR/ca.key (0600)",
			UsageText: "meshd ca init --out DIR [--name NAME] [--valid 87600h]\n\nKeep ca.key offline; copy ca.crt to every node (pki.ca).",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "out", Usage: "directory for ca.crt and ca.key"},
				&cli.StringFlag{Name: "name", Value: "meshd-ca", Usage: "the CA's name"},
				&cli.DurationFlag{Name: "valid", Value: cert.DefaultCAValidity, Usage: "validity from now"},
			},
			Action: func(c *cli.Context) error {
				if err := needFlags(c, "out"); err != nil {
					return err
				}
				ca, err := cert.InitCA(c.String("out"), c.String("name"), c.Duration("valid"), time.Now())
				if err != nil {
					return err
				}
				fmt.Fprintf(c.App.Writer, "created CA %q in %s (fingerprint %s, expires %s)\n",
					ca.Cert.Name, c.String("out"), ca.Cert.Fingerprint(), ca.Cert.NotAfter.Format(time.RFC3339))
				return nil
			},
		}},
	}
}

func certCommand() *cli.Command {
	return &cli.Command{
		Name:  "cert",
		Usage: "issue and inspect node certificates (pki; see README.md)",
		Subcommands: []*cli.Command{{
			Name:  "sign",
			Usage: "issue a node identity: DIR/NODE.crt and DIR/NODE.key (0600)",
			UsageText: "meshd cert sign --ca DIR --name NODE --site SITE [--groups a,b] [--exports pat,...] [--drill] [--valid 8760h] --out DIR\n\n" +
				"Creates the node's WireGuard and signing keys in DIR/NODE.key. If DIR/NODE.key already\n" +
				"exists, its keys are kept and only DIR/NODE.crt is replaced (renewal; `meshd reload`).",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "ca", Usage: "CA directory (ca.crt, ca.key)"},
				&cli.StringFlag{Name: "name", Usage: "node name (must match the node's config)"},
				&cli.StringFlag{Name: "site", Usage: "node site (must match the node's config)"},
				&cli.StringFlag{Name: "groups", Usage: "comma-separated groups (for exports[].allow group:G)"},
				&cli.StringFlag{Name: "exports", Usage: "comma-separated glob patterns of export names the node may serve (default none)"},
				&cli.BoolFlag{Name: "drill", Usage: "the node may order failover drills"},
				&cli.DurationFlag{Name: "valid", Value: cert.DefaultNodeValidity, Usage: "validity from now (capped at the CA's expiry)"},
				&cli.StringFlag{Name: "out", Usage: "directory for NODE.crt and NODE.key"},
			},
			Action: func(c *cli.Context) error {
				if err := needFlags(c, "ca", "name", "site", "out"); err != nil {
					return err
				}
				t := cert.Template{Name: c.String("name"), Site: c.String("site"), Drill: c.Bool("drill"),
					Groups: cert.SplitList(c.String("groups")), Exports: cert.SplitList(c.String("exports"))}
				crt, renewed, err := cert.SignNode(c.String("ca"), c.String("out"), t, c.Duration("valid"), time.Now())
				if err != nil {
					return err
				}
				verb := "issued"
				if renewed {
					verb = "renewed (keys kept)"
				}
				fmt.Fprintf(c.App.Writer, "%s %s/%s.crt (fingerprint %s, expires %s)\n", verb, c.String("out"), crt.Name,
					crt.Fingerprint(), crt.NotAfter.Format(time.RFC3339))
				return nil
			},
		}, {
			Name:      "show",
			Usage:     "print a certificate's fields, fingerprint and expiry",
			UsageText: "meshd cert show FILE [--json]",
			Flags:     []cli.Flag{jsonFlag("print JSON")},
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return cli.Exit("cert show takes one FILE argument", 2)
				}
				cs, err := cert.ReadCertsFile(c.Args().First())
				if err != nil {
					return err
				}
				cert.Show(c.App.Writer, cs, time.Now(), c.Bool("json"))
				return nil
			},
		}},
	}
}

// needFlags refuses stray arguments and missing required flags with a
// one-line error and exit code 2.
func needFlags(c *cli.Context, names ...string) error {
	if c.NArg() > 0 {
		return cli.Exit(fmt.Sprintf("%s takes no arguments, got %q (see %s --help)", c.Command.HelpName, c.Args().First(), c.Command.HelpName), 2)
	}
	for _, n := range names {
		if c.String(n) == "" {
			return cli.Exit(fmt.Sprintf("%s: --%s is required (see %s --help)", c.Command.HelpName, n, c.Command.HelpName), 2)
		}
	}
	return nil
}
