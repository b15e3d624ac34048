// Package e2e holds toolgate's end-to-end tests: a real `toolgate serve`
// process, real upstream MCP servers (the pinned npm packages in e2e/npm and
// the Go test upstream) and real MCP clients over loopback.
package e2e
