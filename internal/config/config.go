// Package config owns toolgate's configuration file: its types, loading
// (JSON with comments and trailing commas, YAML or TOML, read through
// viper's codecs), `${VAR}` interpolation from the environment, strict
// decoding and validation. It knows nothing about MCP transports or the
// gateway; other packages receive the decoded values.
package config

import "time"

// DefaultProject is the name of the project a file without `projects`
// describes. It is served at both /mcp and /v1/mcp/default.
const DefaultProject = "default"

// Defaults applied by Load where the file is silent.
const (
	DefaultListen         = "127.0.0.1:8080"
	DefaultCallTimeout    = 60 * time.Second
	DefaultStartupTimeout = 30 * time.Second
)

// Config is a whole configuration file after loading: interpolated,
// defaulted and validated. A file without `projects` is normalised into
// one project named DefaultProject.
type Config struct {
	// Path is the file this configuration was read from ("" for the demo).
	Path string `mapstructure:"-"`

	// Listen is the address of the HTTP listener (host:port).
	Listen string `mapstructure:"listen"`
	// CallTimeout is the default deadline of one upstream call
	// (a Go duration string such as "60s", or a number of milliseconds).
	CallTimeout Duration `mapstructure:"callTimeout"`
	// StartupTimeout bounds how long serve waits for upstreams to connect
	// before it starts answering (slow upstreams keep connecting after).
	StartupTimeout Duration `mapstructure:"startupTimeout"`

	// Projects by name. After Load it always holds at least one project.
	Projects map[string]*Project `mapstructure:"projects"`

	// The top-level forms of the project keys, for a file without
	// `projects`. Load moves them into Projects[DefaultProject].
	AllowedTools []string           `mapstructure:"allowedTools"`
	MCPServers   map[string]*Server `mapstructure:"mcpServers"`
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
