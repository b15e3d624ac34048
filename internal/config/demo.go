package config

// Demo returns the configuration of the built-in demo: one project that
// fronts the demo upstream at url, listening on DefaultListen.
func Demo(url string) *Config {
	s := &Server{Name: "demo", URL: url, Transport: TransportHTTP}
	return &Config{
		Listen:         DefaultListen,
		CallTimeout:    Duration(DefaultCallTimeout),
		StartupTimeout: Duration(DefaultStartupTimeout),
		Projects: map[string]*Project{
			DefaultProject: {Name: DefaultProject, MCPServers: map[string]*Server{"demo": s}},
		},
	}
}
