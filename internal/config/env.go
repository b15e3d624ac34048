package config

import (
	"cmp"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/spf13/viper"
)

// Environment overrides
//
// Every gateway-wide setting that is one value (a string, a number, a
// boolean or a duration) or a list of strings can be given by an
// environment variable instead of the file: TOOLGATE_ followed by its key
// path with camelCase words split by _, dots replaced by _, in upper case
// (listen is TOOLGATE_LISTEN, codeMode.timeout TOOLGATE_CODE_MODE_TIMEOUT,
// limits.maxRequestBodyBytes TOOLGATE_LIMITS_MAX_REQUEST_BODY_BYTES). A
// variable that is set and not empty wins over the file, which wins over
// the default; serve's flags win over both. Its text is read as the file's
// value would be: "true" or "false" (or 1, 0, t, f) for a boolean, a
// decimal number, a duration ("90s", or a number of milliseconds), and
// for a list, items separated by commas (spaces around them are dropped).
// The value is then checked like the file's, and a problem with it names
// the variable. It is taken as it is: `${VAR}` in it is not interpolated,
// and a relative path in it is relative to the working directory, not to
// the file. The keys of a project (mcpServers, allowedTools, apiKeys,
// rateLimit, toolLimits, auth.oauth, auth.accept, projects) and
// alerts.rules, a list of objects, have no variable.

// EnvPrefix starts the name of every variable that overrides a setting.
const EnvPrefix = "TOOLGATE"

// EnvConfigFile is the variable that names the configuration file when no
// file is given explicitly (see [Find]).
const EnvConfigFile = EnvPrefix + "_CONFIG"

// EnvOverride is a setting the environment gave in place of the file.
type EnvOverride struct {
	// Path is the key path of the setting, such as "codeMode.timeout".
	Path string
	// Var is the variable, such as TOOLGATE_CODE_MODE_TIMEOUT.
	Var string
}

// envSetting is a setting that a variable can override.
type envSetting struct {
	path string       // key path: "codeMode.timeout"
	keys []string     // its keys: "codeMode", "timeout"
	key  string       // the key viper reads the variable by: "code_mode.timeout"
	name string       // the variable: "TOOLGATE_CODE_MODE_TIMEOUT"
	t    reflect.Type // the field's type
}

// envKeyReplacer turns a viper key into the rest of a variable's name.
var envKeyReplacer = strings.NewReplacer(".", "_")

// envSettings are the settings a variable can override, sorted by path.
var envSettings = collectEnvSettings()

// collectEnvSettings lists the settings of Config a variable can
// override, by walking its fields.
func collectEnvSettings() []envSetting {
	var out []envSetting
	var walk func(keys []string, t reflect.Type)
	walk = func(keys []string, t reflect.Type) {
		for name, ft := range keysOf(t) {
			if len(keys) == 0 && (name == "projects" || slices.Contains(projectKeys, name)) {
				continue
			}
			path := append(slices.Clone(keys), name)
			if slices.Equal(path, []string{"auth", "accept"}) {
				continue // the default project's, like its other keys
			}
			if ft.Kind() == reflect.Struct && ft != durationType {
				walk(path, ft)
				continue
			}
			if !envSettable(ft) {
				continue
			}
			words := make([]string, len(path))
			for i, k := range path {
				words[i] = snakeCase(k)
			}
			key := strings.Join(words, ".")
			out = append(out, envSetting{
				path: strings.Join(path, "."),
				keys: path,
				key:  key,
				name: strings.ToUpper(EnvPrefix + "_" + envKeyReplacer.Replace(key)),
				t:    ft,
			})
		}
	}
	walk(nil, configType)
	slices.SortFunc(out, func(a, b envSetting) int { return cmp.Compare(a.path, b.path) })
	return out
}

// envSettable reports whether a field of type t can be written as one
// variable: a single value, or a list of strings.
func envSettable(t reflect.Type) bool {
	if t == durationType {
		return true
	}
	switch deref(t).Kind() {
	case reflect.String, reflect.Bool,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Float32, reflect.Float64:
		return true
	case reflect.Slice:
		return t.Elem().Kind() == reflect.String
	}
	return false
}

// snakeCase splits a camelCase key into lower-case words joined by _: a
// word starts at an upper-case letter that follows a lower-case letter or
// a digit, so maxRequestBodyBytes is max_request_body_bytes, memoryLimitMB
// memory_limit_mb and allowedIPs allowed_ips.
func snakeCase(k string) string {
	var b strings.Builder
	prev := rune(0)
	for _, r := range k {
		if unicode.IsUpper(r) && (unicode.IsLower(prev) || unicode.IsDigit(prev)) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(r))
		prev = r
	}
	return b.String()
}

// envReader returns the value of the variable of a setting, and whether
// it is set (an empty variable is not).
type envReader func(s envSetting) (string, bool)

// processEnv reads the variables of the process through viper: with the
// prefix and the key replacer, viper's automatic environment reads the
// key code_mode.timeout from TOOLGATE_CODE_MODE_TIMEOUT. An empty
// variable counts as not set, as viper has it by default.
func processEnv() envReader {
	v := viper.New()
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(envKeyReplacer)
	v.AutomaticEnv()
	return func(s envSetting) (string, bool) {
		val, ok := v.Get(s.key).(string)
		return val, ok && val != ""
	}
}

// envValue turns the text of a variable into the value a file would hold
// for setting s, or says why it cannot be one.
func envValue(s envSetting, text string) (any, error) {
	t := deref(s.t)
	switch {
	case s.t == durationType:
		// A number is milliseconds, as in a file; anything else is a
		// duration string, which the loader checks.
		if n, err := strconv.ParseInt(text, 10, 64); err == nil {
			return n, nil
		}
		if f, err := strconv.ParseFloat(text, 64); err == nil {
			return f, nil
		}
		return text, nil
	case t.Kind() == reflect.Slice:
		list := []any{}
		for item := range strings.SplitSeq(text, ",") {
			if item = strings.TrimSpace(item); item != "" {
				list = append(list, item)
			}
		}
		return list, nil
	case t.Kind() == reflect.String:
		return text, nil
	case t.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(text)
		if err != nil {
			return nil, fmt.Errorf("expected true or false, got %q", truncate(text))
		}
		return b, nil
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		f, err := strconv.ParseFloat(text, 64)
		if err != nil {
			return nil, fmt.Errorf("expected a number, got %q", truncate(text))
		}
		return f, nil
	default:
		n, err := strconv.ParseInt(text, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("expected an integer, got %q", truncate(text))
		}
		return n, nil
	}
}

// applyEnv returns raw with the values of the variables that are set in
// place of the file's. It records what the environment set; a variable
// whose text is not a value of its setting is a problem, and the setting
// is then left out. raw itself is not changed.
func (l *loader) applyEnv(raw map[string]any, env envReader) map[string]any {
	for _, s := range envSettings {
		text, ok := env(s)
		if !ok {
			continue
		}
		l.fromEnv[s.path] = s.name
		v, err := envValue(s, text)
		if err != nil {
			l.addf(s.path, "%v", err)
		}
		raw = setKey(raw, s.keys, v)
	}
	return raw
}

// setKey returns a copy of m with the setting at keys set to v, keys
// matched as the loader matches them; the maps on the way are copied,
// not changed. Where the file holds something other than an object on
// the way, which is a problem of its own, m is returned as it is.
func setKey(m map[string]any, keys []string, v any) map[string]any {
	out := maps.Clone(m)
	if out == nil {
		out = map[string]any{}
	}
	k, ok := fieldKey(out, keys[0])
	if !ok {
		k = keys[0]
	}
	if len(keys) == 1 {
		out[k] = v
		return out
	}
	next, isMap := asMap(out[k])
	if out[k] != nil && !isMap {
		return m
	}
	out[k] = setKey(next, keys[1:], v)
	return out
}

// overrides lists what the environment set, sorted by key path.
func (l *loader) overrides() []EnvOverride {
	var out []EnvOverride
	for _, p := range slices.Sorted(maps.Keys(l.fromEnv)) {
		out = append(out, EnvOverride{Path: p, Var: l.fromEnv[p]})
	}
	return out
}

// envVarOf returns the variable that set the value at path (or a value
// that holds it), if any.
func (l *loader) envVarOf(path string) string {
	for p, name := range l.fromEnv {
		if path == p || strings.HasPrefix(path, p+"[") || strings.HasPrefix(path, p+".") {
			return name
		}
	}
	return ""
}
