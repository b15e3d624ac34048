package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/toolgate/toolgate/gateway"
	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policy/apikey"
)

type runFlags struct {
	project string
	key     string
	json    bool
}

func newRun(g *globals) *cobra.Command {
	f := &runFlags{}
	cmd := &cobra.Command{
		Use:   "run SCRIPT.js | -",
		Short: "Run a Code Mode script against the configured tools and print what it returns",
		Long: `Run a Code Mode script locally, exactly as execute_code would run it for an
agent: in the sandbox, with the configuration's limits, calling the
configured upstream tools through the gateway's tool path (filters, rate
limits, audit). Useful to test a script before an agent sends it.

With --key the script runs as that key (its project and per-key limits);
otherwise as the operator in --project. With no configuration file the
script calls the built-in demo's tools (the ones toolgate serve shows
without a configuration), for example:

    const r = await tools.demo.list_records({limit: 20}); return r.total;`,
		Args: exactArgs("a script file (or - for standard input)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runScript(ctxOf(cmd), g, f, args[0])
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.project, "project", config.DefaultProject, "project whose tools the script calls")
	fl.StringVar(&f.key, "key", "", "run as this API key (tg_...)")
	fl.BoolVar(&f.json, "json", false, "print the result as JSON ({result, logs, toolCalls, durationMs, error?})")
	return cmd
}

func runScript(ctx context.Context, g *globals, f *runFlags, file string) error {
	var code []byte
	var err error
	if file == "-" {
		code, err = io.ReadAll(g.stdin)
	} else {
		code, err = os.ReadFile(file)
	}
	if err != nil {
		return fmt.Errorf("reading the script: %w", err)
	}
	log, err := g.logger()
	if err != nil {
		return err
	}
	path, err := config.Find(g.config)
	if err != nil {
		return err
	}
	var cfg *config.Config
	if path == "" {
		if f.key != "" {
			return usageError{errors.New("--key needs a configuration file (-c): the built-in demo has no key store")}
		}
		// The demo's upstream stops with ctx; its data (audit log, tool
		// pins) goes to a temporary folder.
		dctx, stopDemo := context.WithCancel(ctx)
		defer stopDemo()
		if cfg, _, err = startDemo(dctx, log, ""); err != nil {
			return err
		}
		dir, err := os.MkdirTemp("", "toolgate-run-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.DataDir, cfg.Audit.Path = dir, filepath.Join(dir, "audit.jsonl")
		fmt.Fprintln(g.stderr, "No configuration file found: the script runs against the built-in demo's tools (demo__echo, demo__add, demo__list_records, ...).")
	} else if cfg, err = config.Load(path); err != nil {
		return err
	}
	cfg.CodeMode.Enabled = true // running a script is the point
	gw, release, err := openGateway(ctx, cfg, log, path != "")
	if err != nil {
		return err
	}
	defer release()

	pr := gateway.Principal{Project: f.project, ClientIP: "local"}
	if f.key != "" {
		store, err := apikey.OpenStore(ctx, keyStorePath(cfg))
		if err != nil {
			return err
		}
		defer store.Close()
		authn, err := apikey.NewAuthenticator(ctx, store, nil, nil)
		if err != nil {
			return err
		}
		k, err := authn.Authenticate(f.key, f.project)
		if err != nil {
			return fmt.Errorf("--key: %w", err)
		}
		pr.KeyID = k.ID
	}
	res, err := gw.ExecuteCode(ctx, f.project, pr, string(code))
	if err != nil {
		return err
	}
	out := gateway.ExecutionOutput{Result: res.Result, Logs: res.Logs, ToolCalls: res.ToolCalls, DurationMs: res.DurationMs, Error: res.Error, Truncated: res.Truncated}
	if f.json {
		if err := writeJSON(g.stdout, out); err != nil {
			return err
		}
	} else {
		for _, l := range res.Logs {
			fmt.Fprintf(g.stdout, "[%s] %s\n", l.Level, l.Message)
		}
		for _, c := range res.ToolCalls {
			status := "ok"
			if !c.OK {
				status = "failed"
			}
			fmt.Fprintf(g.stdout, "call %s: %s in %.1f ms\n", c.Tool, status, c.Ms)
		}
		if res.Error == nil {
			var pretty strings.Builder
			var v any
			if json.Unmarshal(res.Result, &v) == nil {
				b, _ := json.MarshalIndent(v, "", "  ")
				pretty.Write(b)
			} else {
				pretty.Write(res.Result)
			}
			fmt.Fprintf(g.stdout, "result: %s\n", pretty.String())
		}
		fmt.Fprintf(g.stdout, "%.1f ms\n", res.DurationMs)
	}
	if res.Error != nil {
		msg := res.Error.Name + ": " + res.Error.Message
		if res.Error.Limit != "" {
			msg += " (limit " + res.Error.Limit + ")"
		}
		if res.Error.Line > 0 {
			msg += fmt.Sprintf(" at line %d", res.Error.Line)
		}
		return errors.New("the script failed: " + msg)
	}
	return nil
}
