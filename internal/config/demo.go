package config

// Demo returns the configuration of the built-in demo: one project that
// fronts the demo upstream at url, listening on DefaultListen, with one
// key given by the SHA-256 of its text, and code mode on (next to the
// demo's tools).
func Demo(url, keySHA256 string) *Config {
	s := &Server{Name: "demo", URL: url, Transport: TransportHTTP}
	c := &Config{
		Projects: map[string]*Project{
			DefaultProject: {
				Name:       DefaultProject,
				MCPServers: map[string]*Server{"demo": s},
				APIKeys:    []APIKey{{Name: "demo", SHA256: keySHA256}},
			},
		},
	}
	applyDefaults(c)
	c.CodeMode.Enabled, c.CodeMode.DirectTools = true, true
	return c
}

// LoadDemo is [Demo] with the TOOLGATE_ environment variables applied
// and checked as [Load] applies them to a file (so that, for example,
// TOOLGATE_LISTEN moves the demo's listener). The error is an [*Error]
// whose problems name the variables.
func LoadDemo(url, keySHA256 string) (*Config, error) {
	raw := map[string]any{
		"mcpServers": map[string]any{"demo": map[string]any{"url": url, "transport": TransportHTTP}},
		"apiKeys":    []any{map[string]any{"name": "demo", "sha256": keySHA256}},
		"codeMode":   map[string]any{"enabled": true, "directTools": true},
	}
	return orError(parseTree(raw, noVars, processEnv(), nil))
}

// noVars is an environment without variables: the demo's own values
// hold no references.
func noVars(string) (string, bool) { return "", false }
