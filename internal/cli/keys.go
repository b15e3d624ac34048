package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policy/apikey"
)

// keyStoreFile is the name of the key database in the data folder.
const keyStoreFile = "toolgate.db"

// keyStorePath is where the key database of cfg lives: toolgate.db in its
// dataDir. With no configuration it is in ./toolgate-data.
func keyStorePath(cfg *config.Config) string {
	return filepath.Join(dataDir(cfg), keyStoreFile)
}

// dataDir is the data folder of cfg; with no configuration, ./toolgate-data.
func dataDir(cfg *config.Config) string {
	if cfg != nil && cfg.DataDir != "" {
		return cfg.DataDir
	}
	return config.DefaultDataDir
}

func newKeys(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Manage API keys: create, list, revoke, rotate",
		Long: `Manage the API keys clients present (Authorization: Bearer <key>).

Keys look like tg_<id>_<secret>. The id is public: logs and the audit
name keys by it. The secret is shown once, when the key is created or
rotated; only its SHA-256 is kept, in toolgate.db in the configuration's
dataDir (default: toolgate-data beside the file). A running gateway
notices changes made here within seconds.

The keys commands read only dataDir from the configuration: they need
none of the variables its servers name. Without a configuration file,
create, rotate and revoke refuse (they would not know which folder the
gateway reads) unless --data-dir names the folder; list then reads
./toolgate-data.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath())}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	g.dataDirFlag(cmd)
	cmd.AddCommand(newKeysCreate(g), newKeysList(g), newKeysRevoke(g), newKeysRotate(g), newKeysHash(g), newKeysExport(g), newKeysImport(g))
	return cmd
}

// keyEnv is what the keys subcommands work with: the data folder (and
// the configuration, when there is one) and the key store's path, or its
// PostgreSQL database (cluster.postgres.url), where path then names it
// for messages.
type keyEnv struct {
	*stateEnv
	path  string
	pgURL string
}

func (g *globals) keyEnv(cmd *cobra.Command, write bool) (*keyEnv, error) {
	st, err := g.state(cmd, write)
	if err != nil {
		return nil, err
	}
	e := &keyEnv{stateEnv: st, path: st.keyStore()}
	if st.cfg != nil && st.cfg.Cluster.Postgres.URL != "" {
		e.pgURL, e.path = st.cfg.Cluster.Postgres.URL, "PostgreSQL (cluster.postgres.url)"
	}
	return e, nil
}

// open opens the key store: the PostgreSQL database of the cluster
// block, else the SQLite file in dataDir. Unless create is set, a file
// that does not exist yet is reported as (nil, nil), so that reading
// commands leave no files behind.
func (e *keyEnv) open(ctx context.Context, create bool) (apikey.Backend, error) {
	if e.pgURL != "" {
		s, err := apikey.OpenPGStore(ctx, e.pgURL, nil)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	if !create {
		if _, err := os.Stat(e.path); errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
	}
	s, err := apikey.OpenStore(ctx, e.path)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// exactArgs is cobra.ExactArgs as a usage error that names the argument.
func exactArgs(what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != 1 {
			return usageError{fmt.Errorf("%s takes one argument, the %s (got %d)", cmd.CommandPath(), what, len(args))}
		}
		return nil
	}
}

// noArgs is cobra.NoArgs as a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("%s takes no arguments (got %q)", cmd.CommandPath(), args[0])}
	}
	return nil
}

func ctxOf(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

type keysCreateFlags struct {
	project, name, expires string
	json                   bool
}

func newKeysCreate(g *globals) *cobra.Command {
	f := &keysCreateFlags{}
	cmd := &cobra.Command{
		Use:   "create --name NAME [--project P] [--expires 90d] [--json]",
		Short: "Create a key and print it (once)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runKeysCreate(ctxOf(cmd), cmd, g, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.project, "project", config.DefaultProject, "project whose endpoint accepts the key")
	fl.StringVar(&f.name, "name", "", "label of the key, such as who or what uses it (required)")
	fl.StringVar(&f.expires, "expires", "never", "lifetime: a Go duration with d for days (90d, 12h, 1d12h), or never")
	fl.BoolVar(&f.json, "json", false, "print a JSON object instead of text")
	return cmd
}

func runKeysCreate(ctx context.Context, cmd *cobra.Command, g *globals, f *keysCreateFlags) error {
	if f.name == "" {
		return usageError{errors.New("--name is required (a label such as \"ci\" or \"alice-laptop\")")}
	}
	ttl, err := parseLifetime("--expires", f.expires, true)
	if err != nil {
		return err
	}
	env, err := g.keyEnv(cmd, true)
	if err != nil {
		return err
	}
	s, err := env.open(ctx, true)
	if err != nil {
		return err
	}
	defer s.Close()
	plaintext, k, err := s.Create(ctx, f.project, f.name, ttl)
	if err != nil {
		return err
	}
	if env.cfg != nil && env.cfg.Projects[f.project] == nil {
		fmt.Fprintf(g.stderr, "warning: %s has no project %q; the key works once the project exists\n", env.cfg.Path, f.project)
	}
	if f.json {
		return writeJSON(g.stdout, struct {
			Key string `json:"key"`
			keyJSON
		}{plaintext, toJSON(k, time.Now())})
	}
	fmt.Fprintf(g.stdout, "Created API key %s (%q) for project %q; %s.\n\n    %s\n\n",
		k.ID, k.Name, k.Project, expiryPhrase(k.Expires, time.Now()), plaintext)
	fmt.Fprintf(g.stdout, "Copy it now: it will not be shown again (only its hash is stored, in %s).\n", env.path)
	fmt.Fprintln(g.stdout, "Clients send it in the header: Authorization: Bearer <key>")
	return nil
}

type keysListFlags struct {
	project string
	json    bool
}

func newKeysList(g *globals) *cobra.Command {
	f := &keysListFlags{}
	cmd := &cobra.Command{
		Use:   "list [--project P] [--json]",
		Short: "List keys with their status, last use and call count",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runKeysList(ctxOf(cmd), cmd, g, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.project, "project", "", "list only the keys of this project")
	fl.BoolVar(&f.json, "json", false, "print a JSON array instead of a table")
	return cmd
}

func runKeysList(ctx context.Context, cmd *cobra.Command, g *globals, f *keysListFlags) error {
	env, err := g.keyEnv(cmd, false)
	if err != nil {
		return err
	}
	s, err := env.open(ctx, false)
	if err != nil {
		return err
	}
	var keys []*apikey.Key
	if s != nil {
		defer s.Close()
		if keys, err = s.List(ctx, f.project); err != nil {
			return err
		}
	}
	now := time.Now()
	if f.json {
		out := make([]keyJSON, 0, len(keys))
		for _, k := range keys {
			out = append(out, toJSON(k, now))
		}
		return writeJSON(g.stdout, out)
	}
	if len(keys) == 0 {
		fmt.Fprintf(g.stderr, "No API keys in %s%s. Create one with: toolgate keys create --name NAME\n", env.path, env.hint())
		return nil
	}
	tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPROJECT\tNAME\tCREATED\tEXPIRES\tLAST USED\tCALLS\tSTATUS")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", k.ID, k.Project, k.Name,
			tableTime(k.Created, "-"), tableTime(k.Expires, "never"), tableTime(k.LastUsed, "never"), k.Calls, statusText(k, now))
	}
	return tw.Flush()
}

func newKeysRevoke(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a key at once",
		Args:  exactArgs("key id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runKeysRevoke(ctxOf(cmd), cmd, g, args[0])
		},
	}
}

func runKeysRevoke(ctx context.Context, cmd *cobra.Command, g *globals, id string) error {
	env, err := g.keyEnv(cmd, true)
	if err != nil {
		return err
	}
	s, err := env.open(ctx, false)
	if err != nil {
		return err
	}
	if s == nil {
		return fmt.Errorf("key %q: %w (there is no key store at %s yet)", id, apikey.ErrNotFound, env.path)
	}
	defer s.Close()
	k, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	if !k.Revoked.IsZero() {
		fmt.Fprintf(g.stdout, "Key %s (%q, project %q) was already revoked at %s.\n", k.ID, k.Name, k.Project, tableTime(k.Revoked, ""))
		return nil
	}
	if err := s.Revoke(ctx, id); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "Revoked key %s (%q, project %q). A running gateway refuses it within %v.\n",
		k.ID, k.Name, k.Project, apikey.DefaultRefreshInterval)
	return nil
}

type keysRotateFlags struct {
	overlap string
	json    bool
}

func newKeysRotate(g *globals) *cobra.Command {
	f := &keysRotateFlags{}
	cmd := &cobra.Command{
		Use:   "rotate ID [--overlap 24h] [--json]",
		Short: "Replace a key with a new one; the old one keeps working for the overlap",
		Long: `Replace a key with a new one in the same project, with the same name and
the same lifetime. The new key is printed once. The old key keeps working
for --overlap (so that clients can switch) and then expires; "0" stops it
at once.`,
		Args: exactArgs("key id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runKeysRotate(ctxOf(cmd), cmd, g, f, args[0])
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.overlap, "overlap", "24h", "how long the old key keeps working: a Go duration with d for days (24h, 7d), or 0")
	fl.BoolVar(&f.json, "json", false, "print a JSON object instead of text")
	return cmd
}

func runKeysRotate(ctx context.Context, cmd *cobra.Command, g *globals, f *keysRotateFlags, id string) error {
	overlap, err := parseLifetime("--overlap", f.overlap, false)
	if err != nil {
		return err
	}
	env, err := g.keyEnv(cmd, true)
	if err != nil {
		return err
	}
	s, err := env.open(ctx, false)
	if err != nil {
		return err
	}
	if s == nil {
		return fmt.Errorf("key %q: %w (there is no key store at %s yet)", id, apikey.ErrNotFound, env.path)
	}
	defer s.Close()
	plaintext, succ, err := s.Rotate(ctx, id, overlap)
	if err != nil {
		return err
	}
	old, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	now := time.Now()
	if f.json {
		return writeJSON(g.stdout, struct {
			Key string `json:"key"`
			keyJSON
			Replaces   string    `json:"replaces"`
			OldExpires time.Time `json:"oldExpires"`
		}{plaintext, toJSON(succ, now), old.ID, old.Expires})
	}
	fmt.Fprintf(g.stdout, "Rotated key %s (%q, project %q). New key %s; %s.\n\n    %s\n\n",
		old.ID, old.Name, old.Project, succ.ID, expiryPhrase(succ.Expires, now), plaintext)
	fmt.Fprintln(g.stdout, "Copy it now: it will not be shown again.")
	if old.Expires.After(now) {
		fmt.Fprintf(g.stdout, "The old key %s keeps working until %s (for %s); to stop it sooner: toolgate keys revoke %s\n",
			old.ID, tableTime(old.Expires, ""), humanDuration(old.Expires.Sub(now)), old.ID)
	} else {
		fmt.Fprintf(g.stdout, "The old key %s no longer works.\n", old.ID)
	}
	return nil
}

type keysHashFlags struct {
	generate bool
}

func newKeysHash(g *globals) *cobra.Command {
	f := &keysHashFlags{}
	cmd := &cobra.Command{
		Use:   "hash [KEY]",
		Short: "Print the SHA-256 of a key, to list it in the configuration's apiKeys",
		Long: `Print the SHA-256 of a key, the form in which the configuration lists
keys for deployments without a key store:

    "apiKeys": [{"name": "ci", "sha256": "<hash>"}]

The key is read from standard input (one line) unless given as an
argument, which would leave it in the shell's history. --generate makes
a new random key and prints it with its hash; it is not stored anywhere.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 || (f.generate && len(args) > 0) {
				return usageError{errors.New("hash takes at most one key, and none with --generate")}
			}
			return nil
		},
		RunE: func(_ *cobra.Command, args []string) error {
			return runKeysHash(g, f, args)
		},
	}
	cmd.Flags().BoolVar(&f.generate, "generate", false, "make a new key and print it with its hash")
	return cmd
}

func runKeysHash(g *globals, f *keysHashFlags, args []string) error {
	if f.generate {
		plaintext, _, _, err := apikey.Generate()
		if err != nil {
			return err
		}
		fmt.Fprintf(g.stdout, "key:    %s\nsha256: %s\n", plaintext, apikey.Hash(plaintext))
		return nil
	}
	var key string
	if len(args) == 1 {
		key = args[0]
	} else {
		line, err := bufio.NewReader(g.stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read key from standard input: %w", err)
		}
		key = strings.TrimRight(line, "\r\n")
	}
	if key == "" {
		return usageError{errors.New("no key given (pass it on standard input)")}
	}
	fmt.Fprintln(g.stdout, apikey.Hash(key))
	return nil
}

// statusRotated is the status of a key that was rotated and still works
// for the rest of its overlap: its successor is in rotatedTo.
const statusRotated = "rotated"

// keyStatus is the status `keys list` shows: the key store's (active,
// expired, revoked), except that a key rotated to a successor and still
// in its overlap is "rotated" rather than active.
func keyStatus(k *apikey.Key, now time.Time) string {
	st := k.Status(now)
	if st == apikey.StatusActive && k.RotatedTo != "" {
		return statusRotated
	}
	return st
}

// statusText is the STATUS cell of `keys list`: the status, and for a
// rotated key the id of its successor.
func statusText(k *apikey.Key, now time.Time) string {
	st := keyStatus(k, now)
	switch {
	case k.RotatedTo == "":
		return st
	case st == statusRotated:
		return "rotated to " + k.RotatedTo
	}
	return st + ", rotated to " + k.RotatedTo
}

// keyJSON is a key as `keys list --json` prints it. Times are RFC 3339;
// null means never (expires, lastUsed) or not (revoked). Status is
// "active", "rotated" (replaced by the key rotatedTo names, and still
// working until expires), "expired" or "revoked".
type keyJSON struct {
	ID        string     `json:"id"`
	Project   string     `json:"project"`
	Name      string     `json:"name"`
	Created   *time.Time `json:"created"`
	Expires   *time.Time `json:"expires"`
	Revoked   *time.Time `json:"revoked"`
	LastUsed  *time.Time `json:"lastUsed"`
	Calls     int64      `json:"calls"`
	Status    string     `json:"status"`
	RotatedTo string     `json:"rotatedTo,omitempty"`
}

func toJSON(k *apikey.Key, now time.Time) keyJSON {
	opt := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		return &t
	}
	return keyJSON{
		ID: k.ID, Project: k.Project, Name: k.Name,
		Created: opt(k.Created), Expires: opt(k.Expires), Revoked: opt(k.Revoked), LastUsed: opt(k.LastUsed),
		Calls: k.Calls, Status: keyStatus(k, now), RotatedTo: k.RotatedTo,
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// tableTime formats t for people, in UTC; zero is shown as none.
func tableTime(t time.Time, none string) string {
	if t.IsZero() {
		return none
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

func expiryPhrase(expires, now time.Time) string {
	if expires.IsZero() {
		return "it never expires"
	}
	return fmt.Sprintf("it expires %s (in %s)", tableTime(expires, ""), humanDuration(expires.Sub(now)))
}

// humanDuration shows a span to the minute, in days, hours and minutes
// ("2 days", "1 day 12h", "5h30m"); spans under a minute to the second.
func humanDuration(d time.Duration) string {
	const day = 24 * time.Hour
	if d < time.Minute {
		return max(d, 0).Round(time.Second).String()
	}
	d = d.Round(time.Minute)
	var parts []string
	switch days := d / day; {
	case days == 1:
		parts = append(parts, "1 day")
	case days > 1:
		parts = append(parts, fmt.Sprintf("%d days", days))
	}
	h, m := (d%day)/time.Hour, (d%time.Hour)/time.Minute
	switch {
	case h > 0 && m > 0:
		parts = append(parts, fmt.Sprintf("%dh%dm", h, m))
	case h > 0:
		parts = append(parts, fmt.Sprintf("%dh", h))
	case m > 0:
		parts = append(parts, fmt.Sprintf("%dm", m))
	}
	return strings.Join(parts, " ")
}

// maxDays keeps day counts within what a time.Duration holds.
const maxDays = 100 * 365

// parseLifetime reads a duration flag: a Go duration ("36h", "90m"),
// whole days with a d suffix ("90d"), or both ("1d12h"). With
// allowNever, "never" means no expiry (as does a zero duration, the
// key store's convention). Mistakes are usage errors
// that name the flag.
func parseLifetime(flag, s string, allowNever bool) (time.Duration, error) {
	bad := func(why string) error {
		return usageError{fmt.Errorf("%s: invalid duration %q: %s (want, for example, 90d, 12h or 1d12h)", flag, s, why)}
	}
	s = strings.TrimSpace(s)
	if allowNever && (s == "never" || s == "") {
		return 0, nil
	}
	if s == "" {
		return 0, bad("empty")
	}
	var d time.Duration
	rest := s
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		days, err := strconv.Atoi(s[:i])
		if err != nil || days < 0 || s[0] == '+' {
			return 0, bad("the days must be a whole number")
		}
		if days > maxDays {
			return 0, bad("too long")
		}
		d = time.Duration(days) * 24 * time.Hour
		rest = s[i+1:]
	}
	if rest != "" {
		more, err := time.ParseDuration(rest)
		if err != nil {
			return 0, bad("not a duration")
		}
		if more < 0 {
			return 0, bad("negative")
		}
		if more > math.MaxInt64-d {
			return 0, bad("too long")
		}
		d += more
	}
	return d, nil
}
