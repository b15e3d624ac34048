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
