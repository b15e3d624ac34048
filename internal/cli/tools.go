package cli

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/internal/config"
)

// pinsPath is the tool-definition pins file of cfg (nil: no config file).
func pinsPath(cfg *config.Config) string {
	return filepath.Join(dataDir(cfg), gateway.PinsFile)
}

// openPins opens the pins of env: the PostgreSQL tables of the cluster
// block, else the pins file in dataDir. close releases them.
func openPins(ctx context.Context, env *stateEnv) (pins gateway.PinStore, close func(), err error) {
	if env.cfg != nil && env.cfg.Cluster.Postgres.URL != "" {
		pg, err := gateway.OpenPostgresPins(ctx, env.cfg.Cluster.Postgres.URL)
		if err != nil {
			return nil, nil, err
		}
		return pg, pg.Close, nil
	}
	f, err := gateway.OpenPinsFile(env.pins())
	if err != nil {
		return nil, nil, err
	}
	return f, func() {}, nil
}

func newTools(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tools",
		Short: "Review upstream tools whose definitions changed",
		Long: `The gateway remembers a hash of every upstream tool's name, description and
schemas when it first sees it. A tool whose definition changes afterwards is
listed by "tools pending" and, with quarantineChangedTools, hidden from
clients until "tools approve" accepts the new definition (a running
gateway notices within a few seconds).`,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "pending",
		Short: "List tools whose definitions changed and await approval",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env, err := g.state(cmd, false)
			if err != nil {
				return err
			}
			store, done, err := openPins(cmd.Context(), env)
			if err != nil {
				return err
			}
			defer done()
			pins, err := store.Load(cmd.Context())
			if err != nil {
				return err
			}
			if len(pins.Pending) == 0 {
				fmt.Fprintln(g.stdout, "no changed tool definitions")
				return nil
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TOOL\tCHANGED\tOLD HASH\tNEW HASH")
			for _, k := range slices.Sorted(maps.Keys(pins.Pending)) {
				c := pins.Pending[k]
				fmt.Fprintf(tw, "%s\t%s\t%.12s\t%.12s\n", k, c.Seen.Format(time.RFC3339), pins.Pins[k].Hash, c.Hash)
			}
			return tw.Flush()
		},
	})
	var all bool
	approve := &cobra.Command{
		Use:   "approve PROJECT/SERVER/TOOL... | --all",
		Short: "Accept the changed definitions of tools",
		RunE: func(cmd *cobra.Command, args []string) error {
			if all == (len(args) > 0) {
				return usageError{fmt.Errorf("name the tools to approve (as listed by tools pending) or give --all")}
			}
			env, err := g.state(cmd, true)
			if err != nil {
				return err
			}
			store, done, err := openPins(cmd.Context(), env)
			if err != nil {
				return err
			}
			defer done()
			approved, err := store.Approve(cmd.Context(), args, time.Now().UTC())
			if err != nil {
				return err
			}
			for _, k := range approved {
				fmt.Fprintln(g.stdout, "approved", k)
			}
			if len(approved) == 0 {
				fmt.Fprintln(g.stdout, "no changed tool definitions")
			}
			return nil
		},
	}
	approve.Flags().BoolVar(&all, "all", false, "approve every pending definition")
	cmd.AddCommand(approve)
	g.dataDirFlag(cmd)
	return cmd
}
