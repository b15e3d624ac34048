package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/toolgate/toolgate/policy"
	"github.com/toolgate/toolgate/policy/audit"
)

// auditFile is the name of the audit log in the data folder when there is
// no configuration file (the configuration's default is the same).
const auditFile = "audit.jsonl"

// auditPath is where the audit log is: the configuration's audit.path,
// DIR/audit.jsonl with --data-dir DIR, or toolgate-data/audit.jsonl when
// there is no configuration file. hint is what to add to a message that
// found nothing there.
func (g *globals) auditPath(cmd *cobra.Command) (path, hint string, err error) {
	path, hint, _, err = g.auditSource(cmd)
	return path, hint, err
}

// auditSource is auditPath and, with a cluster block, the PostgreSQL
// database that holds every replica's copy ("" without one).
func (g *globals) auditSource(cmd *cobra.Command) (path, hint, pgURL string, err error) {
	st, err := g.state(cmd, false)
	if err != nil {
		return "", "", "", err
	}
	if st.cfg != nil {
		pgURL = st.cfg.Cluster.Postgres.URL
	}
	return st.auditLog(), st.hint(), pgURL, nil
}

// sharedAudit reports whether the audit commands read the shared trail in
// PostgreSQL: with a cluster block, unless --local. --node needs it.
func sharedAudit(pgURL, node string, local bool) (bool, error) {
	switch {
	case local && node != "":
		return false, usageError{errors.New("--node reads the shared audit trail; --local reads this replica's file")}
	case node != "" && pgURL == "":
		return false, usageError{errors.New("--node: the configuration has no cluster.postgres.url, so there is no shared audit trail")}
	}
	return pgURL != "" && !local, nil
}

type auditFlags struct {
	since, key, tool, project string
	subject                   string
	types                     []string
	json                      bool
	node                      string
	local                     bool
}

func newAudit(g *globals) *cobra.Command {
	f := &auditFlags{}
	cmd := &cobra.Command{
		Use:   "audit [--since 1h] [--type tool.denied] [--key ID | --subject SUB] [--tool GLOB] [--json]",
		Short: "Query the audit log, or verify its hash chain",
		Long: `Print the events of the audit log (the configuration's audit.path, by
default toolgate-data/audit.jsonl beside the file; with --data-dir DIR,
DIR/audit.jsonl), oldest first, across rotated files: a table, or with
--json the events as JSON lines. Filters combine. The configuration is
read only for dataDir and audit: its servers' variables need not be set.
Without a configuration file the log in ./toolgate-data is read.

Event types: ` + strings.Join(audit.EventTypes, ", ") + `.

Each line of the log carries the SHA-256 of the line before it;
"toolgate audit verify" checks that chain.

With cluster.postgres.url, both read the shared audit trail of every
replica in PostgreSQL (one chain per replica; --node NAME for one of
them), and --local reads this replica's own file.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath())}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return runAudit(cmd, g, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.since, "since", "", "only events since this long ago (90m, 12h, 7d) or this time (RFC 3339, 2026-03-01T10:00:00Z)")
	fl.StringSliceVar(&f.types, "type", nil, "only events of these types (repeat the flag or separate with commas; globs such as key.* work)")
	fl.StringVar(&f.key, "key", "", "only events of this API key id")
	fl.StringVar(&f.subject, "subject", "", "only events of this OAuth access token subject (its sub claim)")
	fl.StringVar(&f.tool, "tool", "", "only events of tools matching this glob, on the tool's name or on server__tool")
	fl.StringVar(&f.project, "project", "", "only events of this project")
	fl.BoolVar(&f.json, "json", false, "print the events as JSON lines instead of a table")
	g.dataDirFlag(cmd)
	fl.StringVar(&f.node, "node", "", "with cluster.postgres: only the events of this replica (its cluster.node)")
	fl.BoolVar(&f.local, "local", false, "with cluster.postgres: read this replica's local log instead of the shared trail")
	cmd.AddCommand(newAuditVerify(g))
	return cmd
}

// auditQuery is the parsed filters of the audit command.
type auditQuery struct {
	since   time.Time
	types   *policy.Filter // nil: all
	tool    *policy.Filter // nil: all
	key     string
	subject string
	project string
}

func parseAuditQuery(f *auditFlags, now time.Time) (*auditQuery, error) {
	q := &auditQuery{key: f.key, subject: f.subject, project: f.project}
	if s := strings.TrimSpace(f.since); s != "" {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			q.since = t
		} else if strings.ContainsAny(s, "-:T") {
			return nil, usageError{fmt.Errorf("--since: %q is neither a duration (90m, 12h, 7d) nor an RFC 3339 time (2026-03-01T10:00:00Z)", s)}
		} else {
			d, err := parseLifetime("--since", s, false)
			if err != nil {
				return nil, err
			}
			q.since = now.Add(-d)
		}
	}
	if len(f.types) > 0 {
		var globs []string
		for _, t := range f.types {
			t = strings.TrimSpace(t)
			if !strings.ContainsAny(t, `*?[{\`) && !audit.IsEventType(t) {
				return nil, usageError{fmt.Errorf("--type: unknown event type %q (want one of %s)", t, strings.Join(audit.EventTypes, ", "))}
			}
			globs = append(globs, t)
		}
		fl, err := policy.NewFilter(policy.FilterSpec{AllowGlob: globs})
		if err != nil {
			return nil, usageError{fmt.Errorf("--type: %w", err)}
		}
		q.types = fl
	}
	if f.tool != "" {
		fl, err := policy.NewFilter(policy.FilterSpec{AllowGlob: []string{f.tool}})
		if err != nil {
			return nil, usageError{fmt.Errorf("--tool: %w", err)}
		}
		q.tool = fl
	}
	return q, nil
}

func (q *auditQuery) match(e *audit.Event) bool {
	switch {
	case !q.since.IsZero() && e.Time.Before(q.since):
		return false
	case q.types != nil && !q.types.Allows(e.Type):
		return false
	case q.key != "" && e.KeyID != q.key && e.NewKeyID != q.key:
		return false
	case q.subject != "" && e.Subject != q.subject:
		return false
	case q.project != "" && e.Project != q.project:
		return false
	case q.tool != nil && (e.Tool == "" || !q.tool.Allows(e.Tool) && !q.tool.Allows(e.Server+"__"+e.Tool)):
		return false
	}
	return true
}

func runAudit(cmd *cobra.Command, g *globals, f *auditFlags) error {
	q, err := parseAuditQuery(f, time.Now())
	if err != nil {
		return err
	}
	path, hint, pgURL, err := g.auditSource(cmd)
	if err != nil {
		return err
	}
	shared, err := sharedAudit(pgURL, f.node, f.local)
	if err != nil {
		return err
	}
	var tw *tabwriter.Writer
	var enc *json.Encoder
	if f.json {
		enc = json.NewEncoder(g.stdout)
	} else {
		tw = tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tTYPE\tPROJECT\tKEY/SUBJECT\tTOOL/SERVER\tOUTCOME\tDETAIL")
	}
	shown := 0
	read := func(fn func(*audit.Event) error) (audit.ReadReport, error) { return audit.Read(path, fn) }
	if shared {
		path = "the shared audit trail"
		read = func(fn func(*audit.Event) error) (audit.ReadReport, error) {
			ctx := context.Background()
			sh, err := audit.OpenShared(ctx, pgURL)
			if err != nil {
				return audit.ReadReport{}, err
			}
			defer sh.Close()
			n, err := sh.Read(ctx, f.node, q.since, func(_ string, e *audit.Event) error { return fn(e) })
			return audit.ReadReport{Lines: n}, err
		}
	}
	rep, err := read(func(e *audit.Event) error {
		if !q.match(e) {
			return nil
		}
		shown++
		if enc != nil {
			return enc.Encode(e)
		}
		_, err := fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.UTC().Format(time.RFC3339),
			auditCell(e.Type, 20), auditCell(e.Project, 30), auditCell(auditWho(e), 30),
			auditCell(auditTarget(e), 60), auditCell(auditOutcome(e), 20), auditCell(auditDetail(e), 120))
		return err
	})
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(g.stderr, "No audit log at %s%s.\n", path, hint)
		return nil
	}
	if tw != nil && shown > 0 {
		if ferr := tw.Flush(); err == nil {
			err = ferr
		}
	}
	for _, t := range rep.Torn {
		fmt.Fprintf(g.stderr, "Skipped a torn last line at %s (a crash while it was written).\n", t)
	}
	if err != nil {
		return err
	}
	if shown == 0 && !f.json {
		fmt.Fprintf(g.stderr, "No matching events in %s (%d read).\n", path, rep.Lines)
	}
	return nil
}

// auditTarget is the TOOL/SERVER column.
func auditTarget(e *audit.Event) string {
	switch {
	case e.Server != "" && e.Tool != "":
		return e.Server + "/" + e.Tool
	case e.Server != "":
		return e.Server
	case e.Host != "":
		return e.Host
	}
	return e.Tool
}

// auditOutcome is the OUTCOME column.
func auditOutcome(e *audit.Event) string {
	switch {
	case e.Outcome != "":
		return e.Outcome
	case e.Decision != "":
		return e.Decision
	case e.Status != 0:
		return strconv.Itoa(e.Status)
	case e.Type == audit.EventConfigReload && e.Reason != "":
		return "refused"
	}
	return ""
}

// auditDetail is the DETAIL column: what else matters about the event.
func auditDetail(e *audit.Event) string {
	var parts []string
	add := func(format string, args ...any) { parts = append(parts, fmt.Sprintf(format, args...)) }
	if e.LatencyMs != 0 {
		add("%gms", e.LatencyMs)
	}
	if e.DurationMs != 0 {
		add("%gms", e.DurationMs)
	}
	if e.Type == audit.EventCodeExecution {
		add("%d tool calls", e.ToolCalls)
	}
	if len(e.LimitsHit) > 0 {
		add("limits: %s", strings.Join(e.LimitsHit, ", "))
	}
	if e.Method != "" {
		add("%s %s, %d bytes", e.Method, e.Host, e.Bytes)
	}
	if len(e.Changed) > 0 {
		add("changed: %s", strings.Join(e.Changed, ", "))
	}
	if e.KeyName != "" {
		add("key %q", e.KeyName)
	}
	if e.NewKeyID != "" {
		add("replaced by %s", e.NewKeyID)
	}
	if e.OldHash != "" || e.NewHash != "" {
		add("definition %s -> %s", auditShort(e.OldHash), auditShort(e.NewHash))
	}
	if e.Reason != "" {
		add("%s", e.Reason)
	}
	if e.Error != "" {
		add("error: %s", e.Error)
	}
	if e.ClientIP != "" && (e.Type == audit.EventAuthFailure || e.Type == audit.EventIPDenied) {
		add("from %s", e.ClientIP)
	}
	if e.ExecutionID != "" {
		add("execution %s", e.ExecutionID)
	}
	return strings.Join(parts, "; ")
}

func auditShort(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	if h == "" {
		return "(none)"
	}
	return h
}

// auditCell makes s safe for one table cell: the log holds text from
// clients and upstreams, so control characters (terminal escapes, tabs,
// newlines) and invalid UTF-8 become "?", and text longer than limit
// characters is cut.
func auditCell(s string, limit int) string {
	if s == "" {
		return "-"
	}
	var b strings.Builder
	for n := 0; s != ""; n++ {
		if n == limit {
			b.WriteString("…")
			break
		}
		r, size := utf8.DecodeRuneInString(s)
		if unicode.IsControl(r) || (r == utf8.RuneError && size == 1) {
			r = '?'
		}
		b.WriteRune(r)
		s = s[size:]
	}
	return b.String()
}

type auditVerifyFlags struct {
	json  bool
	node  string
	local bool
}

func newAuditVerify(g *globals) *cobra.Command {
	f := &auditVerifyFlags{}
	cmd := &cobra.Command{
		Use:   "verify [--json]",
		Short: "Check the audit log's hash chain; exit 1 at the first broken link",
		Long: `Check that each line of the audit log (and of its rotated files, oldest
first) carries the SHA-256 of the line before it. A removed, changed,
inserted or reordered line breaks the chain; verify names the first line
where it breaks and exits with status 1.

The chain cannot show lines removed from the end: note the head hash that
verify prints, and check later that the line it names is still there.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runAuditVerify(cmd, g, f) },
	}
	cmd.Flags().BoolVar(&f.json, "json", false, "print the report as a JSON object")
	cmd.Flags().StringVar(&f.node, "node", "", "with cluster.postgres: check this replica's chain only")
	cmd.Flags().BoolVar(&f.local, "local", false, "with cluster.postgres: check this replica's local log instead of the shared chains")
	return cmd
}

func runAuditVerify(cmd *cobra.Command, g *globals, f *auditVerifyFlags) error {
	path, hint, pgURL, err := g.auditSource(cmd)
	if err != nil {
		return err
	}
	if shared, err := sharedAudit(pgURL, f.node, f.local); err != nil {
		return err
	} else if shared {
		return runSharedVerify(g, f, pgURL)
	}
	rep, err := audit.Verify(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("no audit log at %s%s", path, hint)
		}
		return err
	}
	if f.json {
		out := struct {
			OK     bool              `json:"ok"`
			Files  []string          `json:"files"`
			Lines  int               `json:"lines"`
			Torn   []string          `json:"torn,omitempty"`
			Start  string            `json:"start"`
			Head   string            `json:"head"`
			Broken *audit.BrokenLink `json:"broken,omitempty"`
		}{rep.OK(), rep.Files, rep.Lines, rep.Torn, rep.Start, rep.Head, rep.Broken}
		if err := writeJSON(g.stdout, out); err != nil {
			return err
		}
	} else {
		writeVerifyReport(g, &rep)
	}
	if b := rep.Broken; b != nil {
		return fmt.Errorf("audit log %s: hash chain broken at %s:%d", path, b.File, b.Line)
	}
	return nil
}

func writeVerifyReport(g *globals, rep *audit.VerifyReport) {
	w := g.stdout
	for _, t := range rep.Torn {
		fmt.Fprintf(w, "Skipped a torn last line at %s (a crash while it was written).\n", t)
	}
	if b := rep.Broken; b != nil {
		fmt.Fprintf(w, "BROKEN at %s:%d: %s\n", b.File, b.Line, auditCell(b.Reason, 200))
		if b.Expected != "" {
			fmt.Fprintf(w, "  expected prev: %s (the SHA-256 of the line before)\n", b.Expected)
		}
		fmt.Fprintf(w, "  found prev:    %s\n", auditCell(b.Got, 80))
		fmt.Fprintf(w, "The %d lines before it, from the oldest file on, are intact.\n", rep.Lines)
		return
	}
	files := "files"
	if len(rep.Files) == 1 {
		files = "file"
	}
	fmt.Fprintf(w, "OK: %d lines in %d %s, hash chain intact.\n", rep.Lines, len(rep.Files), files)
	if rep.Lines > 0 {
		fmt.Fprintf(w, "Head: %s\n", rep.Head)
		if rep.Start != audit.Genesis {
			fmt.Fprintf(w, "The first line follows one that is no longer here (older files rotated away): its prev is %s.\n", auditCell(rep.Start, 80))
		}
	}
}

// runSharedVerify checks every replica's chain in PostgreSQL (or the one
// of --node) and fails when one is broken.
func runSharedVerify(g *globals, f *auditVerifyFlags, pgURL string) error {
	ctx := context.Background()
	sh, err := audit.OpenShared(ctx, pgURL)
	if err != nil {
		return err
	}
	defer sh.Close()
	reps, err := sh.Verify(ctx, f.node)
	if err != nil {
		return err
	}
	if f.node != "" && reps[f.node].Lines == 0 && reps[f.node].Head == "" {
		return fmt.Errorf("no chain of node %q in the shared audit trail", f.node)
	}
	var broken []string
	type nodeJSON struct {
		Node   string            `json:"node"`
		OK     bool              `json:"ok"`
		Lines  int               `json:"lines"`
		Start  string            `json:"start"`
		Head   string            `json:"head"`
		Broken *audit.BrokenLink `json:"broken,omitempty"`
	}
	var out []nodeJSON
	for _, node := range slices.Sorted(maps.Keys(reps)) {
		rep := reps[node]
		if rep.Broken != nil {
			broken = append(broken, fmt.Sprintf("node %s at line %d", node, rep.Broken.Line))
		}
		if f.json {
			out = append(out, nodeJSON{node, rep.OK(), rep.Lines, rep.Start, rep.Head, rep.Broken})
			continue
		}
		fmt.Fprintf(g.stdout, "node %s: ", node)
		writeVerifyReport(g, rep)
	}
	if f.json {
		if err := writeJSON(g.stdout, map[string]any{"ok": len(broken) == 0, "nodes": out}); err != nil {
			return err
		}
	}
	if len(reps) == 0 && !f.json {
		fmt.Fprintln(g.stdout, "The shared audit trail holds no chain yet.")
	}
	if len(broken) > 0 {
		return fmt.Errorf("shared audit trail: hash chain broken: %s", strings.Join(broken, ", "))
	}
	return nil
}

// auditWho is the KEY/SUBJECT cell of an event: the API key's id, or
// "sub:" and the subject of an access token.
func auditWho(e *audit.Event) string {
	if e.KeyID == "" && e.Subject != "" {
		return "sub:" + e.Subject
	}
	return e.KeyID
}
