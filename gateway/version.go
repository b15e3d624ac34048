package gateway

import "github.com/toolgate/toolgate/internal/buildinfo"

// Version is the toolgate version reported to MCP peers and in /healthz:
// the binary's, as `toolgate version` prints it.
var Version = buildinfo.Read().Version
