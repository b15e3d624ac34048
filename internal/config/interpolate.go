package config

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Interpolation
//
// In the string fields of a server that may hold a secret or a
// machine-specific value (command, args, env values, cwd, url and header
// values) `${NAME}` and `${env:NAME}` are replaced by the environment
// variable NAME, where NAME matches [A-Za-z_][A-Za-z0-9_]*. A variable that
// is not set is an error naming it and the key path; a variable set to ""
// is allowed. `$${` stands for a literal `${`, so `$${NAME}` yields the
// text `${NAME}`. Any other `$` is kept as it is. Replaced text is not
// scanned again. Keys (server, variable and header names) are never
// interpolated.

// expand returns s with its `${...}` references replaced by lookup, and a
// message for every problem in s (then the returned string is not to be
// used).
func expand(s string, lookup func(string) (string, bool)) (string, []string) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	var problems []string
	for i := 0; i < len(s); {
		j := strings.IndexByte(s[i:], '$')
		if j < 0 {
			b.WriteString(s[i:])
			break
		}
		j += i
		b.WriteString(s[i:j])
		rest := s[j:]
		switch {
		case strings.HasPrefix(rest, "$${"):
			b.WriteString("${")
			i = j + 3
		case strings.HasPrefix(rest, "${"):
			end := strings.IndexByte(rest, '}')
			if end < 0 {
				problems = append(problems, fmt.Sprintf("unterminated reference %q (missing \"}\")", truncate(rest)))
				b.WriteString(rest)
				i = len(s)
				break
			}
			ref := rest[2:end]
			i = j + end + 1
			name := strings.TrimPrefix(ref, "env:")
			switch {
			case name == "":
				problems = append(problems, fmt.Sprintf("empty reference %q", "${"+ref+"}"))
			case !validVarName(name):
				problems = append(problems, fmt.Sprintf("invalid reference %q (want ${NAME} or ${env:NAME}, NAME made of letters, digits and _; write $${ for a literal ${)", truncate("${"+ref+"}")))
			default:
				v, ok := lookup(name)
				if !ok {
					problems = append(problems, fmt.Sprintf("environment variable %s is not set", name))
				}
				b.WriteString(v)
			}
		default:
			b.WriteByte('$')
			i = j + 1
		}
	}
	return b.String(), problems
}

// validVarName reports whether name matches [A-Za-z_][A-Za-z0-9_]*.
func validVarName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9' {
			continue
		}
		return false
	}
	return true
}

// truncate shortens long text quoted in messages.
func truncate(s string) string {
	const max = 40
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

// interpolate expands the references in every server's interpolated
// fields, in place.
func (l *loader) interpolate(c *Config) {
	l.expandField("tls.certFile", &c.TLS.CertFile)
	l.expandField("tls.keyFile", &c.TLS.KeyFile)
	l.expandField("alerts.webhook", &c.Alerts.Webhook)
	l.expandField("cluster.redis.url", &c.Cluster.Redis.URL)
	l.expandField("cluster.postgres.url", &c.Cluster.Postgres.URL)
	l.expandField("sessionKey", &c.SessionKey)
	for _, ps := range l.servers {
		p, s := ps.path, ps.v
		l.expandField(child(p, "command"), &s.Command)
		for i := range s.Args {
			l.expandField(index(child(p, "args"), i), &s.Args[i])
		}
		l.expandMap(child(p, "env"), s.Env)
		l.expandField(child(p, "cwd"), &s.Cwd)
		l.expandField(child(p, "url"), &s.URL)
		l.expandMap(child(p, "headers"), s.Headers)
	}
}

func (l *loader) expandMap(path string, m map[string]string) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := m[k]
		l.expandField(child(path, k), &v)
		m[k] = v
	}
}

// expandField expands *v in place, remembering the written form for
// messages and reporting problems at path. A value from the environment
// is taken as it is.
func (l *loader) expandField(path string, v *string) {
	if _, env := l.fromEnv[path]; env {
		return
	}
	lookup := l.lookup
	if l.clusterLookup != nil && strings.HasPrefix(path, "cluster.") {
		lookup = l.clusterLookup
	}
	out, problems := expand(*v, lookup)
	for _, msg := range problems {
		l.addf(path, "%s", msg)
	}
	if out != *v {
		l.origin[path] = *v
		*v = out
	}
}

// LiteralText is the part of s that a file states literally: every `${NAME}`
// and `${env:NAME}` reference is replaced by sep and `$${` by "${", as
// interpolation reads them. Secret scanners use it to look only at what
// is not taken from the environment.
func LiteralText(s, sep string) string {
	out, _ := expand(s, func(string) (string, bool) { return sep, true })
	return out
}
