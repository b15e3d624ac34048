package gateway

// Version is the toolgate version reported to MCP peers and in /healthz.
var Version = "0.1.0-dev"
