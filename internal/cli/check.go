package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policy/apikey"
)

// `toolgate check` grades a configuration against the security checklist.
// Each item of the checklist is a function that returns
// findings (pass, warn or fail, each with a reason and a fix); the report
// lists them grouped by item, in the checklist's order, sorted within an
// item. Nothing in the report depends on the time of day or on map order,
// and no secret is ever printed: literal credentials are shown masked
// (their first characters and "…"), URLs by host.

type checkFlags struct {
	json bool
}

func newCheck(g *globals) *cobra.Command {
	f := &checkFlags{}
	cmd := &cobra.Command{
		Use:   "check [-c FILE] [--json]",
		Short: "Grade a configuration against the security checklist",
		Long: `Grade a configuration against the security checklist: API key
authentication, tool filtering on every server, credentials from
environment variables, one credential per server, HTTPS-only endpoints,
the audit log, rate limits, the age of API keys, Code Mode limits and,
where a project accepts them, OAuth access tokens (an HTTPS issuer, an
audience, no scope or group that grants every tool).

Every item is reported as pass, warn or fail with the reason and the fix.
A file that does not load is graded too: each of its problems (a syntax
error, an invalid value, an unknown key, an environment variable that is
not set) is a failed check with its key path, next to every check that
could still run. With --json, the output is always one JSON document.
The exit code is 1 when any check fails, 2 for a mistake in the command
line, 0 otherwise. Literal secrets are never printed, only masked.`,
		Args: func(cmd *cobra.Command, args []string) error {
			return f.usage(g, noArgs(cmd, args))
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCheck(ctxOf(cmd), g, f)
		},
	}
	cmd.Flags().BoolVar(&f.json, "json", false, "print a JSON object {items, summary} instead of a report")
	return cmd
}

// errCheckFailed is returned (wrapped) when an item failed: the report is
// printed, the exit code is 1.
var errCheckFailed = errors.New("the configuration fails the security checklist")

// usage returns err, a mistake in the command line, as a usage error; with
// --json it also prints it as the one JSON document, {"error": "..."}.
func (f *checkFlags) usage(g *globals, err error) error {
	if err == nil {
		return nil
	}
	if f.json {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(map[string]string{"error": err.Error()})
	}
	var ue usageError
	if errors.As(err, &ue) {
		return err
	}
	return usageError{err}
}

func runCheck(ctx context.Context, g *globals, f *checkFlags) error {
	path, err := config.Find(g.config)
	var in *checkInput
	switch {
	case err != nil:
		// A file named with -c (or TOOLGATE_CONFIG) that cannot be
		// read: graded as a file that does not load.
		in = &checkInput{loadErr: err, namedByEnv: g.config == "", now: time.Now()}
	case path == "":
		return f.usage(g, errors.New("no configuration file to check: pass -c FILE or set TOOLGATE_CONFIG, or put toolgate.json (.yaml, .yml or .toml) in this folder, in ~/.config/toolgate or in /etc/toolgate"))
	default:
		in = loadCheckInput(path, time.Now())
	}
	rep := gradeConfig(ctx, in)
	if f.json {
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false) // reasons say <key>, fixes use &&
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		writeCheckReport(g.stdout, path, rep)
	}
	if rep.Summary.Failed > 0 {
		return fmt.Errorf("%w: %d %s failed", errCheckFailed, rep.Summary.Failed, checkPlural(rep.Summary.Failed, "item", "items"))
	}
	return nil
}

// Statuses of a finding, from best to worst.
const (
	statusPass = "pass"
	statusWarn = "warn"
	statusFail = "fail"
)

var statusRank = map[string]int{statusPass: 0, statusWarn: 1, statusFail: 2}

var statusMarker = map[string]string{statusPass: "✓", statusWarn: "!", statusFail: "✗"}

// checkResult is one line of the report, and one element of `items` in
// the JSON form.
type checkResult struct {
	// ID and Title name the checklist item.
	ID    string `json:"id"`
	Title string `json:"title"`
	// Status is "pass", "warn" or "fail".
	Status string `json:"status"`
	Reason string `json:"reason"`
	// Fix says what to change; empty for a pass.
	Fix string `json:"fix"`
	// Path is the key path in the file the finding is about, if any.
	Path string `json:"path,omitempty"`
}

type checkSummary struct {
	Passed   int `json:"passed"`
	Warnings int `json:"warnings"`
	Failed   int `json:"failed"`
}

type checkReport struct {
	Items   []checkResult `json:"items"`
	Summary checkSummary  `json:"summary"`
	// FromEnv lists the settings TOOLGATE_ variables gave in place of
	// the file's (the findings grade them as they apply); never a value.
	FromEnv []checkEnv `json:"fromEnvironment,omitempty"`
}

// checkEnv is a setting taken from the environment.
type checkEnv struct {
	Var  string `json:"var"`
	Path string `json:"path"`
}

// checkFinding is what a checklist item returns.
type checkFinding struct {
	status, path, reason, fix string
}

func findPass(path, reason string) checkFinding {
	return checkFinding{statusPass, path, reason, ""}
}

func findWarn(path, reason, fix string) checkFinding {
	return checkFinding{statusWarn, path, reason, fix}
}

func findFail(path, reason, fix string) checkFinding {
	return checkFinding{statusFail, path, reason, fix}
}

// checkItem is one item of the security checklist.
type checkItem struct {
	id, title string
	run       func(context.Context, *checkInput) []checkFinding
}

// checklist is the security checklist, in the order of the report.
var checklist = []checkItem{
	{"auth", "API key authentication", checkAuth},
	{"oauth", "OAuth access tokens", checkOAuth},
	{"tool-filtering", "Tool filtering on every server", checkToolFiltering},
	{"env-credentials", "Credentials from environment variables", checkLiteralSecrets},
	{"credential-per-server", "One credential per server", checkCredentialReuse},
	{"https", "HTTPS-only endpoints", checkHTTPS},
	{"audit", "Audit log enabled and writable", checkAudit},
	{"rate-limits", "Rate limits", checkRateLimits},
	{"key-age", "Key age within the rotation schedule", checkKeyAge},
	{"code-mode", "Code Mode limits", checkCodeMode},
}

// checkInput is what the checks read: the loaded configuration (values
// interpolated, defaults applied), the file as written (values not
// interpolated) and the clock key ages are measured by. A file that does
// not load has problems, or a loadErr and no configuration at all.
type checkInput struct {
	// problems are what keeps the file from loading, each with its key
	// path; cfg is then what could be read of it.
	problems []config.Problem
	// loadErr says why there is no configuration (cfg is nil): the file
	// cannot be read or does not parse. namedByEnv is whether
	// TOOLGATE_CONFIG named the file.
	loadErr    error
	namedByEnv bool
	cfg        *config.Config
	// file is the document as written, which names the key paths.
	file config.Node
	// hasProjects is whether the file uses `projects` (key paths differ).
	hasProjects bool
	now         time.Time
}

// loadCheckInput reads the configuration at path for checking, problems
// and all. A file that cannot be read or parsed is an input with a
// loadErr, not an error.
func loadCheckInput(path string, now time.Time) *checkInput {
	in, err := config.Inspect(path)
	if err != nil {
		return &checkInput{loadErr: err, now: now}
	}
	return &checkInput{
		problems:    in.Problems,
		cfg:         in.Config,
		file:        in.File,
		hasProjects: in.File.Get("projects").Exists(),
		now:         now,
	}
}

// loadItem grades whether the file loads. It is reported only when it
// does not: then first, one failed check per problem.
var loadItem = checkItem{"config", "Configuration loads", checkLoads}

// gradeConfig runs the checklist. Each check returns its findings in a
// fixed order (the listener first, then servers sorted by key path). A
// file that does not load gets a failed check per problem first; the
// checklist then runs on what could be read, leaving out findings about
// values that are themselves a problem. Without a configuration at all
// nothing else can run.
func gradeConfig(ctx context.Context, in *checkInput) checkReport {
	rep := checkReport{Items: []checkResult{}}
	if in.cfg != nil {
		for _, o := range in.cfg.FromEnv {
			rep.FromEnv = append(rep.FromEnv, checkEnv{Var: o.Var, Path: o.Path})
		}
	}
	items := checklist
	switch {
	case in.cfg == nil:
		items = []checkItem{loadItem}
	case len(in.problems) > 0:
		items = append([]checkItem{loadItem}, checklist...)
	}
	for _, item := range items {
		for _, f := range item.run(ctx, in) {
			if item.id != loadItem.id && in.isProblem(f.path) {
				continue
			}
			rep.Items = append(rep.Items, checkResult{
				ID: item.id, Title: item.title, Status: f.status,
				Reason: f.reason, Fix: f.fix, Path: f.path,
			})
			switch f.status {
			case statusPass:
				rep.Summary.Passed++
			case statusWarn:
				rep.Summary.Warnings++
			case statusFail:
				rep.Summary.Failed++
			}
		}
	}
	return rep
}

// writeCheckReport prints the report for people: one block per checklist
// item, marked with its worst status, then a summary line.
func writeCheckReport(w io.Writer, file string, rep checkReport) {
	fmt.Fprintf(w, "Security checklist for %s\n", file)
	if len(rep.FromEnv) > 0 {
		fmt.Fprintf(w, "\nSettings from the environment, in place of the file's:\n")
		for _, e := range rep.FromEnv {
			fmt.Fprintf(w, "  %s: %s\n", e.Path, e.Var)
		}
	}
	for i := 0; i < len(rep.Items); {
		j := i
		worst := statusPass
		for j < len(rep.Items) && rep.Items[j].ID == rep.Items[i].ID {
			if statusRank[rep.Items[j].Status] > statusRank[worst] {
				worst = rep.Items[j].Status
			}
			j++
		}
		fmt.Fprintf(w, "\n%s %s\n", statusMarker[worst], rep.Items[i].Title)
		for _, r := range rep.Items[i:j] {
			line := r.Reason
			if r.Path != "" {
				line = r.Path + ": " + line
			}
			fmt.Fprintf(w, "  %s %s\n", statusMarker[r.Status], line)
			if r.Fix != "" {
				fmt.Fprintf(w, "    fix: %s\n", r.Fix)
			}
		}
		i = j
	}
	s := rep.Summary
	fmt.Fprintf(w, "\n%d passed, %d %s, %d failed\n", s.Passed, s.Warnings, checkPlural(s.Warnings, "warning", "warnings"), s.Failed)
}

func checkPlural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// --- key paths -------------------------------------------------------------

// project is project p in the file: the whole file when it has no
// `projects`.
func (in *checkInput) project(p string) config.Node {
	if in.hasProjects {
		return in.file.Get("projects").Get(p)
	}
	return in.file
}

// projectPath is the key path of key k of project p.
func (in *checkInput) projectPath(p, k string) string {
	return in.project(p).Get(k).Path()
}

// placedServer is a server of the loaded configuration with its project
// and its place in the file.
type placedServer struct {
	project, path string
	node          config.Node
	s             *config.Server
}

// servers lists every server of every project, sorted by key path.
func (in *checkInput) servers() []placedServer {
	var out []placedServer
	for _, pn := range slices.Sorted(maps.Keys(in.cfg.Projects)) {
		p := in.cfg.Projects[pn]
		for _, sn := range slices.Sorted(maps.Keys(p.MCPServers)) {
			n := in.project(pn).Get("mcpServers").Get(sn)
			out = append(out, placedServer{pn, n.Path(), n, p.MCPServers[sn]})
		}
	}
	slices.SortFunc(out, func(a, b placedServer) int { return strings.Compare(a.path, b.path) })
	return out
}

// rawField is one string value of the file, as written, that package
// config interpolates and that may hold a credential.
type rawField struct {
	path string
	// kind is "url", "header", "env", "arg" or "webhook".
	kind string
	// name is the header or environment variable name (for an argument
	// --flag=value, the flag), else "".
	name string
	// server is the key path of the server it belongs to ("" for
	// alerts.webhook).
	server string
	value  string
}

// rawCredentialFields lists the url, headers, env and args values of every
// server in the file (sorted by server), then alerts.webhook, as written.
func (in *checkInput) rawCredentialFields() []rawField {
	var out []rawField
	for _, srv := range in.fileServers() {
		if s, ok := srv.Get("url").Text(); ok {
			out = append(out, rawField{path: srv.Get("url").Path(), kind: "url", server: srv.Path(), value: s})
		}
		for _, field := range []struct{ key, kind string }{{"headers", "header"}, {"env", "env"}} {
			for _, e := range srv.Get(field.key).Entries() {
				if s, ok := e.Text(); ok {
					out = append(out, rawField{path: e.Path(), kind: field.kind, name: e.Key(), server: srv.Path(), value: s})
				}
			}
		}
		for _, e := range srv.Get("args").Elems() {
			if s, ok := e.Text(); ok {
				name, value := argNameValue(s)
				out = append(out, rawField{path: e.Path(), kind: "arg", name: name, server: srv.Path(), value: value})
			}
		}
	}
	wh := in.file.Get("alerts").Get("webhook")
	if s, ok := wh.Text(); ok {
		out = append(out, rawField{path: wh.Path(), kind: "webhook", value: s})
	}
	return out
}

// fileServers lists the servers of the file as written, sorted by path.
func (in *checkInput) fileServers() []config.Node {
	projects := []config.Node{in.file}
	if in.hasProjects {
		projects = in.file.Get("projects").Entries()
	}
	var out []config.Node
	for _, p := range projects {
		out = append(out, p.Get("mcpServers").Entries()...)
	}
	slices.SortFunc(out, func(a, b config.Node) int { return strings.Compare(a.Path(), b.Path()) })
	return out
}

// --- loading -----------------------------------------------------------------

func checkLoads(_ context.Context, in *checkInput) []checkFinding {
	if in.cfg == nil {
		fix := "correct the file where the error says; serve refuses to start with it"
		switch {
		case errors.Is(in.loadErr, fs.ErrNotExist) && in.namedByEnv:
			fix = fmt.Sprintf("set %s to the path of an existing configuration file, or unset it", config.EnvConfigFile)
		case errors.Is(in.loadErr, fs.ErrNotExist):
			fix = "pass -c the path of an existing configuration file"
		}
		return []checkFinding{findFail("", fmt.Sprintf("the file cannot be read as a configuration, so no other check could run: %v", in.loadErr), fix)}
	}
	var out []checkFinding
	for _, p := range in.problems {
		reason := p.Message
		if p.Var != "" {
			reason += " (the value of " + p.Var + ")"
		}
		out = append(out, findFail(p.Path, reason, problemFix(p)))
	}
	return out
}

// problemFix says how to fix a problem that keeps a file from loading.
func problemFix(p config.Problem) string {
	if p.Var != "" {
		return fmt.Sprintf("correct %s in the environment of toolgate, or unset it to use the file's value", p.Var)
	}
	if name, ok := strings.CutPrefix(p.Message, "environment variable "); ok {
		if name, ok := strings.CutSuffix(name, " is not set"); ok {
			return fmt.Sprintf("set %s in the environment of toolgate (check reads the same environment as serve)", name)
		}
	}
	if strings.HasPrefix(p.Message, "unknown key") {
		return "correct the key's spelling, or remove it"
	}
	return "correct the value: serve refuses to start until every problem of the file is fixed"
}

// isProblem reports whether path, or a key path that holds it, is one of
// the problems of the file: a check's finding there would only repeat it.
func (in *checkInput) isProblem(path string) bool {
	if path == "" {
		return false
	}
	for _, p := range in.problems {
		if p.Path == "" {
			continue
		}
		if path == p.Path || strings.HasPrefix(path, p.Path+".") || strings.HasPrefix(path, p.Path+"[") {
			return true
		}
	}
	return false
}

// --- API key authentication ----------------------------------------------

func checkAuth(_ context.Context, in *checkInput) []checkFinding {
	cfg := in.cfg
	if cfg.AuthRequired() {
		for _, p := range cfg.Projects {
			if p.Auth.OAuth != nil && p.Auth.Accepts(config.CredentialOAuth) {
				return []checkFinding{findPass("", "clients must present a credential (Authorization: Bearer): an API key, or an OAuth access token where a project accepts them")}
			}
		}
		return []checkFinding{findPass("", "clients must present an API key (Authorization: Bearer <key>)")}
	}
	fix := `remove "auth": {"required": false} and give every client a key of its own (toolgate keys create --name NAME)`
	if listenIsLoopback(cfg.Listen) {
		if key := anyOriginKey(in); key != "" {
			return []checkFinding{findFail(key,
				fmt.Sprintf(`authentication is off on loopback listen %s and %s holds "*": any web page the user opens can call every tool through the browser (DNS rebinding)`, cfg.Listen, key),
				`remove "*" and list the names and origins of your clients, or require keys`)}
		}
		return []checkFinding{findWarn("auth.required",
			fmt.Sprintf("authentication is off; listen %s is loopback, so every process on this machine can call every tool (web pages cannot: the Host and Origin checks refuse them)", cfg.Listen), fix)}
	}
	return []checkFinding{findFail("auth.required",
		fmt.Sprintf("authentication is off and listen %s is reachable from other machines: anyone who reaches it can call every tool (serve refuses to start like this)", cfg.Listen), fix)}
}

// anyOriginKey names an allowedHosts or allowedOrigins list (top level
// or of a project) that holds "*", which lets web pages reach the gateway;
// "" when none does.
func anyOriginKey(in *checkInput) string {
	cfg := in.cfg
	for _, l := range []struct {
		key  string
		list []string
	}{{"allowedHosts", cfg.AllowedHosts}, {"allowedOrigins", cfg.AllowedOrigins}} {
		if slices.Contains(l.list, config.AnyHost) {
			return l.key
		}
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Projects)) {
		p := cfg.Projects[name]
		if slices.Contains(p.AllowedHosts, config.AnyHost) {
			return in.projectPath(name, "allowedHosts")
		}
		if slices.Contains(p.AllowedOrigins, config.AnyHost) {
			return in.projectPath(name, "allowedOrigins")
		}
	}
	return ""
}

// listenIsLoopback reports whether a listen address (host:port) is on
// loopback only. An empty host listens on every interface.
func listenIsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	return config.IsLoopbackHost(host)
}

// --- tool filtering --------------------------------------------------------

func checkToolFiltering(_ context.Context, in *checkInput) []checkFinding {
	var out []checkFinding
	for _, ps := range in.servers() {
		s, proj := ps.s, in.cfg.Projects[ps.project]
		var allow, deny []string
		if len(s.AllowedTools) > 0 {
			allow = append(allow, "allowedTools")
		}
		if len(s.AllowedToolsGlob) > 0 {
			allow = append(allow, "allowedToolsGlob")
		}
		if len(s.DenyToolsGlob) > 0 {
			deny = append(deny, "denyToolsGlob")
		}
		switch {
		case len(allow) > 0:
			out = append(out, findPass(ps.path, fmt.Sprintf("only the tools its allow list matches are visible (%s)", strings.Join(append(allow, deny...), ", "))))
		case len(proj.AllowedTools) > 0:
			out = append(out, findPass(ps.path, fmt.Sprintf("only the tools listed in %s are visible (default deny)", in.projectPath(ps.project, "allowedTools"))))
		case len(deny) > 0:
			out = append(out, findWarn(ps.path,
				"only a deny list (denyToolsGlob): every tool it does not match is visible, including tools the server adds later",
				`add an allow list of the tools clients need: allowedToolsGlob (for example ["read_*", "list_*"]) or allowedTools`))
		default:
			out = append(out, findFail(ps.path,
				"no tool filter: every tool the server offers is visible and callable, including tools it adds later",
				fmt.Sprintf(`add allowedToolsGlob (for example ["read_*", "list_*"]) or allowedTools to the server, or list the visible tools in %s`, in.projectPath(ps.project, "allowedTools"))))
		}
	}
	if len(out) == 0 {
		out = append(out, findPass("", "no upstream servers configured"))
	}
	return out
}

// --- literal credentials -----------------------------------------------------

func checkLiteralSecrets(_ context.Context, in *checkInput) []checkFinding {
	var out []checkFinding
	fields := in.rawCredentialFields()
	for _, f := range fields {
		hit, ok := findSecret(f.name, literalText(f.value))
		if !ok {
			continue
		}
		v := suggestVar(f)
		fix := fmt.Sprintf("write ${%s} in its place and set %s in the environment; then rotate the credential, it has been stored in the file", v, v)
		reason := fmt.Sprintf("literal %s %q in the file", hit.kind, maskSecret(hit.token))
		if hit.sure {
			out = append(out, findFail(f.path, reason, fix))
		} else {
			out = append(out, findWarn(f.path, reason+": "+hit.why, fix+" (if it is no secret, ignore this)"))
		}
	}
	if len(out) == 0 {
		out = append(out, findPass("", fmt.Sprintf("no literal credential in url, headers, env or args (%d %s scanned); secrets come from ${VAR}",
			len(fields), checkPlural(len(fields), "value", "values"))))
	}
	return out
}

// suggestVar proposes the environment variable to hold the credential of
// field f: the variable's own name in env, SERVER_URL for a url (the whole
// URL moves to the environment), SERVER_TOKEN otherwise.
func suggestVar(f rawField) string {
	suffix := "_TOKEN"
	switch {
	case f.kind == "webhook":
		return "ALERT_WEBHOOK_URL"
	case f.kind == "env" && validEnvName(f.name):
		return f.name
	case f.kind == "url":
		suffix = "_URL"
	}
	server := f.server[strings.LastIndexAny(f.server, ".[")+1:]
	server = strings.Trim(server, `"]`)
	var b strings.Builder
	for _, r := range strings.ToUpper(server) {
		if r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	name := strings.Trim(b.String(), "_")
	if name == "" || name[0] >= '0' && name[0] <= '9' {
		name = "SERVER_" + name
	}
	return name + suffix
}

func validEnvName(s string) bool {
	for i, r := range s {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return s != ""
}

// --- one credential per server ---------------------------------------------

func checkCredentialReuse(_ context.Context, in *checkInput) []checkFinding {
	type use struct{ server, path string }
	uses := map[string][]use{}
	for _, ps := range in.servers() {
		for _, c := range serverCredentials(ps) {
			uses[c.token] = append(uses[c.token], use{ps.path, c.path})
		}
	}
	var out []checkFinding
	for tok, us := range uses {
		servers := map[string]bool{}
		for _, u := range us {
			servers[u.server] = true
		}
		if len(servers) < 2 {
			continue
		}
		paths := make([]string, 0, len(us))
		for _, u := range us {
			paths = append(paths, u.path)
		}
		slices.Sort(paths)
		paths = slices.Compact(paths)
		out = append(out, findFail(paths[0],
			fmt.Sprintf("the same credential %q is used by %d servers: %s", maskSecret(tok), len(servers), strings.Join(paths, " and ")),
			"give each server a credential of its own, scoped to what that server needs, so that a leak or a revocation touches one server"))
	}
	slices.SortFunc(out, func(a, b checkFinding) int {
		return cmp.Or(strings.Compare(a.path, b.path), strings.Compare(a.reason, b.reason))
	})
	switch {
	case len(out) > 0:
	case len(uses) == 0:
		out = append(out, findPass("", "no server credentials found"))
	default:
		out = append(out, findPass("", fmt.Sprintf("%d %s found, each used by one server", len(uses), checkPlural(len(uses), "credential", "credentials"))))
	}
	return out
}

type serverCredential struct {
	path, token string
}

// serverCredentials finds the credentials of a server in its interpolated
// headers, env, url and args: known token shapes, random-looking strings,
// URL passwords and the values of credential-named headers and variables.
func serverCredentials(ps placedServer) []serverCredential {
	var out []serverCredential
	add := func(path, name, value string) {
		if hit, ok := findSecret(name, value); ok {
			out = append(out, serverCredential{path, hit.token})
		}
	}
	s := ps.s
	if s.URL != "" {
		add(ps.node.Get("url").Path(), "", s.URL)
		if u, err := url.Parse(s.URL); err == nil {
			for _, k := range slices.Sorted(maps.Keys(u.Query())) {
				for _, v := range u.Query()[k] {
					add(ps.node.Get("url").Path(), k, v)
				}
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(s.Headers)) {
		add(ps.node.Get("headers").Get(k).Path(), k, s.Headers[k])
	}
	for _, k := range slices.Sorted(maps.Keys(s.Env)) {
		add(ps.node.Get("env").Get(k).Path(), k, s.Env[k])
	}
	for i, a := range s.Args {
		name, value := argNameValue(a)
		add(ps.node.Get("args").Index(i).Path(), name, value)
	}
	return out
}

// --- HTTPS -------------------------------------------------------------------

func checkHTTPS(_ context.Context, in *checkInput) []checkFinding {
	cfg := in.cfg
	var out []checkFinding
	switch {
	case cfg.TLS.Enabled():
		out = append(out, findPass("tls", fmt.Sprintf("listen %s serves HTTPS (TLS %s or newer)", cfg.Listen, cfg.TLS.MinVersion)))
	case listenIsLoopback(cfg.Listen):
		out = append(out, findWarn("listen", fmt.Sprintf("listen %s serves plain HTTP; it is loopback, so only this machine can reach it", cfg.Listen),
			"fine on one machine; before exposing it, set tls.certFile and tls.keyFile (or keep it on loopback behind a proxy that terminates TLS)"))
	case cfg.AllowInsecureHTTP:
		out = append(out, findWarn("allowInsecureHTTP", fmt.Sprintf("listen %s is reachable from other machines and serves plain HTTP: API keys and tool results travel in the clear", cfg.Listen),
			"set tls.certFile and tls.keyFile and remove allowInsecureHTTP (or move TLS to a proxy and listen on loopback)"))
	default:
		out = append(out, findFail("listen", fmt.Sprintf("listen %s is reachable from other machines without TLS (serve refuses to start like this)", cfg.Listen),
			"set tls.certFile and tls.keyFile, or listen on 127.0.0.1 behind a proxy that terminates TLS"))
	}
	for _, ps := range in.servers() {
		if ps.s.URL == "" {
			continue
		}
		out = append(out, gradeURL(ps.node.Get("url").Path(), ps.s.URL, ps.s.AllowInsecure, "the upstream", "allowInsecure"))
	}
	if wh := cfg.Alerts.Webhook; wh != "" {
		f := gradeURL("alerts.webhook", wh, false, "the alert webhook", "")
		if f.status == statusFail {
			f.status = statusWarn
		}
		out = append(out, f)
	}
	return out
}

// gradeURL grades one outgoing URL: https passes, plain http passes on
// loopback, is a warning when allowed explicitly (by the key named
// allowKey) and fails otherwise. Only the host is shown.
func gradeURL(path, raw string, allowed bool, what, allowKey string) checkFinding {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return findFail(path, fmt.Sprintf("%s is not a valid URL", what), "use an https:// URL")
	}
	host := u.Hostname()
	switch {
	case u.Scheme == "https":
		return findPass(path, fmt.Sprintf("%s %s is reached over https", what, host))
	case config.IsLoopbackHost(host):
		return findPass(path, fmt.Sprintf("%s %s is on loopback (plain http stays on this machine)", what, host))
	case allowed:
		return findWarn(path, fmt.Sprintf("%s %s is reached over plain http (%s is set): credentials and results cross the network in the clear", what, host, allowKey),
			fmt.Sprintf("use https://, then remove %s", allowKey))
	default:
		return findFail(path, fmt.Sprintf("%s %s is reached over plain http: credentials and results cross the network in the clear", what, host),
			"use https://")
	}
}

// --- audit -------------------------------------------------------------------

func checkAudit(_ context.Context, in *checkInput) []checkFinding {
	path := in.cfg.Audit.Path
	note, err := auditWritable(path)
	if err != nil {
		return []checkFinding{findFail("audit.path", fmt.Sprintf("the audit log %s cannot be written: %v", path, err),
			"make its folder writable for the user toolgate runs as, or set audit.path to a writable place")}
	}
	return []checkFinding{findPass("audit.path", fmt.Sprintf("audit events go to %s (%s)", path, note))}
}

// auditWritable checks that the audit log at path can be appended to, or
// created, without writing to it: an existing file is opened for
// appending; otherwise a temporary file is made (and removed) in the
// nearest existing folder.
func auditWritable(path string) (string, error) {
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.IsDir():
		return "", errors.New("it is a folder")
	case err == nil:
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return "", unwrapPathError(err)
		}
		f.Close()
		return "the file exists and is writable", nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", unwrapPathError(err)
	}
	dir := filepath.Dir(path)
	existing := dir
	for {
		fi, err := os.Stat(existing)
		if err == nil {
			if !fi.IsDir() {
				return "", fmt.Errorf("%s is not a folder", existing)
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", unwrapPathError(err)
		}
		parent := filepath.Dir(existing)
		if parent == existing {
			return "", fmt.Errorf("no folder of %s exists", path)
		}
		existing = parent
	}
	f, err := os.CreateTemp(existing, ".toolgate-check-*")
	if err != nil {
		return "", fmt.Errorf("folder %s is not writable: %w", existing, unwrapPathError(err))
	}
	f.Close()
	os.Remove(f.Name())
	if existing != dir {
		return fmt.Sprintf("the file and its folder %s will be created", dir), nil
	}
	return "the file will be created; its folder is writable", nil
}

// unwrapPathError drops the path an *fs.PathError repeats.
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// --- rate limits -------------------------------------------------------------

func checkRateLimits(_ context.Context, in *checkInput) []checkFinding {
	var out []checkFinding
	for _, pn := range slices.Sorted(maps.Keys(in.cfg.Projects)) {
		p := in.cfg.Projects[pn]
		rl := p.RateLimit
		path := in.projectPath(pn, "rateLimit")
		if rl.RequestsPerMinute > 0 || rl.PerKeyRequestsPerMinute > 0 {
			var parts []string
			if rl.RequestsPerMinute > 0 {
				parts = append(parts, fmt.Sprintf("%g calls/min for the project", rl.RequestsPerMinute))
			}
			if rl.PerKeyRequestsPerMinute > 0 {
				parts = append(parts, fmt.Sprintf("%g calls/min per key", rl.PerKeyRequestsPerMinute))
			}
			out = append(out, findPass(path, strings.Join(parts, ", ")))
			continue
		}
		reason := "not set: one client (or a runaway agent) can call tools as fast as the upstreams answer"
		if n := len(p.ToolLimits); n > 0 {
			reason += fmt.Sprintf(" (only %d %s limited by toolLimits)", n, checkPlural(n, "tool is", "tools are"))
		}
		out = append(out, findWarn(path, reason,
			"set rateLimit.requestsPerMinute and rateLimit.perKeyRequestsPerMinute (for example 600 and 120)"))
	}
	return out
}

// --- key age -----------------------------------------------------------------

// defaultKeyMaxAge is the rotation schedule when the configuration names
// none (config.Load applies the same default).
const defaultKeyMaxAge = 90 * 24 * time.Hour

func checkKeyAge(ctx context.Context, in *checkInput) []checkFinding {
	maxAge := in.cfg.KeyMaxAge.D()
	if maxAge <= 0 {
		maxAge = defaultKeyMaxAge
	}
	path := keyStorePath(in.cfg)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return []checkFinding{findPass("", fmt.Sprintf("no keys yet (there is no key store at %s)", path))}
	}
	s, err := apikey.OpenStore(ctx, path)
	if err != nil {
		return []checkFinding{findFail("", fmt.Sprintf("the key store cannot be read: %v", err), "check the file's permissions, or run the check as the user toolgate runs as")}
	}
	defer s.Close()
	keys, err := s.List(ctx, "")
	if err != nil {
		return []checkFinding{findFail("", fmt.Sprintf("the key store cannot be read: %v", err), "check the file's permissions, or run the check as the user toolgate runs as")}
	}
	var out []checkFinding
	active := 0
	for _, k := range keys {
		if k.Status(in.now) != apikey.StatusActive {
			continue
		}
		active++
		if k.RotatedTo != "" {
			continue // already replaced; it expires at the end of its overlap
		}
		age := in.now.Sub(k.Created)
		if age <= maxAge {
			continue
		}
		reason := fmt.Sprintf("key %s (%q, project %q) is %s old; the rotation schedule (keyMaxAge) is %s", k.ID, k.Name, k.Project, ageText(age), ageText(maxAge))
		fix := fmt.Sprintf("toolgate keys rotate %s --overlap 24h, move its clients to the new key, then toolgate keys revoke %s", k.ID, k.ID)
		if age > 2*maxAge {
			out = append(out, findFail("", reason+", more than twice over", fix))
		} else {
			out = append(out, findWarn("", reason, fix))
		}
	}
	if len(out) == 0 {
		out = append(out, findPass("", fmt.Sprintf("%d active %s, none older than %s", active, checkPlural(active, "key", "keys"), ageText(maxAge))))
	}
	return out
}

// ageText shows a key age or schedule: whole days from two days on.
func ageText(d time.Duration) string {
	const day = 24 * time.Hour
	if d >= 2*day {
		return fmt.Sprintf("%d days", d/day)
	}
	return humanDuration(d)
}

// --- Code Mode ---------------------------------------------------------------

// codeModeSettings are the Code Mode settings of one project, as the
// check grades them. The configuration has no codeMode section yet:
// codeModeOf is where it plugs in, and gradeCodeMode already applies the
// rules (a bounded timeout; fetch off, or restricted to fetchAllowHosts).
type codeModeSettings struct {
	// Path is the key path of the section ("codeMode" or
	// "projects.NAME.codeMode").
	Path    string
	Enabled bool
	// Timeout is the wall-clock limit of one script; 0 means the default.
	Timeout         time.Duration
	AllowFetch      bool
	FetchAllowHosts []string
}

// Code Mode rules.
const (
	defaultCodeModeTimeout = 10 * time.Second
	maxCodeModeTimeout     = 60 * time.Second
)

// codeModeOf returns the Code Mode settings of the gateway (one section,
// shared by its projects).
func codeModeOf(in *checkInput) []codeModeSettings {
	cm := in.cfg.CodeMode
	return []codeModeSettings{{Path: "codeMode", Enabled: cm.Enabled, Timeout: cm.Timeout.D(), AllowFetch: cm.AllowFetch, FetchAllowHosts: cm.FetchAllowHosts}}
}

func checkCodeMode(_ context.Context, in *checkInput) []checkFinding {
	settings := codeModeOf(in)
	if len(settings) == 0 {
		return []checkFinding{findPass("", "n/a: code mode is not configured")}
	}
	var out []checkFinding
	for _, s := range settings {
		out = append(out, gradeCodeMode(s)...)
	}
	return out
}

// gradeCodeMode grades the Code Mode settings of one project.
func gradeCodeMode(s codeModeSettings) []checkFinding {
	if !s.Enabled {
		return []checkFinding{findPass(s.Path, "code mode is off")}
	}
	var out []checkFinding
	timeout := s.Timeout
	if timeout == 0 {
		timeout = defaultCodeModeTimeout
	}
	if timeout > maxCodeModeTimeout {
		out = append(out, findWarn(s.Path+".timeout",
			fmt.Sprintf("a script may run for %s: one request holds a sandbox and spends tool budgets that long", timeout),
			fmt.Sprintf("lower codeMode.timeout to %s or less", maxCodeModeTimeout)))
	}
	if s.AllowFetch && len(s.FetchAllowHosts) == 0 {
		out = append(out, findFail(s.Path+".allowFetch",
			"scripts may fetch any public host: a way to send tool results anywhere",
			"list the hosts scripts need in codeMode.fetchAllowHosts, or set allowFetch: false"))
	}
	if len(out) > 0 {
		return out
	}
	fetch := "fetch off"
	if s.AllowFetch {
		fetch = fmt.Sprintf("fetch limited to %d %s", len(s.FetchAllowHosts), checkPlural(len(s.FetchAllowHosts), "host", "hosts"))
	}
	return []checkFinding{findPass(s.Path, fmt.Sprintf("scripts end after %s; %s", timeout, fetch))}
}
