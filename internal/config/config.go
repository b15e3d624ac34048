// Package config owns toolgate's configuration file: its types, where it
// is found, loading (JSON with comments and trailing commas, YAML or TOML,
// read through viper's codecs), `${VAR}` interpolation from the
// environment, the TOOLGATE_ variables that override settings, strict
// decoding and validation, and the file as written for tools that grade
// it. It knows nothing about MCP transports or the gateway; other
// packages receive the decoded values.
package config

import (
	"strings"
	"time"
)

// DefaultProject is the name of the project a file without `projects`
// describes. It is served at both /mcp and /v1/mcp/default.
const DefaultProject = "default"

// Defaults applied by Load where the file is silent.
const (
	DefaultListen         = "127.0.0.1:8080"
	DefaultCallTimeout    = 60 * time.Second
	DefaultStartupTimeout = 30 * time.Second
	DefaultDataDir        = "toolgate-data"

	DefaultMaxRequestBodyBytes = 4 << 20
	DefaultMaxHeaderBytes      = 64 << 10
	DefaultReadHeaderTimeout   = 10 * time.Second
	DefaultReadTimeout         = 60 * time.Second
	DefaultIdleTimeout         = 120 * time.Second
	DefaultMaxSessionsPerKey   = 64
	DefaultMaxInFlightCalls    = 256

	DefaultShutdownGracePeriod = 10 * time.Second

	DefaultRedisTimeout = 250 * time.Millisecond
)

// Config is a whole configuration file after loading: interpolated,
// defaulted and validated. A file without `projects` is normalised into
// one project named DefaultProject.
type Config struct {
	// Path is the file this configuration was read from ("" for the demo).
	Path string `mapstructure:"-"`
	// FromEnv lists the settings that TOOLGATE_ environment variables
	// gave in place of the file, sorted by key path.
	FromEnv []EnvOverride `mapstructure:"-"`

	// Listen is the address of the HTTP listener (host:port).
	Listen string `mapstructure:"listen"`
	// CallTimeout is the default deadline of one upstream call
	// (a Go duration string such as "60s", or a number of milliseconds).
	CallTimeout Duration `mapstructure:"callTimeout"`
	// StartupTimeout bounds how long serve waits for upstreams to connect
	// before it starts answering (slow upstreams keep connecting after).
	StartupTimeout Duration `mapstructure:"startupTimeout"`
	// ShutdownGracePeriod is how long serve lets the tool calls and Code
	// Mode executions in flight finish after SIGTERM or SIGINT before it
	// cancels them (default 10s; 0 in the file means the default).
	ShutdownGracePeriod Duration `mapstructure:"shutdownGracePeriod"`

	// DataDir holds the key database (toolgate.db). A relative path in the
	// file is relative to the file's folder; the default is
	// "toolgate-data" beside the file (or in the working directory).
	DataDir string `mapstructure:"dataDir"`

	// Auth decides whether clients must present an API key.
	Auth Auth `mapstructure:"auth"`
	// TLS serves HTTPS when certFile and keyFile are set.
	TLS TLS `mapstructure:"tls"`
	// AllowInsecureHTTP lets a listener that is not on loopback serve plain
	// HTTP (a warning is logged at startup).
	AllowInsecureHTTP bool `mapstructure:"allowInsecureHTTP"`
	// AllowedIPs and DeniedIPs are CIDRs (or single addresses) checked for
	// every request to the gateway; deny beats allow, an empty allow list
	// allows all.
	AllowedIPs []string `mapstructure:"allowedIPs"`
	DeniedIPs  []string `mapstructure:"deniedIPs"`
	// TrustedProxies are the CIDRs whose X-Forwarded-For header is
	// believed; by default none.
	TrustedProxies []string `mapstructure:"trustedProxies"`
	// AllowedHosts and AllowedOrigins widen the Host and Origin checks
	// that keep web pages from reaching the gateway through DNS
	// rebinding: Host names a reverse proxy forwards ("mcp.example.com",
	// any port, or "mcp.example.com:8443", see [ParseHostPattern]), and
	// the origins of browser clients ("https://app.example.com", see
	// [NormalizeOrigin]). "*" accepts any value and turns that protection
	// off. A project's own lists add to these for its endpoint.
	AllowedHosts   []string `mapstructure:"allowedHosts"`
	AllowedOrigins []string `mapstructure:"allowedOrigins"`
	// Limits bound what one request or one key may take.
	Limits Limits `mapstructure:"limits"`

	// Audit configures the append-only audit log.
	Audit Audit `mapstructure:"audit"`
	// Alerts are rules over audit events and the webhook they post to.
	Alerts Alerts `mapstructure:"alerts"`
	// Metrics configures /metrics.
	Metrics Metrics `mapstructure:"metrics"`
	// QuarantineChangedTools hides a tool whose definition changed after
	// it was first seen until an operator approves it.
	QuarantineChangedTools bool `mapstructure:"quarantineChangedTools"`
	// CodeMode lets agents send one JavaScript program instead of many
	// tool calls (see CodeMode).
	CodeMode CodeMode `mapstructure:"codeMode"`
	// KeyMaxAge is the rotation schedule `toolgate check` grades keys
	// against (default 90 days).
	KeyMaxAge Duration `mapstructure:"keyMaxAge"`
	// Cluster moves the state that replicas behind one load balancer must
	// share to shared engines; without it everything stays embedded.
	Cluster Cluster `mapstructure:"cluster"`
	// SessionKey is the secret that makes the MCP sessions of clients on
	// protocol versions before 2026-07-28 valid on every replica that
	// has it: each session's ID is sealed with it, and any replica opens
	// it. At least 32 bytes; during a rotation, the new key and the old
	// one separated by a comma (the first seals, both open). It comes
	// from the environment only: write `${VAR}` in the file, or set
	// TOOLGATE_SESSION_KEY. Without it each replica seals with a key of
	// its own, made at start: sessions then live in one process.
	SessionKey string `mapstructure:"sessionKey"`

	// Projects by name. After Load it always holds at least one project.
	Projects map[string]*Project `mapstructure:"projects"`

	// The top-level forms of the project keys, for a file without
	// `projects`. Load moves them into Projects[DefaultProject].
	AllowedTools []string             `mapstructure:"allowedTools"`
	MCPServers   map[string]*Server   `mapstructure:"mcpServers"`
	APIKeys      []APIKey             `mapstructure:"apiKeys"`
	RateLimit    RateLimit            `mapstructure:"rateLimit"`
	ToolLimits   map[string]ToolLimit `mapstructure:"toolLimits"`
}

// Auth configures client authentication.
type Auth struct {
	// Required defaults to true. false is accepted only for a loopback
	// listener.
	Required *bool `mapstructure:"required"`
	// OAuth and Accept are the default project's, in a file without
	// `projects` (see ProjectAuth); Load moves them there. With
	// `projects`, each project has its own.
	OAuth  *OAuth   `mapstructure:"oauth"`
	Accept []string `mapstructure:"accept"`
}

// SessionKeys returns the secrets of SessionKey, the sealing one first.
func (c *Config) SessionKeys() []string {
	var out []string
	for part := range strings.SplitSeq(c.SessionKey, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// SessionKeyMinLen is the least length of one SessionKey secret.
const SessionKeyMinLen = 32

// AuthRequired reports whether clients must present a credential.
func (c *Config) AuthRequired() bool { return c.Auth.Required == nil || *c.Auth.Required }

// Credentials a project may accept (ProjectAuth.Accept).
const (
	CredentialAPIKey = "apiKey" // toolgate's own API keys
	CredentialOAuth  = "oauth"  // OAuth 2.1 access tokens (ProjectAuth.OAuth)
)

// ProjectAuth says which credentials a project's clients may present.
type ProjectAuth struct {
	// OAuth makes the project an OAuth 2.1 resource server: it accepts
	// the access tokens the operator's authorization server issues for
	// it, beside or instead of API keys (see Accept).
	OAuth *OAuth `mapstructure:"oauth"`
	// Accept lists the credentials the project accepts: "apiKey" and
	// "oauth". The default is both when oauth is set, else API keys
	// only; ["oauth"] refuses API keys, so that every client signs in
	// with the identity provider. Read it with Accepts.
	Accept []string `mapstructure:"accept"`
}

// Accepts reports whether the project accepts credentials of kind (one of
// the Credential constants).
func (a ProjectAuth) Accepts(kind string) bool {
	if a.Accept == nil {
		return kind == CredentialAPIKey || kind == CredentialOAuth && a.OAuth != nil
	}
	for _, k := range a.Accept {
		if k == kind {
			return true
		}
	}
	return false
}

// OAuth configures the OAuth 2.1 access tokens a project accepts: JWTs
// (RFC 9068) signed by the operator's authorization server, checked
// against its discovery document and keys. toolgate is the resource
// server only: clients get their tokens from the authorization server,
// which the project's protected resource metadata (RFC 9728) names.
type OAuth struct {
	// Issuer is the authorization server's issuer identifier, an https
	// URL. Its keys are found through its discovery document
	// (/.well-known/openid-configuration, else RFC 8414's
	// /.well-known/oauth-authorization-server), and a token must carry
	// it in iss.
	Issuer string `mapstructure:"issuer"`
	// Audience is what a token's aud claim must hold for this project:
	// its resource identifier (the URL clients use, as RFC 8707 resource
	// indicators make it), or the identifier the authorization server
	// puts in aud for this API. Required: a token issued for another
	// service, or another project, is refused.
	Audience string `mapstructure:"audience"`
	// Resource is the resource identifier the protected resource
	// metadata publishes; by default the URL a client reached the project
	// at. Set it when clients reach the gateway through a proxy under
	// another URL.
	Resource string `mapstructure:"resource"`
	// RequiredScopes must all be in a token's scope (or scp) claim; a
	// token without one of them is answered 403 insufficient_scope, with
	// the scopes needed.
	RequiredScopes []string `mapstructure:"requiredScopes"`
	// Scopes and Groups grant tools: each maps a scope, or a group or
	// role found in GroupsClaim, to globs of the namespaced tool names
	// (server__tool) a token that holds it may see and call. When either
	// is set, a token sees only what its scopes and groups grant; when
	// neither is, it sees what an API key sees. The project's filters
	// apply first either way: a denied tool stays denied.
	Scopes map[string][]string `mapstructure:"scopes"`
	Groups map[string][]string `mapstructure:"groups"`
	// GroupsClaim names the claim that holds a token's groups or roles:
	// a list of strings or one string, at a top-level name ("groups",
	// "roles") or a dotted path ("realm_access.roles").
	GroupsClaim string `mapstructure:"groupsClaim"`
	// Algorithms are the JWS algorithms accepted (default RS256, RS384,
	// RS512, PS256, PS384, PS512, ES256, ES384, ES512 and EdDSA). "none"
	// and the HMAC algorithms (HS256...) are never accepted.
	Algorithms []string `mapstructure:"algorithms"`
	// Leeway is the clock skew allowed on exp, nbf and iat (default 30s,
	// at most 5m).
	Leeway Duration `mapstructure:"leeway"`
	// KeysMaxAge is how long the issuer's discovery document and keys
	// are used before they are fetched again (default 1h): a key the
	// issuer withdraws stops working within that time.
	KeysMaxAge Duration `mapstructure:"keysMaxAge"`
	// KeysRefetchInterval is the least time between two fetches of the
	// keys caused by tokens signed with a key id the gateway does not
	// have (default 10s): a new key is picked up at once, and a flood of
	// made-up key ids costs the issuer one request per interval.
	KeysRefetchInterval Duration `mapstructure:"keysRefetchInterval"`
	// AllowInsecureIssuer accepts an http:// issuer on a loopback
	// address (a provider on the same machine, tests). Any other issuer
	// must be https.
	AllowInsecureIssuer bool `mapstructure:"allowInsecureIssuer"`
}

// Defaults of OAuth.
const (
	DefaultOAuthLeeway              = 30 * time.Second
	DefaultOAuthKeysMaxAge          = time.Hour
	DefaultOAuthKeysRefetchInterval = 10 * time.Second
)

// DefaultOAuthAlgorithms are the JWS algorithms OAuth accepts by
// default: every asymmetric one.
var DefaultOAuthAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// TLS configures HTTPS. The files are read again when they change.
type TLS struct {
	CertFile string `mapstructure:"certFile"`
	KeyFile  string `mapstructure:"keyFile"`
	// MinVersion is "1.2" (the default) or "1.3".
	MinVersion string `mapstructure:"minVersion"`
}

// Enabled reports whether HTTPS is configured.
func (t TLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// Limits bound requests and sessions. Zero values take the defaults.
type Limits struct {
	MaxRequestBodyBytes int64    `mapstructure:"maxRequestBodyBytes"`
	MaxHeaderBytes      int      `mapstructure:"maxHeaderBytes"`
	ReadHeaderTimeout   Duration `mapstructure:"readHeaderTimeout"`
	ReadTimeout         Duration `mapstructure:"readTimeout"`
	// WriteTimeout is off by default: streamed responses (SSE) last as long
	// as a session listens.
	WriteTimeout      Duration `mapstructure:"writeTimeout"`
	IdleTimeout       Duration `mapstructure:"idleTimeout"`
	MaxSessionsPerKey int      `mapstructure:"maxSessionsPerKey"`
	// MaxInFlightCalls caps the requests from clients that reach an
	// upstream or the sandbox (tools/call of direct tools, execute_code and
	// search_tools; prompts/get, resources/read, completion/complete) the
	// gateway handles at once; past it new ones are refused with a
	// retryable error instead of queueing (default 256).
	MaxInFlightCalls int `mapstructure:"maxInFlightCalls"`
}

// CodeMode configures execute_code and search_tools. Limits are the
// operator's: an agent cannot raise any of them. Zero values take the
// defaults.
type CodeMode struct {
	Enabled bool `mapstructure:"enabled"`
	// DirectTools lists the upstream tools next to execute_code and
	// search_tools (by default code mode replaces them in tools/list).
	DirectTools bool `mapstructure:"directTools"`
	// Timeout is the wall-clock limit of one execution, tool calls
	// included (a number of milliseconds or a duration; default 10s).
	Timeout                 Duration `mapstructure:"timeout"`
	MemoryLimitMB           int      `mapstructure:"memoryLimitMB"`
	MaxStackKB              int      `mapstructure:"maxStackKB"`
	MaxToolCalls            int      `mapstructure:"maxToolCalls"`
	MaxConcurrentToolCalls  int      `mapstructure:"maxConcurrentToolCalls"`
	MaxCodeBytes            int      `mapstructure:"maxCodeBytes"`
	MaxOutputBytes          int      `mapstructure:"maxOutputBytes"`
	MaxConcurrentExecutions int      `mapstructure:"maxConcurrentExecutions"`
	// DeclarationBudgetBytes bounds the TypeScript declarations embedded in
	// execute_code's description (default 8192); past it the description
	// points to search_tools.
	DeclarationBudgetBytes int `mapstructure:"declarationBudgetBytes"`
	// AllowFetch gives scripts a fetch limited by the rules below (default
	// off).
	AllowFetch            bool     `mapstructure:"allowFetch"`
	FetchAllowHosts       []string `mapstructure:"fetchAllowHosts"`
	FetchMaxResponseBytes int64    `mapstructure:"fetchMaxResponseBytes"`
	FetchMaxRequests      int      `mapstructure:"fetchMaxRequests"`
}

// Audit configures the audit log: JSON Lines, each line chained to the
// previous one by its SHA-256.
type Audit struct {
	// Path of the log; relative paths are inside dataDir (default
	// "audit.jsonl").
	Path string `mapstructure:"path"`
	// Fsync is "batch" (the default: synced every FsyncInterval) or
	// "always" (synced before the request it records is answered).
	Fsync string `mapstructure:"fsync"`
	// FsyncInterval is the batch interval (default 100ms).
	FsyncInterval Duration `mapstructure:"fsyncInterval"`
	// LogArguments records tool arguments themselves, not only their hash.
	LogArguments bool `mapstructure:"logArguments"`
	// Stdout also writes every event to standard output.
	Stdout bool `mapstructure:"stdout"`
	// MaxSizeMB rotates the file when it grows past this size (default 100).
	MaxSizeMB int `mapstructure:"maxSizeMB"`
	// MaxFiles is how many rotated files are kept (default 10).
	MaxFiles int `mapstructure:"maxFiles"`
	// RetainAtLeast is how long a rotated file is kept whatever MaxFiles
	// says, counted from its last line (default 7 days): a burst of events
	// cannot rotate recent evidence away. Files kept past MaxFiles raise
	// an audit.retention alert and show in /readyz and /metrics.
	RetainAtLeast Duration `mapstructure:"retainAtLeast"`
}

// Cluster switches stores to shared engines, so that several toolgate
// processes (replicas) serve as one gateway. Each part is independent:
// without redis.url the rate limits stay in memory; without
// postgres.url the API keys stay in the SQLite file of dataDir, the tool
// pins in dataDir and the audit log in its local file only.
type Cluster struct {
	// Node names this replica in the shared audit trail, where each
	// replica keeps a chain of its own: every replica needs a name of its
	// own that stays the same across restarts (1 to 64 letters, digits,
	// '.', '_' or '-'). Default: the host name.
	Node string `mapstructure:"node"`
	// Redis keeps the rate-limit buckets.
	Redis ClusterRedis `mapstructure:"redis"`
	// Postgres keeps the API keys and their usage, the tool pins and
	// approvals, and a copy of every replica's audit log.
	Postgres ClusterPostgres `mapstructure:"postgres"`
}

// ClusterRedis is the Redis server that keeps the rate-limit buckets.
type ClusterRedis struct {
	// URL is redis://[user:password@]host:port[/db] (rediss:// for TLS).
	// Give the password with ${VAR}.
	URL string `mapstructure:"url"`
	// FailOpen admits tool calls without charging them while Redis cannot
	// be reached. By default they are refused with the retryable
	// "overloaded" error (-32030, HTTP 503).
	FailOpen bool `mapstructure:"failOpen"`
	// Timeout bounds one rate-limit decision, connecting included
	// (default 250ms); past it Redis counts as unreachable for the call.
	Timeout Duration `mapstructure:"timeout"`
}

// ClusterPostgres is the PostgreSQL database shared by the replicas.
type ClusterPostgres struct {
	// URL is postgres://user:password@host:port/database[?sslmode=...].
	// Give the password with ${VAR}. The tables are created (and
	// migrated) at start.
	URL string `mapstructure:"url"`
}

// Alerts are rules that post to a webhook when audit events of one type
// reach a threshold within a window.
type Alerts struct {
	Webhook string      `mapstructure:"webhook"`
	Rules   []AlertRule `mapstructure:"rules"`
}

// EventTypes are the audit event types, which alert rules may name.
var EventTypes = []string{
	"auth.failure", "tool.call", "tool.denied", "ratelimit.hit", "ip.denied",
	"code.execution", "code.fetch", "upstream.error", "upstream.restart",
	"config.reload", "key.created", "key.rotated", "key.revoked", "tools.changed",
	"audit.retention", "origin.denied", "store.unavailable",
}

// AlertRule fires when Threshold events of type Event happen within Window.
type AlertRule struct {
	Event     string   `mapstructure:"event"`
	Threshold int      `mapstructure:"threshold"`
	Window    Duration `mapstructure:"window"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Listen, when set, serves /metrics on a listener of its own instead of
	// the main one.
	Listen string `mapstructure:"listen"`
}

// APIKey is a key listed in the configuration by the SHA-256 (hex) of the
// whole key, for deployments without a key database.
type APIKey struct {
	Name   string `mapstructure:"name"`
	SHA256 string `mapstructure:"sha256"`
}

// RateLimit is a project's token buckets, counted on every tool call.
// Zero means unlimited.
type RateLimit struct {
	RequestsPerMinute       float64 `mapstructure:"requestsPerMinute"`
	Burst                   int     `mapstructure:"burst"`
	PerKeyRequestsPerMinute float64 `mapstructure:"perKeyRequestsPerMinute"`
	PerKeyBurst             int     `mapstructure:"perKeyBurst"`
}

// ToolLimit is the token bucket of one tool in a project.
type ToolLimit struct {
	RequestsPerMinute float64 `mapstructure:"requestsPerMinute"`
	Burst             int     `mapstructure:"burst"`
}

// Project is one tenant of the gateway: its own upstream servers and
// filters, served at /v1/mcp/{name}.
type Project struct {
	// Name is the key under `projects` (set by Load).
	Name string `mapstructure:"-"`
	// AllowedTools, when set, switches the whole project to default deny:
	// only the listed namespaced tool names (`server__tool`) are visible.
	AllowedTools []string `mapstructure:"allowedTools"`
	// MCPServers are the upstream MCP servers of this project, by name.
	MCPServers map[string]*Server `mapstructure:"mcpServers"`
	// APIKeys are keys of this project listed by hash.
	APIKeys []APIKey `mapstructure:"apiKeys"`
	// RateLimit and ToolLimits are this project's budgets.
	RateLimit  RateLimit            `mapstructure:"rateLimit"`
	ToolLimits map[string]ToolLimit `mapstructure:"toolLimits"`
	// AllowedIPs and DeniedIPs apply to this project's endpoint, after the
	// gateway's own.
	AllowedIPs []string `mapstructure:"allowedIPs"`
	DeniedIPs  []string `mapstructure:"deniedIPs"`
	// AllowedHosts and AllowedOrigins add to the gateway's lists for this
	// project's endpoint.
	AllowedHosts   []string `mapstructure:"allowedHosts"`
	AllowedOrigins []string `mapstructure:"allowedOrigins"`
	// Auth says which credentials the project accepts: API keys, OAuth
	// access tokens, or both. In a file without `projects` it is written
	// in the top-level auth block.
	Auth ProjectAuth `mapstructure:"auth"`
}

// Transport kinds of an upstream server.
const (
	TransportStdio = "stdio"
	TransportHTTP  = "http" // streamable HTTP
	TransportSSE   = "sse"  // the 2024-11-05 HTTP+SSE transport
)

// Server is one upstream MCP server, in the `mcpServers` layout that
// desktop MCP clients use.
type Server struct {
	// Name is the key under `mcpServers` (set by Load).
	Name string `mapstructure:"-"`

	// Command, Args, Env and Cwd start a local server that speaks over stdio.
	Command string            `mapstructure:"command"`
	Args    []string          `mapstructure:"args"`
	Env     map[string]string `mapstructure:"env"`
	Cwd     string            `mapstructure:"cwd"`

	// URL and Headers reach a remote server.
	URL     string            `mapstructure:"url"`
	Headers map[string]string `mapstructure:"headers"`

	// Transport is "stdio", "http" (streamable HTTP) or "sse". `type` is
	// accepted as a synonym, as desktop clients write it ("streamable-http"
	// means "http"). When empty, Load derives it: stdio for a command, sse
	// for a URL whose path ends in /sse, otherwise "" which means streamable
	// HTTP with a fallback to SSE when the server does not speak it.
	// After Load, Transport holds the canonical value and Type is empty.
	Transport string `mapstructure:"transport"`
	Type      string `mapstructure:"type"`

	// Prefix replaces the default "name__" namespace of this server's tools
	// and prompts; an empty string (set explicitly) means no prefix.
	Prefix *string `mapstructure:"prefix"`

	// Tool filters. Deny beats allow. AllowedTools (exact namespaced-less
	// upstream names) switches the server to default deny.
	AllowedTools     []string `mapstructure:"allowedTools"`
	AllowedToolsGlob []string `mapstructure:"allowedToolsGlob"`
	DenyToolsGlob    []string `mapstructure:"denyToolsGlob"`
	// Resource filters match resource URIs and URI templates.
	AllowedResourcesGlob []string `mapstructure:"allowedResourcesGlob"`
	DenyResourcesGlob    []string `mapstructure:"denyResourcesGlob"`
	// Prompt filters match upstream prompt names.
	AllowedPromptsGlob []string `mapstructure:"allowedPromptsGlob"`
	DenyPromptsGlob    []string `mapstructure:"denyPromptsGlob"`

	// AllowInsecure lets a url be plain http:// on a host that is not
	// loopback.
	AllowInsecure bool `mapstructure:"allowInsecure"`

	// Timeout is the deadline of one call to this server; zero means the
	// gateway's CallTimeout.
	Timeout Duration `mapstructure:"timeout"`
	// Disabled servers are validated but not started.
	Disabled bool `mapstructure:"disabled"`
}

// Duration is a time.Duration that decodes from a Go duration string
// ("1m30s") or from a number of milliseconds.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
