package config

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

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
	// Var is the environment variable the value came from, when it did
	// not come from the file (see [EnvOverride]).
	Var string
}

// String returns "path: message", or "VAR (path): message" for a value
// from the environment.
func (p Problem) String() string {
	switch {
	case p.Var != "":
		return p.Var + " (" + p.Path + "): " + p.Message
	case p.Path == "":
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// Error is an invalid configuration: every problem found, sorted by path.
type Error struct {
	// File is the configuration file, when known; Error prefixes with it
	// every line about a value of the file.
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
		if e.File != "" && p.Var == "" {
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
	l.checkTimeout("shutdownGracePeriod", c.ShutdownGracePeriod)
	if c.ShutdownGracePeriod > Duration(time.Hour) {
		l.addf("shutdownGracePeriod", "at most 1h (got %s)", c.ShutdownGracePeriod.D())
	}

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
	l.validateAccess(c)
	l.validateAuth(c)
	l.validateCluster(c)
	l.validateSessionKey(c)
}

// validateSessionKey checks that sessionKey comes from the environment
// (the file names it with one ${VAR}) and that each of its keys is long
// enough. Its text is never quoted back.
func (l *loader) validateSessionKey(c *Config) {
	const path = "sessionKey"
	if c.SessionKey == "" || l.bad[path] {
		return
	}
	if _, env := l.fromEnv[path]; !env {
		// Only references, and the commas that separate the keys of a
		// rotation.
		literal := strings.Map(func(r rune) rune {
			if r == ',' || unicode.IsSpace(r) {
				return -1
			}
			return r
		}, LiteralText(l.shown(path, c.SessionKey), ""))
		if literal != "" {
			l.addf(path, "a secret does not belong in the file: write ${VAR} and set VAR, or set TOOLGATE_SESSION_KEY")
			return
		}
	}
	for i, k := range c.SessionKeys() {
		if len(k) < SessionKeyMinLen {
			l.addf(path, "key %d is %d bytes long: at least %d are needed (openssl rand -base64 48 makes one)", i+1, len(k), SessionKeyMinLen)
		}
	}
}

// nodeRE is the rule for a replica's name.
var nodeRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// validateCluster checks the shared engines. Their URLs are never
// quoted back: they may hold a password.
func (l *loader) validateCluster(c *Config) {
	cl := &c.Cluster
	if cl.Redis.URL != "" && !l.bad["cluster.redis.url"] {
		if err := checkServiceURL(cl.Redis.URL, "redis", "rediss"); err != nil {
			l.addf("cluster.redis.url", "%v", err)
		}
	}
	if cl.Redis.URL == "" && (cl.Redis.FailOpen || cl.Redis.Timeout != 0) {
		l.addf("cluster.redis", "failOpen and timeout need cluster.redis.url")
	}
	l.checkTimeout("cluster.redis.timeout", cl.Redis.Timeout)
	if cl.Redis.Timeout > Duration(time.Minute) {
		l.addf("cluster.redis.timeout", "at most 1m (got %s)", cl.Redis.Timeout.D())
	}
	if cl.Postgres.URL != "" && !l.bad["cluster.postgres.url"] {
		if err := checkServiceURL(cl.Postgres.URL, "postgres", "postgresql"); err != nil {
			l.addf("cluster.postgres.url", "%v", err)
		}
	}
	if cl.Node != "" && !nodeRE.MatchString(cl.Node) {
		l.addf("cluster.node", "invalid node name %q (want 1 to 64 letters, digits, '.', '_' or '-')", truncate(cl.Node))
	}
	if cl.Node != "" && cl.Postgres.URL == "" {
		l.addf("cluster.node", "names this replica in the shared audit trail: it needs cluster.postgres.url")
	}
}

// checkServiceURL checks the URL of a database server: one of the schemes,
// and a host. Its text is not repeated, since it may hold a password.
func checkServiceURL(s string, schemes ...string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a valid URL")
	}
	if !slices.Contains(schemes, u.Scheme) {
		return fmt.Errorf("want a %s:// URL", strings.Join(schemes, ":// or "))
	}
	if u.Host == "" {
		return errors.New("missing host")
	}
	return nil
}

var sha256RE = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

// validateAccess checks the access-control keys: TLS, IP lists, keys and
// rate limits.
func (l *loader) validateAccess(c *Config) {
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		l.addf("tls", "needs both certFile and keyFile")
	}
	if v := c.TLS.MinVersion; v != "1.2" && v != "1.3" {
		l.addf("tls.minVersion", "unsupported TLS version %q (want \"1.2\" or \"1.3\")", truncate(v))
	}
	if f := c.Audit.Fsync; f != "batch" && f != "always" {
		l.addf("audit.fsync", "unknown mode %q (want \"batch\" or \"always\")", truncate(f))
	}
	l.checkTimeout("audit.fsyncInterval", c.Audit.FsyncInterval)
	l.checkTimeout("audit.retainAtLeast", c.Audit.RetainAtLeast)
	if c.Alerts.Webhook != "" && !l.bad["alerts.webhook"] {
		if _, err := parseHTTPURL(c.Alerts.Webhook); err != nil {
			l.addf("alerts.webhook", "invalid url: %v", err)
		}
	}
	for i, r := range c.Alerts.Rules {
		rp := index("alerts.rules", i)
		if !slices.Contains(EventTypes, r.Event) {
			l.addf(child(rp, "event"), "unknown event type %q (one of %s)", truncate(r.Event), strings.Join(EventTypes, ", "))
		}
		if r.Threshold <= 0 {
			l.addf(child(rp, "threshold"), "must be at least 1")
		}
		if r.Window <= 0 && !l.bad[child(rp, "window")] {
			l.addf(child(rp, "window"), "must be a positive duration")
		}
	}
	if c.Metrics.Listen != "" {
		if err := checkListen(c.Metrics.Listen); err != nil {
			l.addf("metrics.listen", "%v", err)
		}
	}
	cm := c.CodeMode
	l.checkTimeout("codeMode.timeout", cm.Timeout)
	if cm.Timeout > Duration(10*time.Minute) {
		l.addf("codeMode.timeout", "at most 10m")
	}
	for _, f := range []struct {
		key string
		n   int64
	}{{"memoryLimitMB", int64(cm.MemoryLimitMB)}, {"maxStackKB", int64(cm.MaxStackKB)}, {"maxToolCalls", int64(cm.MaxToolCalls)},
		{"maxConcurrentToolCalls", int64(cm.MaxConcurrentToolCalls)}, {"maxCodeBytes", int64(cm.MaxCodeBytes)}, {"maxOutputBytes", int64(cm.MaxOutputBytes)},
		{"maxConcurrentExecutions", int64(cm.MaxConcurrentExecutions)}, {"declarationBudgetBytes", int64(cm.DeclarationBudgetBytes)},
		{"fetchMaxResponseBytes", cm.FetchMaxResponseBytes}, {"fetchMaxRequests", int64(cm.FetchMaxRequests)}} {
		if f.n < 0 {
			l.addf(child("codeMode", f.key), "must not be negative")
		}
	}
	for i, pat := range cm.FetchAllowHosts {
		if err := checkGlob(pat); err != nil {
			l.addf(index("codeMode.fetchAllowHosts", i), "%v", err)
		}
	}
	l.checkCIDRs("allowedIPs", c.AllowedIPs)
	l.checkCIDRs("deniedIPs", c.DeniedIPs)
	l.checkCIDRs("trustedProxies", c.TrustedProxies)
	l.checkHosts("allowedHosts", c.AllowedHosts)
	l.checkOrigins("allowedOrigins", c.AllowedOrigins)
	lim := c.Limits
	for _, f := range []struct {
		key string
		n   int64
	}{{"maxRequestBodyBytes", lim.MaxRequestBodyBytes}, {"maxHeaderBytes", int64(lim.MaxHeaderBytes)}, {"maxSessionsPerKey", int64(lim.MaxSessionsPerKey)}, {"maxInFlightCalls", int64(lim.MaxInFlightCalls)}} {
		if f.n < 0 {
			l.addf(child("limits", f.key), "must not be negative")
		}
	}
	for _, f := range []struct {
		key string
		d   Duration
	}{{"readHeaderTimeout", lim.ReadHeaderTimeout}, {"readTimeout", lim.ReadTimeout}, {"writeTimeout", lim.WriteTimeout}, {"idleTimeout", lim.IdleTimeout}} {
		l.checkTimeout(child("limits", f.key), f.d)
	}
	for _, pp := range l.projects {
		p, proj := pp.path, pp.v
		l.checkCIDRs(child(p, "allowedIPs"), proj.AllowedIPs)
		l.checkCIDRs(child(p, "deniedIPs"), proj.DeniedIPs)
		l.checkHosts(child(p, "allowedHosts"), proj.AllowedHosts)
		l.checkOrigins(child(p, "allowedOrigins"), proj.AllowedOrigins)
		for i, k := range proj.APIKeys {
			kp := index(child(p, "apiKeys"), i)
			if strings.TrimSpace(k.Name) == "" {
				l.addf(child(kp, "name"), "empty key name")
			}
			if !sha256RE.MatchString(k.SHA256) {
				l.addf(child(kp, "sha256"), "want the 64 hex digits of the SHA-256 of the key (toolgate keys hash prints it)")
			}
		}
		rl := proj.RateLimit
		if rl.RequestsPerMinute < 0 || rl.Burst < 0 || rl.PerKeyRequestsPerMinute < 0 || rl.PerKeyBurst < 0 {
			l.addf(child(p, "rateLimit"), "rates and bursts must not be negative")
		}
		for _, name := range slices.Sorted(maps.Keys(proj.ToolLimits)) {
			tl := proj.ToolLimits[name]
			if strings.TrimSpace(name) == "" {
				l.addf(child(p, "toolLimits"), "empty tool name")
			}
			if tl.RequestsPerMinute < 0 || tl.Burst < 0 {
				l.addf(child(child(p, "toolLimits"), name), "rates and bursts must not be negative")
			}
		}
	}
}

// checkCIDRs reports entries that are neither a CIDR nor an address.
func (l *loader) checkCIDRs(path string, list []string) {
	for i, s := range list {
		if _, err := netip.ParsePrefix(s); err == nil {
			continue
		}
		if _, err := netip.ParseAddr(s); err == nil {
			continue
		}
		l.addf(index(path, i), "%q is neither a CIDR (10.0.0.0/8, fd00::/8) nor an IP address", truncate(s))
	}
}

// checkHosts reports entries of an allowedHosts list that are neither "*"
// nor a host with an optional port.
func (l *loader) checkHosts(path string, list []string) {
	for i, s := range list {
		if s == AnyHost {
			continue
		}
		if _, _, err := ParseHostPattern(s); err != nil {
			l.addf(index(path, i), "%q: %v", truncate(s), err)
		}
	}
}

// checkOrigins reports entries of an allowedOrigins list that are neither
// "*" nor an http(s) origin.
func (l *loader) checkOrigins(path string, list []string) {
	for i, s := range list {
		if s == AnyHost {
			continue
		}
		if _, err := NormalizeOrigin(s); err != nil {
			l.addf(index(path, i), "%q: %v", truncate(s), err)
		}
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
		if u, err := parseHTTPURL(s.URL); err != nil {
			l.addf(child(p, "url"), "invalid url %q: %v", truncate(l.shown(child(p, "url"), s.URL)), err)
		} else if u.Scheme == "http" && !s.AllowInsecure && !IsLoopbackHost(u.Hostname()) {
			l.addf(child(p, "url"), "plain http to %s sends credentials and results in the clear: use https, or set allowInsecure: true", u.Hostname())
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

// IsLoopbackHost reports whether host is localhost or a loopback address
// (IPv4-mapped IPv6 included).
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
