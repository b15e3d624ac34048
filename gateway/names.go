package gateway

import (
	"fmt"
	"regexp"

	"github.com/toolgate/toolgate/internal/config"
)

// NamespaceSeparator joins a server's name and a tool or prompt name in the
// default namespace: "github" + "create_issue" -> "github__create_issue".
const NamespaceSeparator = "__"

// validName is the MCP rule for tool names: 1-128 characters of
// [A-Za-z0-9_.-].
var validName = regexp.MustCompile(`^[A-Za-z0-9_.\-]{1,128}$`)

// prefixFor returns the namespace prefix of a server's tools and prompts.
func prefixFor(s *config.Server) string {
	if s.Prefix != nil {
		return *s.Prefix
	}
	return s.Name + NamespaceSeparator
}

// checkName reports why a namespaced name breaks the MCP name rules, or nil.
func checkName(name string) error {
	if !validName.MatchString(name) {
		return fmt.Errorf("name %q breaks the MCP name rules (1-128 characters of A-Z a-z 0-9 _ . -)", name)
	}
	return nil
}
