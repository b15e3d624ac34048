package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/tailscale/hujson"

	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policy/apikey"
)

// `toolgate init` writes a configuration with secure defaults: from a
// desktop client's MCP configuration (Claude Desktop, Cursor, VS Code),
// or a commented starter. Literal credentials in the client's file move
// out to ${VAR} references (found with the same rules `toolgate check`
// grades a file by), so the file it writes holds none; a key is created
// in the data folder the file names, and the commands that point the
// clients at toolgate are printed.

type initFlags struct {
	from    string
	force   bool
	keyName string
}

func newInit(g *globals) *cobra.Command {
	f := &initFlags{}
	cmd := &cobra.Command{
		Use:   "init [--from FILE] [--force] [-c toolgate.json]",
		Short: "Write a toolgate.json with secure defaults, from a desktop client's MCP configuration or as a starter",
		Long: `Write a configuration (toolgate.json in the working folder, or the file
-c names) with secure defaults: API keys required, a loopback listener,
the audit log on, rate limits for the project and for each key, Code
Mode on with fetch off, and on every server a deny list hiding the tools
whose names say they write, delete or otherwise change something.

--from reads the MCP servers of a desktop client's configuration:
Claude Desktop's claude_desktop_config.json (in ~/Library/Application
Support/Claude on macOS, %APPDATA%\Claude on Windows) and Cursor's
mcp.json (~/.cursor or a project's .cursor folder), both
{"mcpServers": {...}}, or VS Code's .vscode/mcp.json ({"servers": {...},
"inputs": [...]}). Their command, args, env, cwd, url, headers and
type carry over. Credentials written in them (token-like values in env,
headers, args and url) move out to ${VAR} references, as do VS Code's
${input:...} prompts; ${env:NAME}, ${workspaceFolder} and ${userHome} are
resolved. init prints which variables to set, never their values.
Without --from it writes a commented starter with no servers.

init then creates an API key in the data folder the file names (dataDir,
toolgate-data beside it) and prints how to connect Claude Code, Cursor
and VS Code to the gateway with it. It refuses to replace an existing
file unless --force is given. Check the result with toolgate check (it
reads the same environment as serve: a variable the file names that is
not set is a failure there until it is set).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runInit(ctxOf(cmd), g, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.from, "from", "", "a desktop client's MCP configuration to take the servers from (Claude Desktop, Cursor or VS Code)")
	fl.BoolVar(&f.force, "force", false, "replace the configuration file if it exists")
	fl.StringVar(&f.keyName, "key-name", "client", "name of the API key init creates")
	return cmd
}

// Settings of the file init writes.
const (
	initListen = config.DefaultListen
	// Rate limits: generous for one agent, a stop for a runaway one.
	initRequestsPerMinute       = 600
	initBurst                   = 60
	initPerKeyRequestsPerMinute = 120
	initPerKeyBurst             = 20
)

// initDenyGlobs hide, on every server, the tools whose names say they
// change something. Globs match the server's own tool names and are case
// sensitive: snake_case and camelCase names that start with the verb
// (write_file, writeFile) match.
var initDenyGlobs = []string{
	"*write*", "*delete*", "*remove*", "*destroy*", "*drop*", "*truncate*",
	"*move*", "*rename*", "*edit*", "*update*", "*create*", "*push*", "*merge*",
	"*exec*", "*kill*",
}

// initServer is one server as init writes it.
type initServer struct {
	Transport     string            `json:"transport,omitempty"`
	Command       string            `json:"command,omitempty"`
	Args          []string          `json:"args,omitempty"`
	Env           map[string]string `json:"env,omitempty"`
	Cwd           string            `json:"cwd,omitempty"`
	URL           string            `json:"url,omitempty"`
	Headers       map[string]string `json:"headers,omitempty"`
	Disabled      bool              `json:"disabled,omitempty"`
	DenyToolsGlob []string          `json:"denyToolsGlob"`

	name string // in the file written
	from string // its name in the client's file
}

// initVar is an environment variable the written file reads.
type initVar struct {
	name string
	// why says where it comes from (never the value).
	why string
}

// initPlan is what init writes and reports.
type initPlan struct {
	from    string // the client's file ("" for the starter)
	kind    string // "Claude Desktop or Cursor", "VS Code"
	servers []*initServer
	vars    []initVar
	notes   []string // what did not carry over, and why
	// secrets maps each moved credential to its variable, so that one
	// credential used twice gets one variable; secretServer to the first
	// server that had it, reused to those noted as used by two.
	secrets      map[string]string
	secretServer map[string]string
	reused       map[string]bool
	taken        map[string]bool // variable names in use
}

func runInit(ctx context.Context, g *globals, f *initFlags) error {
	out := g.config
	if out == "" {
		out = "toolgate.json"
	}
	if format, err := config.FormatOf(out); err != nil || format != config.FormatJSON {
		return usageError{fmt.Errorf("init writes JSON with comments: name a .json file with -c (got %s)", out)}
	}
	if f.keyName == "" {
		return usageError{errors.New("--key-name must not be empty")}
	}
	if fi, err := os.Stat(out); err == nil {
		if fi.IsDir() {
			return fmt.Errorf("%s is a folder", out)
		}
		if !f.force {
			return fmt.Errorf("%s exists: init does not replace it unless --force is given", out)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	plan := &initPlan{secrets: map[string]string{}, secretServer: map[string]string{}, reused: map[string]bool{}, taken: map[string]bool{}}
	if f.from != "" {
		if same, _ := sameFile(f.from, out); same {
			return usageError{fmt.Errorf("--from %s is the file init would write; write the configuration elsewhere with -c", f.from)}
		}
		if err := plan.read(f.from); err != nil {
			return err
		}
	}
	text := plan.render()
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	if err := checkInitConfig(out, text); err != nil {
		return err
	}
	if err := writeFileAtomic(out, text, 0o600); err != nil {
		return err
	}

	// The key goes where the file says the data is.
	cfg, err := config.LoadState(out)
	if err != nil {
		return err
	}
	storePath := keyStorePath(cfg)
	store, err := apikey.OpenStore(ctx, storePath)
	if err != nil {
		return fmt.Errorf("creating the key store: %w", err)
	}
	defer store.Close()
	plaintext, k, err := store.Create(ctx, config.DefaultProject, f.keyName, 0)
	if err != nil {
		return err
	}
	plan.report(g, out, storePath, plaintext, k)
	return nil
}

// sameFile reports whether a and b name the same existing file.
func sameFile(a, b string) (bool, error) {
	fa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false, err
	}
	return os.SameFile(fa, fb), nil
}

// read takes the servers of a desktop client's configuration.
func (p *initPlan) read(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	std, err := hujson.Standardize(data)
	if err != nil {
		return fmt.Errorf("--from %s: not JSON: %w", path, err)
	}
	var doc struct {
		MCPServers map[string]json.RawMessage `json:"mcpServers"`
		Servers    map[string]json.RawMessage `json:"servers"`
		Inputs     []struct {
			ID          string `json:"id"`
			Description string `json:"description"`
		} `json:"inputs"`
	}
	if err := json.Unmarshal(std, &doc); err != nil {
		return fmt.Errorf("--from %s: %w", path, err)
	}
	servers, key := doc.MCPServers, "mcpServers"
	p.kind = "Claude Desktop or Cursor"
	if servers == nil && doc.Servers != nil {
		servers, key, p.kind = doc.Servers, "servers", "VS Code"
	}
	if servers == nil {
		return fmt.Errorf("--from %s: no servers in it: want a desktop client's MCP configuration, with \"mcpServers\" (Claude Desktop, Cursor) or \"servers\" (VS Code)", path)
	}
	p.from = path
	inputs := map[string]string{}
	for _, in := range doc.Inputs {
		inputs[in.ID] = in.Description
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	// ${workspaceFolder} is the folder that holds .vscode or .cursor.
	workspace := filepath.Dir(abs)
	if b := filepath.Base(workspace); b == ".vscode" || b == ".cursor" {
		workspace = filepath.Dir(workspace)
	}
	home, _ := os.UserHomeDir()
	r := &refResolver{plan: p, inputs: inputs, workspace: workspace, home: home}

	used := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(servers)) {
		var raw map[string]any
		if err := json.Unmarshal(servers[name], &raw); err != nil || raw == nil {
			p.notes = append(p.notes, fmt.Sprintf("%s.%s is not an object: left out", key, name))
			continue
		}
		s := &initServer{from: name, name: serverName(name, used), DenyToolsGlob: initDenyGlobs}
		if s.name != name {
			p.notes = append(p.notes, fmt.Sprintf("server %q is named %q (toolgate names are 1 to 64 letters, digits, _ or -)", name, s.name))
		}
		p.take(r, s, raw, key+"."+name)
		p.servers = append(p.servers, s)
	}
	return nil
}

var nameCleaner = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// serverName returns a valid, unused server name for name.
func serverName(name string, used map[string]bool) string {
	n := strings.Trim(nameCleaner.ReplaceAllString(name, "-"), "-")
	if len(n) > 60 {
		n = n[:60]
	}
	if n == "" {
		n = "server"
	}
	out := n
	for i := 2; used[out]; i++ {
		out = fmt.Sprintf("%s-%d", n, i)
	}
	used[out] = true
	return out
}

// take fills s from the client's entry raw (at path in its file).
func (p *initPlan) take(r *refResolver, s *initServer, raw map[string]any, path string) {
	var dropped []string
	str := func(k string) string {
		v, ok := raw[k].(string)
		if !ok && raw[k] != nil {
			dropped = append(dropped, k)
		}
		return v
	}
	for _, k := range slices.Sorted(maps.Keys(raw)) {
		switch k {
		case "command":
			s.Command = r.resolve(str(k), path+".command")
		case "cwd":
			s.Cwd = r.resolve(str(k), path+".cwd")
		case "url":
			s.URL = r.resolve(str(k), path+".url")
		case "type", "transport":
			t := strings.ToLower(str(k))
			switch t {
			case "":
			case "stdio", "sse":
				s.Transport = t
			case "http", "streamable-http", "streamablehttp", "streamable_http":
				s.Transport = config.TransportHTTP
			default:
				p.notes = append(p.notes, fmt.Sprintf("%s.%s %q is no transport toolgate knows: left out (toolgate picks one from command or url)", path, k, t))
			}
		case "args":
			list, ok := raw[k].([]any)
			if !ok {
				dropped = append(dropped, k)
				continue
			}
			for i, a := range list {
				s.Args = append(s.Args, r.resolve(scalarText(a), fmt.Sprintf("%s.args[%d]", path, i)))
			}
		case "env", "headers":
			m, ok := raw[k].(map[string]any)
			if !ok {
				dropped = append(dropped, k)
				continue
			}
			out := map[string]string{}
			for name, v := range m {
				if v == nil {
					continue
				}
				out[name] = r.resolve(scalarText(v), path+"."+k+"."+name)
			}
			if k == "env" {
				s.Env = out
			} else {
				s.Headers = out
			}
		case "disabled":
			b, ok := raw[k].(bool)
			if !ok {
				dropped = append(dropped, k)
			}
			s.Disabled = b
		default:
			dropped = append(dropped, k)
		}
	}
	if len(dropped) > 0 {
		p.notes = append(p.notes, fmt.Sprintf("%s: left out %s, which toolgate does not take", path, strings.Join(dropped, ", ")))
	}
	p.moveSecrets(s, path)
}

// scalarText is the text of a JSON scalar (a number or a boolean in args
// or env is passed as its text).
func scalarText(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// refResolver turns the variables of desktop clients into toolgate's:
// ${env:NAME} and ${NAME} stay references; VS Code's ${input:ID} becomes a
// reference to a variable named after the input; ${workspaceFolder},
// ${workspaceFolderBasename}, ${userHome} and ${pathSeparator} are
// replaced by their values; anything else is kept as literal text.
type refResolver struct {
	plan            *initPlan
	inputs          map[string]string
	workspace, home string
}

var clientRefRE = regexp.MustCompile(`\$\{([^}]*)\}`)

func (r *refResolver) resolve(s, path string) string {
	return clientRefRE.ReplaceAllStringFunc(s, func(ref string) string {
		inner := ref[2 : len(ref)-1]
		name := strings.TrimPrefix(inner, "env:")
		switch {
		case inner == "workspaceFolder":
			return escapeRefs(r.workspace)
		case inner == "workspaceFolderBasename":
			return escapeRefs(filepath.Base(r.workspace))
		case inner == "userHome" && r.home != "":
			return escapeRefs(r.home)
		case inner == "pathSeparator" || inner == "/":
			return string(filepath.Separator)
		case validEnvName(name):
			r.plan.use(name, fmt.Sprintf("read in %s (%s)", filepath.Base(r.plan.from), path))
			return "${" + name + "}"
		case strings.HasPrefix(inner, "input:"):
			id := strings.TrimPrefix(inner, "input:")
			v := r.plan.inputVar(id)
			why := fmt.Sprintf("the VS Code input %q", id)
			if d := r.inputs[id]; d != "" {
				why += " (" + d + ")"
			}
			r.plan.use(v, why)
			return "${" + v + "}"
		}
		r.plan.notes = append(r.plan.notes, fmt.Sprintf("%s: %s is no variable toolgate knows: kept as literal text", path, ref))
		return "$" + ref
	})
}

// escapeRefs keeps a literal "${" in s from being read as a reference.
func escapeRefs(s string) string { return strings.ReplaceAll(s, "${", "$${") }

// inputVar names the variable of a VS Code input.
func (p *initPlan) inputVar(id string) string {
	n := strings.Trim(nameCleaner.ReplaceAllString(strings.ToUpper(id), "_"), "_")
	n = strings.ReplaceAll(n, "-", "_")
	if n == "" || n[0] >= '0' && n[0] <= '9' {
		n = "INPUT_" + n
	}
	return n
}

// use records that the file reads variable name.
func (p *initPlan) use(name, why string) {
	if p.taken[name] {
		return
	}
	p.taken[name] = true
	p.vars = append(p.vars, initVar{name, why})
}

// moveSecrets replaces the credentials written in s's env, headers, args
// and url by references to variables, found and named as toolgate check
// finds and names them.
// src is the key path of the server in the client's file, for messages.
func (p *initPlan) moveSecrets(s *initServer, src string) {
	server := "mcpServers." + s.name
	from := filepath.Base(p.from)
	move := func(kind, name, path string, v *string) {
		// Messages spell the path as the client's file does.
		path = src + strings.TrimPrefix(path, server)
		// A value may hold more than one credential.
		for range 8 {
			lit := literalText(*v)
			hit, ok := findSecret(name, lit)
			if !ok || !hit.sure && looksLikePath(strings.TrimSpace(lit)) {
				// A random-looking folder name is no credential to move
				// (check still points it out, as a warning).
				return
			}
			field := rawField{path: path, kind: kind, name: name, server: server}
			if kind == "url" {
				field.kind = "arg" // only the credential moves, not the URL
			}
			v2 := p.secretVar(hit.token, suggestVar(field), fmt.Sprintf("the %s written in %s (%s)", hit.kind, from, path), s.name)
			if strings.Contains(*v, hit.token) {
				*v = strings.ReplaceAll(*v, hit.token, "${"+v2+"}")
				continue
			}
			// Written another way (escaped in a URL): the whole value moves.
			whole := p.secretVar(*v, suggestVar(rawField{kind: kind, name: name, server: server}), fmt.Sprintf("the whole value of %s in %s, which holds a %s", path, from, hit.kind), s.name)
			*v = "${" + whole + "}"
			return
		}
	}
	for _, k := range slices.Sorted(maps.Keys(s.Env)) {
		v := s.Env[k]
		move("env", k, server+".env."+k, &v)
		s.Env[k] = v
	}
	for _, k := range slices.Sorted(maps.Keys(s.Headers)) {
		v := s.Headers[k]
		move("header", k, server+".headers."+k, &v)
		s.Headers[k] = v
	}
	for i := range s.Args {
		name, _ := argNameValue(s.Args[i])
		move("arg", name, fmt.Sprintf("%s.args[%d]", server, i), &s.Args[i])
	}
	if s.URL != "" {
		move("url", "", server+".url", &s.URL)
	}
}

// secretVar returns the variable that holds secret: the one it already
// has, else want (or want_2, want_3, ... when want is taken). server is
// the server it is written in.
func (p *initPlan) secretVar(secret, want, why, server string) string {
	if v, ok := p.secrets[secret]; ok {
		if first := p.secretServer[secret]; first != server && !p.reused[secret] {
			p.reused[secret] = true
			p.notes = append(p.notes, fmt.Sprintf("%s and %s use the same credential (%s): give each server one of its own (toolgate check fails on this)", server, first, v))
		}
		return v
	}
	p.secretServer[secret] = server
	v := want
	for i := 2; p.taken[v]; i++ {
		v = fmt.Sprintf("%s_%d", want, i)
	}
	p.secrets[secret] = v
	p.use(v, why)
	return v
}

// render writes the configuration file.
func (p *initPlan) render() []byte {
	var b bytes.Buffer
	if p.from != "" {
		fmt.Fprintf(&b, "// toolgate configuration, written by `toolgate init` from the %s\n// configuration %s.\n", p.kind, p.from)
	} else {
		b.WriteString("// toolgate configuration, written by `toolgate init` as a starter.\n")
	}
	b.WriteString(`// JSON with comments. Grade it with "toolgate check", serve it with
// "toolgate serve"; docs/configuration.md lists every key.
{
  // Where clients connect. Loopback only: to serve other machines, set
  // tls.certFile and tls.keyFile, then listen on their interface.
  "listen": ` + jsonText(initListen) + `,
  // API keys (toolgate keys create), tool pins and the audit log live
  // here, beside this file.
  "dataDir": "toolgate-data",
  // Clients present an API key: Authorization: Bearer <key>.
  "auth": {"required": true},
  // Every tool call, refusal and key change goes to a hash-chained log
  // (toolgate audit; toolgate audit verify).
  "audit": {"path": "audit.jsonl"},
  // Tool calls per minute for the project, and for each key.
  "rateLimit": {
    "requestsPerMinute": ` + fmt.Sprint(initRequestsPerMinute) + `,
    "burst": ` + fmt.Sprint(initBurst) + `,
    "perKeyRequestsPerMinute": ` + fmt.Sprint(initPerKeyRequestsPerMinute) + `,
    "perKeyBurst": ` + fmt.Sprint(initPerKeyBurst) + `
  },
  // Code Mode: agents send one JavaScript program (execute_code) instead
  // of many tool calls. Scripts reach the tools below only, through the
  // same checks; fetch stays off, so they cannot reach the network.
  "codeMode": {"enabled": true, "allowFetch": false, "timeout": "10s"},
  // On every server, tools whose names say they change something stay
  // hidden (denyToolsGlob; deny beats allow). To show only what clients
  // need, add "allowedToolsGlob": ["read_*", "list_*", ...] to a server.
`)
	if len(p.servers) == 0 {
		quoted := make([]string, len(initDenyGlobs))
		for i, g := range initDenyGlobs {
			quoted[i] = jsonText(g)
		}
		globList := "[" + strings.Join(quoted, ", ") + "]"
		b.WriteString(`  "mcpServers": {
    // The MCP servers toolgate fronts, in the layout desktop clients use
    // ("toolgate init --from FILE" takes them from a client's file). For
    // example:
    //
    // "filesystem": {
    //   "command": "npx",
    //   "args": ["-y", "@modelcontextprotocol/server-filesystem", "/path/to/share"],
    //   "allowedToolsGlob": ["read_*", "list_*", "search_*", "get_*"],
    //   "denyToolsGlob": ` + globList + `
    // },
    // "remote": {
    //   "url": "https://mcp.example.com/mcp",
    //   "headers": {"Authorization": "Bearer ${REMOTE_TOKEN}"},
    //   "denyToolsGlob": ` + globList + `
    // }
    //
    // Credentials come from the environment: ${NAME} in command, args,
    // env, cwd, url and headers is replaced by the variable NAME.
  }
}
`)
		return b.Bytes()
	}
	b.WriteString("  \"mcpServers\": {\n")
	for i, s := range p.servers {
		if s.from != s.name {
			fmt.Fprintf(&b, "    // %q in %s\n", s.from, filepath.Base(p.from))
		}
		var sb bytes.Buffer
		enc := json.NewEncoder(&sb)
		enc.SetEscapeHTML(false)
		enc.SetIndent("    ", "  ")
		_ = enc.Encode(s)
		text := denyListRE.ReplaceAllStringFunc(strings.TrimSuffix(sb.String(), "\n"), oneLine)
		fmt.Fprintf(&b, "    %s: %s", jsonText(s.name), text)
		if i < len(p.servers)-1 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	b.WriteString("  }\n}\n")
	return b.Bytes()
}

// denyListRE finds the deny list of a server as the encoder indents it,
// which oneLine puts on one line.
var denyListRE = regexp.MustCompile(`"denyToolsGlob": \[[^\]]*\]`)

func oneLine(s string) string {
	fields := strings.Fields(s)
	return strings.NewReplacer("[ ", "[", " ]", "]").Replace(strings.Join(fields, " "))
}

func jsonText(v any) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return strings.TrimSuffix(b.String(), "\n")
}

// checkInitConfig loads text as the file at out would be loaded, except
// that the variables it names need not be set yet, and reports any other
// problem (the client's file held something toolgate refuses, such as an
// invalid URL) without writing anything.
func checkInitConfig(out string, text []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(out), ".toolgate-init-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(text); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	in, err := config.Inspect(tmp.Name())
	if err != nil {
		return fmt.Errorf("the configuration init wrote does not load (please report this): %w", err)
	}
	var problems []string
	for _, pr := range in.Problems {
		if strings.HasPrefix(pr.Message, "environment variable ") && strings.HasSuffix(pr.Message, " is not set") {
			continue
		}
		problems = append(problems, pr.String())
	}
	if len(problems) > 0 {
		return fmt.Errorf("the servers taken from the client's file do not make a valid configuration; correct them there, or leave them out:\n  %s", strings.Join(problems, "\n  "))
	}
	return nil
}

// writeFileAtomic writes data to path by renaming a temporary file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".toolgate-init-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// report prints what init did and what to do next.
func (p *initPlan) report(g *globals, out, storePath, plaintext string, k *apikey.Key) {
	w := g.stdout
	what := "a starter configuration (no servers yet)"
	if p.from != "" {
		what = fmt.Sprintf("%d %s from %s", len(p.servers), checkPlural(len(p.servers), "server", "servers"), p.from)
	}
	fmt.Fprintf(w, "Wrote %s: %s.\nAPI keys are required, the audit log is on, rate limits are set, Code Mode is on\nwith fetch off, and on every server the tools whose names say they change\nsomething are hidden.\n", out, what)
	for _, n := range p.notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	if len(p.vars) > 0 {
		fmt.Fprintf(w, "\nSet these variables in the environment of toolgate serve (and check):\n")
		width := 0
		for _, v := range p.vars {
			width = max(width, len(v.name))
		}
		for _, v := range p.vars {
			state := "not set here"
			if _, ok := os.LookupEnv(v.name); ok {
				state = "set here"
			}
			fmt.Fprintf(w, "  %-*s  %s; %s\n", width, v.name, v.why, state)
		}
		if len(p.secrets) > 0 {
			fmt.Fprintf(w, "The credentials are not in %s; they are still in %s.\n", out, p.from)
		}
	}

	url := "http://" + initListen + "/mcp"
	fmt.Fprintf(w, "\nCreated API key %s (%q) for project %q; only its hash is kept, in %s:\n\n    %s\n\n",
		k.ID, k.Name, k.Project, storePath, plaintext)
	fmt.Fprintln(w, "Copy it now: it will not be shown again. Point your clients at toolgate with it:")
	fmt.Fprintf(w, "\nClaude Code:\n  claude mcp add --transport http toolgate %s --header \"Authorization: Bearer %s\"\n", url, plaintext)
	type entry struct {
		Type    string            `json:"type,omitempty"`
		URL     string            `json:"url"`
		Headers map[string]string `json:"headers"`
	}
	headers := map[string]string{"Authorization": "Bearer " + plaintext}
	cursor := map[string]any{"mcpServers": map[string]any{"toolgate": entry{URL: url, Headers: headers}}}
	vscode := map[string]any{"servers": map[string]any{"toolgate": entry{Type: "http", URL: url, Headers: headers}}}
	fmt.Fprintf(w, "\nCursor (~/.cursor/mcp.json, or .cursor/mcp.json in a project):\n%s\n", indentJSON(cursor))
	fmt.Fprintf(w, "\nVS Code (.vscode/mcp.json):\n%s\n", indentJSON(vscode))
	if p.from != "" {
		fmt.Fprintf(w, "\nThen remove the servers toolgate now fronts from %s, so clients reach them through it only.\n", p.from)
	}
	flag := ""
	if out != "toolgate.json" {
		flag = " -c " + out
	}
	fmt.Fprintf(w, "\nNext: toolgate%s check, then toolgate%s serve.\n", flag, flag)
}

func indentJSON(v any) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("  ", "  ")
	_ = enc.Encode(v)
	return "  " + strings.TrimSuffix(b.String(), "\n")
}
