package cli

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/toolgate/toolgate/internal/config"
)

// stateEnv is where the commands that work on toolgate's stored state
// (keys, audit, tools) find it: the data folder of the configuration, or
// the one --data-dir names. They read only what they use (see
// config.LoadState), so they run without the upstreams' variables.
type stateEnv struct {
	// cfg is the configuration; nil with --data-dir or without a file.
	cfg *config.Config
	// dir is the data folder.
	dir string
	// notFound is set when no configuration file was found and no
	// --data-dir given: dir is then ./toolgate-data, which a reading
	// command reads, and searched says where the file was looked for.
	notFound bool
	searched config.Searched
}

// dataDirFlag registers --data-dir on cmd and its subcommands.
func (g *globals) dataDirFlag(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&g.dataDir, "data-dir", "",
		"work on the data folder `DIR` (the gateway's dataDir) instead of reading a configuration file")
}

// state finds the data folder for the command cmd. A command that writes
// state (write) refuses to guess it: without a configuration file and
// without --data-dir it fails, naming the places searched. A reading
// command then reads ./toolgate-data, and says so when it finds nothing.
func (g *globals) state(cmd *cobra.Command, write bool) (*stateEnv, error) {
	if g.dataDir != "" {
		if g.config != "" {
			return nil, usageError{errors.New("-c and --data-dir both say where the data folder is: give one of them")}
		}
		return &stateEnv{dir: g.dataDir}, nil
	}
	file, err := config.Find(g.config)
	if err != nil {
		return nil, err
	}
	if file == "" {
		searched := config.SearchPlaces()
		if write {
			return nil, fmt.Errorf("%s changes the data folder the gateway reads, and no configuration file names it: %s.\n"+
				"Pass -c FILE (the gateway's configuration), or --data-dir DIR (the folder its dataDir names) to be explicit",
				cmd.CommandPath(), searched)
		}
		return &stateEnv{dir: config.DefaultDataDir, notFound: true, searched: searched}, nil
	}
	cfg, err := config.LoadState(file)
	if err != nil {
		return nil, err
	}
	return &stateEnv{cfg: cfg, dir: cfg.DataDir}, nil
}

// keyStore is the path of the key database.
func (e *stateEnv) keyStore() string { return filepath.Join(e.dir, keyStoreFile) }

// auditLog is the path of the audit log: the configuration's audit.path,
// else audit.jsonl in the data folder.
func (e *stateEnv) auditLog() string {
	if e.cfg != nil {
		return e.cfg.Audit.Path
	}
	return filepath.Join(e.dir, auditFile)
}

// pins is the path of the tool-definition pins file.
func (e *stateEnv) pins() string { return pinsPath(&config.Config{DataDir: e.dir}) }

// hint is what a reading command adds when it found nothing: where it
// looked for a configuration file when it found none.
func (e *stateEnv) hint() string {
	if !e.notFound {
		return ""
	}
	return fmt.Sprintf(" (no configuration file found: %s; pass -c FILE or --data-dir DIR)", e.searched)
}
