package config

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/gobwas/glob"
)

// Problem is one thing wrong with a configuration file.
type Problem struct {
	// Path is the key path of the offending value, such as
	// `mcpServers.github.command` or `projects.team.mcpServers.api.args[2]`;
	// keys that are not plain words are quoted: `headers["X.Y"]`. It is
	// empty for a problem with the whole file.
	Path string
	// Message says what is wrong, in lower case.
	Message string
}

// String returns "path: message".
func (p Problem) String() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// Error is an invalid configuration: every problem found, sorted by path.
type Error struct {
	// File is the configuration file, when known; Error prefixes every
	// line with it.
	File string
	// Problems, sorted by Path then Message; never empty.
	Problems []Problem
}

// Error lists the problems, one per line.
func (e *Error) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		if e.File != "" {
			b.WriteString(e.File)
			b.WriteString(": ")
		}
		b.WriteString(p.String())
	}
	return b.String()
}

func newError(problems []Problem) *Error {
	ps := slices.Clone(problems)
	slices.SortStableFunc(ps, func(a, b Problem) int {
		return cmp.Or(strings.Compare(a.Path, b.Path), strings.Compare(a.Message, b.Message))
	})
	return &Error{Problems: slices.Compact(ps)}
}

var (
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	prefixRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{0,64}$`)
)

// validate checks the decoded, interpolated configuration. Checks of
// values already reported bad are skipped.
func (l *loader) validate(c *Config) {
	if !l.bad["listen"] {
		if err := checkListen(c.Listen); err != nil {
			l.addf("listen", "%v", err)
		}
	}
	l.checkTimeout("callTimeout", c.CallTimeout)
	l.checkTimeout("startupTimeout", c.StartupTimeout)

	for _, pp := range l.projects {
		p, proj := pp.path, pp.v
		if p != "" && !nameRE.MatchString(proj.Name) {
			l.addf(p, "invalid project name %q (want 1 to 64 letters, digits, _ or -)", truncate(proj.Name))
		}
		l.checkToolNames(child(p, "allowedTools"), proj.AllowedTools)
	}
	for _, ps := range l.servers {
		l.validateServer(ps.path, ps.v)
	}
}

func (l *loader) validateServer(p string, s *Server) {
	if !nameRE.MatchString(s.Name) {
		l.addf(p, "invalid server name %q (want 1 to 64 letters, digits, _ or -)", truncate(s.Name))
	}

	cmdBad, urlBad := l.bad[child(p, "command")], l.bad[child(p, "url")]
	hasCmd, hasURL := s.Command != "" || cmdBad, s.URL != "" || urlBad
	switch {
	case hasCmd && hasURL:
		l.addf(p, "has both command and url (set exactly one)")
	case !hasCmd && !hasURL:
		l.addf(p, "needs command (a local server) or url (a remote one)")
	case hasCmd:
		if len(s.Headers) > 0 {
			l.addf(child(p, "headers"), "only valid with url, not command")
		}
		if s.Transport == TransportHTTP || s.Transport == TransportSSE {
			l.addf(child(p, "transport"), "transport %s needs url, not command", s.Transport)
		}
	case hasURL:
		for _, f := range []struct {
			key string
			set bool
		}{{"args", len(s.Args) > 0}, {"env", len(s.Env) > 0}, {"cwd", s.Cwd != ""}} {
			if f.set {
				l.addf(child(p, f.key), "only valid with command, not url")
			}
		}
		if s.Transport == TransportStdio {
			l.addf(child(p, "transport"), "transport stdio needs command, not url")
		}
	}
	if s.URL != "" && !urlBad {
		if _, err := parseHTTPURL(s.URL); err != nil {
			l.addf(child(p, "url"), "invalid url %q: %v", truncate(l.shown(child(p, "url"), s.URL)), err)
		}
	}

	if s.Prefix != nil && !prefixRE.MatchString(*s.Prefix) {
		l.addf(child(p, "prefix"), "invalid prefix %q (want at most 64 letters, digits, _, . or -)", truncate(*s.Prefix))
	}
	l.checkToolNames(child(p, "allowedTools"), s.AllowedTools)
	for _, g := range []struct {
		key      string
		patterns []string
	}{
		{"allowedToolsGlob", s.AllowedToolsGlob},
		{"denyToolsGlob", s.DenyToolsGlob},
		{"allowedResourcesGlob", s.AllowedResourcesGlob},
		{"denyResourcesGlob", s.DenyResourcesGlob},
		{"allowedPromptsGlob", s.AllowedPromptsGlob},
		{"denyPromptsGlob", s.DenyPromptsGlob},
	} {
		for i, pat := range g.patterns {
			if err := checkGlob(pat); err != nil {
				l.addf(index(child(p, g.key), i), "%v", err)
			}
		}
	}
	l.checkTimeout(child(p, "timeout"), s.Timeout)
}

func (l *loader) checkToolNames(path string, names []string) {
	for i, n := range names {
		if strings.TrimSpace(n) == "" {
			l.addf(index(path, i), "empty tool name")
		}
	}
}

func (l *loader) checkTimeout(path string, d Duration) {
	if d < 0 && !l.bad[path] {
		l.addf(path, "negative duration %s", d.D())
	}
}

// checkGlob compiles a filter pattern the way package policy does (no
// separators).
func checkGlob(pattern string) (err error) {
	if pattern == "" {
		return errors.New("empty pattern")
	}
	defer func() {
		// A panic in the glob compiler must not take the gateway down
		// with a bad configuration.
		if r := recover(); r != nil {
			err = fmt.Errorf("invalid glob %q: %v", truncate(pattern), r)
		}
	}()
	if _, err := glob.Compile(pattern); err != nil {
		return fmt.Errorf("invalid glob %q: %w", truncate(pattern), err)
	}
	return nil
}

// parseHTTPURL parses an absolute http or https URL with a host.
func parseHTTPURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the url is quoted by the caller, maybe redacted
		}
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, errors.New("want an absolute http or https URL")
	}
	if u.Host == "" {
		return nil, errors.New("missing host")
	}
	return u, nil
}

// checkListen checks a host:port listen address.
func checkListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			err = errors.New(ae.Err)
		}
		return fmt.Errorf("invalid address %q: %w (want host:port)", truncate(addr), err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("invalid port %q in %q", truncate(port), truncate(addr))
	}
	return nil
}
