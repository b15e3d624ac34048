// Package cli implements toolgate's command line: flags, wiring of the
// packages and exit codes. The rules themselves live in the packages it
// wires (gateway, policy, config).
package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/toolgate/toolgate/gateway"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // the command ran and failed (bad config, startup error)
	exitUsage  = 2 // the command line itself was wrong
)

// usageError marks errors in the command line.
type usageError struct{ error }

// Main runs the toolgate command line with args (without the program name)
// and returns the process exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot(stdin, stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "toolgate:", err)
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitFailed
}

// globals are the flags every subcommand takes.
type globals struct {
	config    string
	dataDir   string // --data-dir of the commands that work on stored state
	logLevel  string
	logFormat string
	stdin     io.Reader
	stdout    io.Writer
	stderr    io.Writer
}

func newRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "toolgate",
		Short:         "An MCP gateway: one endpoint over many MCP servers, filtered and guarded",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       gateway.Version,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVarP(&g.config, "config", "c", "", "configuration file (default: $TOOLGATE_CONFIG, else the first toolgate.json, .yaml, .yml or .toml in ., ~/.config/toolgate or /etc/toolgate)")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	pf.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.AddCommand(newServe(g))
	root.AddCommand(newKeys(g))
	root.AddCommand(newCheck(g))
	root.AddCommand(newAudit(g))
	root.AddCommand(newTools(g))
	root.AddCommand(newRun(g))
	root.AddCommand(newBench(g))
	root.AddCommand(newInit(g))
	root.AddCommand(newVersion(g))
	return root
}

// logger builds the structured logger on stderr.
func (g *globals) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level: %w", err)}
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(g.logFormat) {
	case "text":
		return slog.New(slog.NewTextHandler(g.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(g.stderr, opts)), nil
	default:
		return nil, usageError{fmt.Errorf("--log-format: %q is neither text nor json", g.logFormat)}
	}
}
