// Command toolgate is an MCP gateway: one endpoint over many upstream MCP
// servers, filtered and guarded. See README.md and docs/.
package main

import (
	"os"

	"github.com/toolgate/toolgate/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
