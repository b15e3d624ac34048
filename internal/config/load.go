package config

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
	"github.com/tailscale/hujson"
)

// Formats of a configuration file, as accepted by [Parse].
const (
	FormatJSON = "json" // JSON with comments and trailing commas
	FormatYAML = "yaml"
	FormatTOML = "toml"
)

// searchNames are the files [Find] looks for in each folder, in order.
var searchNames = []string{"toolgate.json", "toolgate.yaml", "toolgate.yml", "toolgate.toml"}

// systemConfigDir is the last folder [Find] looks in.
const systemConfigDir = "/etc/toolgate"

// Find returns the configuration file to use. An explicit path (-c) is
// returned as is when it names an existing regular file, and is an error
// otherwise; so is the file named by the variable TOOLGATE_CONFIG when
// there is no explicit path. Otherwise Find looks for toolgate.json,
// toolgate.yaml, toolgate.yml and toolgate.toml, in this order, in the
// working directory (returning a relative name), then in
// $XDG_CONFIG_HOME/toolgate (~/.config/toolgate when XDG_CONFIG_HOME is
// not set), then in /etc/toolgate, and returns the first present. When
// none is present it returns "" and a nil error: the caller then serves
// the built-in demo. With an error, the path is the file that was named,
// if one was.
func Find(explicit string) (string, error) {
	return finder{lookup: os.LookupEnv, system: systemConfigDir}.find(explicit)
}

// finder is Find with an injectable environment and system folder.
type finder struct {
	lookup func(string) (string, bool)
	system string
}

func (f finder) find(explicit string) (string, error) {
	named, from := explicit, "config file"
	if named == "" {
		if v, ok := f.lookup(EnvConfigFile); ok && v != "" {
			named, from = v, EnvConfigFile+": config file"
		}
	}
	if named != "" {
		fi, err := os.Stat(named)
		if err != nil {
			return named, fmt.Errorf("%s: %w", from, err)
		}
		if fi.IsDir() {
			return named, fmt.Errorf("%s %s: is a directory", from, named)
		}
		return named, nil
	}
	for _, dir := range f.dirs() {
		for _, name := range searchNames {
			p := filepath.Join(dir, name)
			fi, err := os.Stat(p)
			switch {
			case err == nil && !fi.IsDir():
				return p, nil
			case err == nil, errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
				continue
			default:
				return "", fmt.Errorf("look for config file: %w", err)
			}
		}
	}
	return "", nil
}

// Searched describes where [Find] looks when no file is named, for
// messages: the variable TOOLGATE_CONFIG, then the file names it tries in
// each folder, and the folders in order (the working directory as ".").
type Searched struct {
	// Var is TOOLGATE_CONFIG.
	Var string
	// Names are the file names tried in each folder.
	Names []string
	// Dirs are the folders, in the order they are searched.
	Dirs []string
}

// SearchPlaces returns where [Find] looks for a configuration file, as
// it would look now (the folders depend on XDG_CONFIG_HOME and HOME).
func SearchPlaces() Searched {
	f := finder{lookup: os.LookupEnv, system: systemConfigDir}
	return Searched{Var: EnvConfigFile, Names: slices.Clone(searchNames), Dirs: f.dirs()}
}

// String lists the places in one sentence; the working directory is
// shown with its absolute path.
func (s Searched) String() string {
	dirs := slices.Clone(s.Dirs)
	for i, d := range dirs {
		if d == "." {
			if wd, err := os.Getwd(); err == nil {
				dirs[i] = ". (" + wd + ")"
			}
		}
	}
	return fmt.Sprintf("$%s is not set, and none of %s is in %s", s.Var, joinList(s.Names, "or"), joinList(dirs, "or"))
}

// joinList joins items as "a, b or c".
func joinList(items []string, last string) string {
	switch len(items) {
	case 0:
		return ""
	case 1:
		return items[0]
	}
	return strings.Join(items[:len(items)-1], ", ") + " " + last + " " + items[len(items)-1]
}

// dirs are the folders Find looks in, in order. XDG_CONFIG_HOME counts
// only when it is an absolute path, as the XDG base directory
// specification says.
func (f finder) dirs() []string {
	dirs := []string{"."}
	if x, _ := f.lookup("XDG_CONFIG_HOME"); filepath.IsAbs(x) {
		dirs = append(dirs, filepath.Join(x, "toolgate"))
	} else if home, _ := f.lookup("HOME"); home != "" {
		dirs = append(dirs, filepath.Join(home, ".config", "toolgate"))
	}
	return append(dirs, f.system)
}

// FormatOf returns the format of a configuration file named path, from
// its extension (.json, .yaml, .yml or .toml, in any case).
func FormatOf(path string) (string, error) {
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".json":
		return FormatJSON, nil
	case ".yaml", ".yml":
		return FormatYAML, nil
	case ".toml":
		return FormatTOML, nil
	default:
		return "", fmt.Errorf("config file %s: unknown format %q (want .json, .yaml, .yml or .toml)", path, ext)
	}
}

// Load reads, interpolates, decodes, normalises and validates the
// configuration file at path; its format comes from the extension (see
// [FormatOf]). Environment variables are read with [os.LookupEnv], both
// for `${VAR}` references and for the TOOLGATE_ variables that override
// settings (see [EnvOverride]).
//
// When the file is well-formed but invalid, the error is an [*Error]
// (reachable with [errors.As]) whose File is path and whose Problems list
// every problem found, each with its key path. Other errors (unreadable
// file, syntax error) are wrapped.
func Load(path string) (*Config, error) {
	in, err := Inspect(path)
	if err != nil {
		return nil, err
	}
	if len(in.Problems) > 0 {
		e := newError(in.Problems)
		e.File = path
		return nil, e
	}
	return in.Config, nil
}

// Inspection is a configuration file as [Inspect] reads it.
type Inspection struct {
	// Config is the configuration as far as it could be read: values
	// found bad are left out, a variable that is not set reads as empty,
	// defaults are applied.
	Config *Config
	// Problems are every problem [Load] would report, sorted by key path.
	Problems []Problem
	// File is the document as written, for reading values that the
	// configuration holds interpolated, such as literal credentials.
	File Node
}

// Inspect reads the configuration file at path as [Load] does, but does
// not stop at problems: it returns what could be read together with every
// problem, and the file as written. It is for tools that grade a file,
// such as `toolgate check`; a configuration with problems must not be
// served. The error is for a file that cannot be read or is not a
// document of its format: then there is no configuration.
func Inspect(path string) (*Inspection, error) {
	return inspectWith(path, os.LookupEnv, nil)
}

// LoadState reads the configuration file at path for the commands that
// work on what toolgate keeps on disk (the key store, the audit log, the
// tool pins) and start no upstream server. It reads the file as [Load]
// does, TOOLGATE_ variables included, but it reads none of the variables
// that `${VAR}` references name: they read as empty, so that a shell
// without the upstreams' secrets can run these commands. Only the
// problems of the settings such commands use (dataDir and audit) and of
// the file as a whole are errors; the servers and the other
// interpolated values (tls files, alerts.webhook) are neither read from
// the environment nor checked, and are not to be used. The exception is
// the cluster block: the shared stores these commands open (keys, pins
// and the audit trail in PostgreSQL) take their credentials from the
// environment, and its problems are errors too.
func LoadState(path string) (*Config, error) {
	in, err := inspectWith(path, func(string) (string, bool) { return "", true }, os.LookupEnv)
	if err != nil {
		return nil, err
	}
	var problems []Problem
	for _, p := range in.Problems {
		if p.Path == "" || p.Path == "dataDir" || p.Path == "audit" || strings.HasPrefix(p.Path, "audit.") ||
			p.Path == "cluster" || strings.HasPrefix(p.Path, "cluster.") {
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		e := newError(problems)
		e.File = path
		return nil, e
	}
	return in.Config, nil
}

// inspectWith is Inspect with the environment `${VAR}` references read
// from; clusterLookup, when not nil, is that of the cluster block's
// references instead.
func inspectWith(path string, lookup, clusterLookup func(string) (string, bool)) (*Inspection, error) {
	format, err := FormatOf(path)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	raw, err := decodeRaw(data, format)
	if err != nil {
		return nil, fmt.Errorf("load config %s: %w", path, err)
	}
	c, problems := parseTree(raw, lookup, processEnv(), clusterLookup)
	c.Path = path
	// Relative paths in a file are relative to the file's folder; those
	// from the environment to the working directory. A relative audit
	// path is inside dataDir.
	env := map[string]bool{}
	for _, o := range c.FromEnv {
		env[o.Path] = true
	}
	for _, f := range []struct {
		p   *string
		key string
	}{{&c.DataDir, "dataDir"}, {&c.TLS.CertFile, "tls.certFile"}, {&c.TLS.KeyFile, "tls.keyFile"}, {&c.Audit.Path, "dataDir"}} {
		if *f.p != "" && !filepath.IsAbs(*f.p) && !env[f.key] {
			*f.p = filepath.Join(filepath.Dir(path), *f.p)
		}
	}
	if len(problems) > 0 {
		problems = newError(problems).Problems
	}
	return &Inspection{Config: c, Problems: problems, File: rootNode(raw)}, nil
}

// Parse is [Load] from bytes: format is "json", "yaml" (or "yml") or
// "toml". The returned Config has an empty Path. `${VAR}` references are
// read from the environment, but the TOOLGATE_ variables do not override
// settings: they are for the file a deployment runs with, and Parse is
// for documents a program writes.
func Parse(data []byte, format string) (*Config, error) {
	return parse(data, format, os.LookupEnv)
}

// parse is Parse with an injectable environment.
func parse(data []byte, format string, lookup func(string) (string, bool)) (*Config, error) {
	raw, err := decodeRaw(data, format)
	if err != nil {
		return nil, err
	}
	return orError(parseTree(raw, lookup, nil, nil))
}

// orError returns c, or an *Error with the problems when there are any.
func orError(c *Config, problems []Problem) (*Config, error) {
	if len(problems) > 0 {
		return nil, newError(problems)
	}
	return c, nil
}

// parseTree puts the values of the variables env reads (when env is not
// nil) in place of the file's in a decoded document, then decodes,
// interpolates, defaults and validates it, returning the configuration as
// far as it could be read with every problem found.
func parseTree(raw map[string]any, lookup func(string) (string, bool), env envReader, clusterLookup func(string) (string, bool)) (*Config, []Problem) {
	l := &loader{lookup: lookup, clusterLookup: clusterLookup, bad: map[string]bool{}, origin: map[string]string{}, fromEnv: map[string]string{}}
	if env != nil {
		raw = l.applyEnv(raw, env)
	}
	c := l.decode(raw)
	l.normalise(c, raw)
	l.interpolate(c)
	l.resolveTransports(c)
	applyDefaults(c)
	l.validate(c)
	c.FromEnv = l.overrides()
	for i, p := range l.problems {
		l.problems[i].Var = l.envVarOf(p.Path)
	}
	return c, l.problems
}

// codecs decodes YAML, TOML and (standardised) JSON into maps. Unlike
// viper.ReadConfig it keeps the case of keys, which matters for server
// names, environment variables and headers.
var codecs = viper.NewCodecRegistry()

// decodeRaw turns a document into a generic map, without interpretation.
func decodeRaw(data []byte, format string) (map[string]any, error) {
	format = strings.ToLower(format)
	switch format {
	case FormatJSON:
		std, err := hujson.Standardize(slices.Clone(data))
		if err != nil {
			return nil, fmt.Errorf("decode json: %w", err)
		}
		data = std
	case FormatYAML, "yml", FormatTOML:
	default:
		return nil, fmt.Errorf("unknown config format %q (want json, yaml or toml)", format)
	}
	dec, err := codecs.Decoder(format)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", format, err)
	}
	m := map[string]any{}
	if err := dec.Decode(data, m); err != nil {
		return nil, fmt.Errorf("decode %s: %w", format, err)
	}
	return m, nil
}

// loader carries the state of one parse: the problems found so far, the
// key paths whose value is known bad (so that later checks do not report
// consequences of an earlier problem twice), the values as written before
// interpolation (so messages never show a secret), the settings the
// environment gave, and where each project and server sits in the file.
type loader struct {
	lookup func(string) (string, bool)
	// clusterLookup, when not nil, reads the cluster block's references.
	clusterLookup func(string) (string, bool)
	problems      []Problem
	bad           map[string]bool
	origin        map[string]string
	// fromEnv maps the key paths the environment set to their variables.
	fromEnv  map[string]string
	projects []placed[Project]
	servers  []placed[Server]
}

// placed is a value with its key path in the file.
type placed[T any] struct {
	path string
	v    *T
}

func (l *loader) addf(path, format string, args ...any) {
	l.problems = append(l.problems, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	l.bad[path] = true
}

// shown is the value at path as the file wrote it, for messages.
func (l *loader) shown(path, value string) string {
	if o, ok := l.origin[path]; ok {
		return o
	}
	return value
}

// decode checks raw against the Config type, reporting unknown keys and
// mistyped values with their paths, and decodes what is well-formed with
// mapstructure. Bad parts are left out, so that the later stages can
// still report their own problems.
func (l *loader) decode(raw map[string]any) *Config {
	clean, _ := l.clean("", raw, configType)
	c := new(Config)
	dc := &mapstructure.DecoderConfig{
		Result:      c,
		TagName:     "mapstructure",
		ErrorUnused: true,
		DecodeHook:  durationHook,
	}
	dec, err := mapstructure.NewDecoder(dc)
	if err == nil {
		err = dec.Decode(clean)
	}
	if err != nil {
		// clean only holds well-typed values, so this is not expected.
		l.addf("", "decode: %v", err)
	}
	return c
}

var (
	configType   = reflect.TypeFor[Config]()
	durationType = reflect.TypeFor[Duration]()
)

// durationHook decodes a Duration from a Go duration string or from a
// number of milliseconds.
func durationHook(_, to reflect.Type, data any) (any, error) {
	if to != durationType {
		return data, nil
	}
	return parseDuration(data)
}

// parseDuration accepts a Go duration string ("1m30s") or a number of
// milliseconds. Negative durations are errors.
func parseDuration(v any) (Duration, error) {
	var ms float64
	switch x := v.(type) {
	case Duration:
		if x < 0 {
			return 0, fmt.Errorf("negative duration %s", x.D())
		}
		return x, nil
	case string:
		d, err := time.ParseDuration(x)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q (want e.g. \"60s\" or a number of milliseconds): %w", x, err)
		}
		if d < 0 {
			return 0, fmt.Errorf("negative duration %q", x)
		}
		return Duration(d), nil
	case int:
		ms = float64(x)
		if x >= 0 && int64(x) <= math.MaxInt64/int64(time.Millisecond) {
			return Duration(int64(x) * int64(time.Millisecond)), nil
		}
	case int64:
		ms = float64(x)
		if x >= 0 && x <= math.MaxInt64/int64(time.Millisecond) {
			return Duration(x * int64(time.Millisecond)), nil
		}
	case uint64:
		ms = float64(x)
	case float64:
		ms = x
	default:
		return 0, fmt.Errorf("expected a duration (\"60s\" or a number of milliseconds), got %s", describe(v))
	}
	switch {
	case math.IsNaN(ms) || math.IsInf(ms, 0):
		return 0, fmt.Errorf("invalid duration %v", ms)
	case ms < 0:
		return 0, fmt.Errorf("negative duration %vms", ms)
	case ms*float64(time.Millisecond) >= math.MaxInt64:
		return 0, fmt.Errorf("duration %vms is too large", ms)
	}
	return Duration(ms * float64(time.Millisecond)), nil
}

// clean checks v against type t at path and returns a copy of it holding
// only the well-formed parts, with struct keys spelled as their tags. ok is
// false when v itself is unusable.
func (l *loader) clean(path string, v any, t reflect.Type) (out any, ok bool) {
	if v == nil {
		return nil, true
	}
	if t == durationType {
		if _, err := parseDuration(v); err != nil {
			l.addf(path, "%v", err)
			return nil, false
		}
		return v, true
	}
	switch t.Kind() {
	case reflect.Pointer:
		return l.clean(path, v, t.Elem())
	case reflect.Struct:
		m, ok := l.mapping(path, v)
		if !ok {
			return nil, false
		}
		return l.cleanStruct(path, m, t), true
	case reflect.Map:
		m, ok := l.mapping(path, v)
		if !ok {
			return nil, false
		}
		out := make(map[string]any, len(m))
		for _, k := range slices.Sorted(maps.Keys(m)) {
			p := child(path, k)
			if m[k] == nil && t.Elem().Kind() != reflect.Pointer {
				l.addf(p, "expected %s, got null", want(t.Elem()))
				continue
			}
			if cv, ok := l.clean(p, m[k], t.Elem()); ok {
				out[k] = cv
			}
		}
		return out, true
	case reflect.Slice:
		list, ok := v.([]any)
		if !ok {
			l.addf(path, "expected %s, got %s", want(t), describe(v))
			return nil, false
		}
		out := make([]any, 0, len(list))
		for i, e := range list {
			p := index(path, i)
			if e == nil && t.Elem().Kind() != reflect.Pointer {
				l.addf(p, "expected %s, got null", want(t.Elem()))
				continue
			}
			if cv, ok := l.clean(p, e, t.Elem()); ok {
				out = append(out, cv)
			}
		}
		return out, true
	case reflect.String:
		if _, ok := v.(string); !ok {
			l.addf(path, "expected %s, got %s%s", want(t), describe(v), quoteHint(v))
			return nil, false
		}
		return v, true
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			l.addf(path, "expected %s, got %s", want(t), describe(v))
			return nil, false
		}
		return v, true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := toInt64(v)
		if !ok || reflect.New(t).Elem().OverflowInt(n) {
			l.addf(path, "expected %s, got %s", want(t), describe(v))
			return nil, false
		}
		return n, true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := toInt64(v)
		if !ok || n < 0 || reflect.New(t).Elem().OverflowUint(uint64(n)) {
			l.addf(path, "expected %s, got %s", want(t), describe(v))
			return nil, false
		}
		return uint64(n), true
	case reflect.Float32, reflect.Float64:
		switch x := v.(type) {
		case int:
			return float64(x), true
		case int64:
			return float64(x), true
		case uint64:
			return float64(x), true
		case float64:
			return x, true
		}
		l.addf(path, "expected %s, got %s", want(t), describe(v))
		return nil, false
	default:
		// Interfaces and kinds the Config does not use: let mapstructure
		// decide.
		return v, true
	}
}

// cleanStruct matches the keys of m to the fields of struct type t the way
// mapstructure does (exact name first, then case-insensitively) and
// reports keys that match nothing.
func (l *loader) cleanStruct(path string, m map[string]any, t reflect.Type) map[string]any {
	fields := keysOf(t)
	out := make(map[string]any, len(m))
	given := map[string]string{} // field key -> key as written
	keys := slices.Sorted(maps.Keys(m))
	// Exact matches first, so that `command` wins over `Command`.
	slices.SortStableFunc(keys, func(a, b string) int {
		_, ea := fields[a]
		_, eb := fields[b]
		switch {
		case ea && !eb:
			return -1
		case eb && !ea:
			return 1
		}
		return 0
	})
	for _, k := range keys {
		p := child(path, k)
		name, ft, found := lookupField(fields, k)
		if !found {
			if s := suggest(k, fields); s != "" {
				l.addf(p, "unknown key (did you mean %q?)", s)
			} else {
				l.addf(p, "unknown key")
			}
			continue
		}
		if prev, dup := given[name]; dup {
			l.addf(p, "duplicate key (also given as %q)", prev)
			continue
		}
		given[name] = k
		if cv, ok := l.clean(p, m[k], ft); ok {
			out[name] = cv
		}
	}
	return out
}

// keysOf returns the decodable fields of struct type t by key.
func keysOf(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = f.Type
	}
	return fields
}

func lookupField(fields map[string]reflect.Type, k string) (string, reflect.Type, bool) {
	if t, ok := fields[k]; ok {
		return k, t, true
	}
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		if strings.EqualFold(name, k) {
			return name, fields[name], true
		}
	}
	return "", nil, false
}

// suggest returns the field key closest to an unknown key k, if close.
func suggest(k string, fields map[string]reflect.Type) string {
	if len(k) < 3 {
		return ""
	}
	best, bestD := "", 3
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		if d := distance(strings.ToLower(k), strings.ToLower(name)); d < bestD {
			best, bestD = name, d
		}
	}
	return best
}

// distance is the Levenshtein distance of a and b, capped for long inputs.
func distance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return math.MaxInt
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// mapping returns v as a map with string keys, reporting anything else.
func (l *loader) mapping(path string, v any) (map[string]any, bool) {
	switch m := v.(type) {
	case map[string]any:
		return m, true
	case map[any]any:
		out := make(map[string]any, len(m))
		ok := true
		for k, e := range m {
			s, isStr := k.(string)
			if !isStr {
				l.addf(path, "key %v is not a string (quote it)", k)
				ok = false
				continue
			}
			out[s] = e
		}
		return out, ok
	default:
		l.addf(path, "expected an object, got %s", describe(v))
		return nil, false
	}
}

func toInt64(v any) (int64, bool) {
	switch x := v.(type) {
	case int:
		return int64(x), true
	case int64:
		return x, true
	case uint64:
		if x > math.MaxInt64 {
			return 0, false
		}
		return int64(x), true
	case float64:
		if x != math.Trunc(x) || x < math.MinInt64 || x >= math.MaxInt64 {
			return 0, false
		}
		return int64(x), true
	}
	return 0, false
}

// want describes what a value of type t looks like in a file.
func want(t reflect.Type) string {
	if t == durationType {
		return `a duration ("60s" or a number of milliseconds)`
	}
	switch t.Kind() {
	case reflect.Pointer:
		return want(t.Elem())
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list of " + strings.TrimPrefix(strings.TrimPrefix(want(t.Elem()), "a "), "an ") + "s"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return t.String()
}

// describe names the kind of a decoded value for messages.
func describe(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int, int64, uint64, float64:
		return "a number"
	case []any:
		return "a list"
	case map[string]any, map[any]any:
		return "an object"
	case time.Time:
		return "a date"
	}
	return fmt.Sprintf("a value of type %T", v)
}

// quoteHint helps with YAML and TOML, where `PORT: 8080` is a number.
func quoteHint(v any) string {
	switch v.(type) {
	case bool, int, int64, uint64, float64:
		return " (quote it)"
	}
	return ""
}

// child is the key path of key k under parent. Keys that are not plain
// words are quoted: headers["X.Y"].
func child(parent, k string) string {
	if !plainKey(k) {
		return fmt.Sprintf("%s[%q]", parent, k)
	}
	if parent == "" {
		return k
	}
	return parent + "." + k
}

// index is the key path of element i of the list at parent.
func index(parent string, i int) string {
	return fmt.Sprintf("%s[%d]", parent, i)
}

func plainKey(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// normalise moves a file without `projects` into the default project, sets
// the Name fields, and records where each project and server sits.
func (l *loader) normalise(c *Config, raw map[string]any) {
	if c.Projects == nil {
		c.Projects = map[string]*Project{DefaultProject: {
			AllowedTools: c.AllowedTools,
			MCPServers:   c.MCPServers,
			APIKeys:      c.APIKeys,
			RateLimit:    c.RateLimit,
			ToolLimits:   c.ToolLimits,
			Auth:         ProjectAuth{OAuth: c.Auth.OAuth, Accept: c.Auth.Accept},
		}}
		c.AllowedTools, c.MCPServers, c.APIKeys, c.RateLimit, c.ToolLimits = nil, nil, nil, RateLimit{}, nil
		c.Auth.OAuth, c.Auth.Accept = nil, nil
		l.place(c, DefaultProject, "")
		return
	}
	if c.Auth.OAuth != nil || c.Auth.Accept != nil {
		for _, k := range []struct {
			key string
			set bool
		}{{"oauth", c.Auth.OAuth != nil}, {"accept", c.Auth.Accept != nil}} {
			if k.set {
				l.addf(child("auth", k.key), "not allowed together with projects (move it into the auth block of each project)")
			}
		}
		c.Auth.OAuth, c.Auth.Accept = nil, nil
	}
	for _, k := range slices.Sorted(maps.Keys(raw)) {
		if raw[k] == nil {
			continue
		}
		if name, _, ok := lookupField(keysOf(configType), k); ok && slices.Contains(projectKeys, name) {
			l.addf(child("", k), "not allowed together with projects (move it into a project)")
		}
	}
	c.AllowedTools, c.MCPServers, c.APIKeys, c.RateLimit, c.ToolLimits = nil, nil, nil, RateLimit{}, nil
	if len(c.Projects) == 0 {
		l.addf("projects", "no projects defined")
	}
	for _, name := range slices.Sorted(maps.Keys(c.Projects)) {
		l.place(c, name, child("projects", name))
	}
}

// projectKeys are the keys a file without `projects` may hold at the top
// level for its one project.
var projectKeys = []string{"mcpServers", "allowedTools", "apiKeys", "rateLimit", "toolLimits"}

// place names project name and its servers and records their paths.
func (l *loader) place(c *Config, name, path string) {
	p := c.Projects[name]
	if p == nil {
		p = new(Project)
		c.Projects[name] = p
	}
	p.Name = name
	l.projects = append(l.projects, placed[Project]{path, p})
	for _, sn := range slices.Sorted(maps.Keys(p.MCPServers)) {
		s := p.MCPServers[sn]
		if s == nil {
			s = new(Server)
			p.MCPServers[sn] = s
		}
		s.Name = sn
		l.servers = append(l.servers, placed[Server]{child(child(path, "mcpServers"), sn), s})
	}
}

// applyDefaults fills in what the file left out.
func applyDefaults(c *Config) {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = Duration(DefaultCallTimeout)
	}
	if c.StartupTimeout == 0 {
		c.StartupTimeout = Duration(DefaultStartupTimeout)
	}
	setDefault(&c.ShutdownGracePeriod, Duration(DefaultShutdownGracePeriod))
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.TLS.MinVersion == "" {
		c.TLS.MinVersion = "1.2"
	}
	setDefault(&c.Audit.Path, "audit.jsonl")
	setDefault(&c.Audit.Fsync, "batch")
	setDefault(&c.Audit.FsyncInterval, Duration(100*time.Millisecond))
	setDefault(&c.Audit.MaxSizeMB, 100)
	setDefault(&c.Audit.MaxFiles, 10)
	setDefault(&c.Audit.RetainAtLeast, Duration(7*24*time.Hour))
	setDefault(&c.KeyMaxAge, Duration(90*24*time.Hour))
	if c.Cluster.Redis.URL != "" {
		setDefault(&c.Cluster.Redis.Timeout, Duration(DefaultRedisTimeout))
	}
	cm := &c.CodeMode
	setDefault(&cm.Timeout, Duration(10*time.Second))
	setDefault(&cm.MemoryLimitMB, 64)
	setDefault(&cm.MaxToolCalls, 100)
	setDefault(&cm.MaxConcurrentToolCalls, 8)
	setDefault(&cm.MaxCodeBytes, 256<<10)
	setDefault(&cm.MaxOutputBytes, 1<<20)
	setDefault(&cm.MaxConcurrentExecutions, 16)
	setDefault(&cm.DeclarationBudgetBytes, 8192)
	setDefault(&cm.FetchMaxResponseBytes, 1<<20)
	setDefault(&cm.FetchMaxRequests, 20)
	if !filepath.IsAbs(c.Audit.Path) {
		c.Audit.Path = filepath.Join(c.DataDir, c.Audit.Path)
	}
	for _, p := range c.Projects {
		if p == nil {
			continue
		}
		if o := p.Auth.OAuth; o != nil {
			setDefault(&o.Leeway, Duration(DefaultOAuthLeeway))
			setDefault(&o.KeysMaxAge, Duration(DefaultOAuthKeysMaxAge))
			setDefault(&o.KeysRefetchInterval, Duration(DefaultOAuthKeysRefetchInterval))
			if len(o.Algorithms) == 0 {
				o.Algorithms = slices.Clone(DefaultOAuthAlgorithms)
			}
		}
	}
	lim := &c.Limits
	setDefault(&lim.MaxRequestBodyBytes, DefaultMaxRequestBodyBytes)
	setDefault(&lim.MaxHeaderBytes, DefaultMaxHeaderBytes)
	setDefault(&lim.ReadHeaderTimeout, Duration(DefaultReadHeaderTimeout))
	setDefault(&lim.ReadTimeout, Duration(DefaultReadTimeout))
	setDefault(&lim.IdleTimeout, Duration(DefaultIdleTimeout))
	setDefault(&lim.MaxSessionsPerKey, DefaultMaxSessionsPerKey)
	setDefault(&lim.MaxInFlightCalls, DefaultMaxInFlightCalls)
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// canonicalTransport maps the spellings of transports that MCP clients use
// to the Transport constants.
func canonicalTransport(s string) (string, bool) {
	switch strings.ToLower(s) {
	case TransportStdio:
		return TransportStdio, true
	case TransportHTTP, "streamable-http", "streamablehttp", "streamable_http":
		return TransportHTTP, true
	case TransportSSE:
		return TransportSSE, true
	}
	return "", false
}

// resolveTransports merges `type` into `transport` and derives the
// transport when neither is given.
func (l *loader) resolveTransports(c *Config) {
	for _, ps := range l.servers {
		p, s := ps.path, ps.v
		tr, trOK := canonicalTransport(s.Transport)
		if s.Transport != "" && !trOK {
			l.addf(child(p, "transport"), "unknown transport %q (want stdio, http or sse)", s.Transport)
		}
		ty, tyOK := canonicalTransport(s.Type)
		if s.Type != "" && !tyOK {
			l.addf(child(p, "type"), "unknown transport %q (want stdio, http or sse)", s.Type)
		}
		switch {
		case trOK && tyOK && tr != ty:
			l.addf(child(p, "type"), "type %q conflicts with transport %q", s.Type, s.Transport)
			l.bad[child(p, "transport")] = true
		case trOK:
		case tyOK:
			tr = ty
		}
		s.Transport, s.Type = tr, ""
		if s.Transport != "" || l.bad[child(p, "transport")] || l.bad[child(p, "type")] {
			continue
		}
		switch {
		case s.Command != "":
			s.Transport = TransportStdio
		case s.URL != "" && !l.bad[child(p, "url")] && isSSEURL(s.URL):
			s.Transport = TransportSSE
		}
	}
}

// isSSEURL reports whether the path of u ends in /sse, the convention of
// servers that speak the HTTP+SSE transport.
func isSSEURL(u string) bool {
	pu, err := parseHTTPURL(u)
	if err != nil {
		return false
	}
	return strings.HasSuffix(strings.TrimSuffix(pu.Path, "/"), "/sse")
}

// Equal reports whether two servers are configured identically, comparing
// every field (nil and empty lists or maps are equal). Reload restarts an
// upstream only when its server is not Equal to the running one.
func Equal(a, b *Server) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Name == b.Name &&
		a.Command == b.Command &&
		slices.Equal(a.Args, b.Args) &&
		maps.Equal(a.Env, b.Env) &&
		a.Cwd == b.Cwd &&
		a.URL == b.URL &&
		maps.Equal(a.Headers, b.Headers) &&
		a.Transport == b.Transport &&
		a.Type == b.Type &&
		(a.Prefix == nil) == (b.Prefix == nil) &&
		(a.Prefix == nil || *a.Prefix == *b.Prefix) &&
		slices.Equal(a.AllowedTools, b.AllowedTools) &&
		slices.Equal(a.AllowedToolsGlob, b.AllowedToolsGlob) &&
		slices.Equal(a.DenyToolsGlob, b.DenyToolsGlob) &&
		slices.Equal(a.AllowedResourcesGlob, b.AllowedResourcesGlob) &&
		slices.Equal(a.DenyResourcesGlob, b.DenyResourcesGlob) &&
		slices.Equal(a.AllowedPromptsGlob, b.AllowedPromptsGlob) &&
		slices.Equal(a.DenyPromptsGlob, b.DenyPromptsGlob) &&
		a.AllowInsecure == b.AllowInsecure &&
		a.Timeout == b.Timeout &&
		a.Disabled == b.Disabled
}
