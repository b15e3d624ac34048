package cli

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/toolgate/toolgate/internal/buildinfo"
)

func newVersion(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version [--json]",
		Short: "Print the version, commit and the versions of go-sdk, wazero and qjs",
		Long: `Print toolgate's version and the commit it was built from, the Go
release that built it, and the versions of the modules that decide how it
speaks MCP and runs Code Mode scripts: the MCP Go SDK (go-sdk), wazero and
qjs. A binary from go install ...@VERSION reports that module version; one
built by make build or make install in a checkout, the tag at HEAD or a
pseudo-version of the commit, with "+dirty" when the tree had uncommitted
changes.`,
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error {
			return printVersion(g, buildinfo.Read(), asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func printVersion(g *globals, info buildinfo.Info, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(info)
	}
	w := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "toolgate\t%s\n", info.Version)
	commit := info.Commit
	if commit == "" {
		commit = "unknown"
	}
	if info.Modified {
		commit += " (modified)"
	}
	fmt.Fprintf(w, "commit\t%s\n", commit)
	fmt.Fprintf(w, "go\t%s %s\n", info.Go, info.Platform)
	for _, d := range info.Dependencies {
		v := d.Version
		if v == "" {
			v = "unknown" // no build information names it
		}
		fmt.Fprintf(w, "%s\t%s\n", d.Name, v)
	}
	return w.Flush()
}
