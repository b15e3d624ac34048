package cli

import (
	"context"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"

	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policy"
)

// --- OAuth access tokens ------------------------------------------------

// checkOAuth grades the OAuth settings of each project that accepts access
// tokens: the issuer is reached over HTTPS, tokens are checked for the
// project's audience, and no scope or group grants every tool. A
// configuration without OAuth gets no finding: the item is left out.
func checkOAuth(_ context.Context, in *checkInput) []checkFinding {
	var out []checkFinding
	for _, name := range slices.Sorted(maps.Keys(in.cfg.Projects)) {
		pa := in.cfg.Projects[name].Auth
		o := pa.OAuth
		if o == nil || !pa.Accepts(config.CredentialOAuth) {
			continue
		}
		node := in.project(name).Get("auth").Get("oauth")
		path := node.Path()
		if u, err := url.Parse(o.Issuer); err == nil && u.Scheme == "https" {
			out = append(out, findPass(node.Get("issuer").Path(), fmt.Sprintf("tokens are checked against the keys of %s, fetched over HTTPS", u.Host)))
		} else if err == nil {
			out = append(out, findWarn(node.Get("issuer").Path(),
				fmt.Sprintf("the issuer %s is plain http (allowInsecureIssuer): whoever can answer on its port on this machine can hand out keys, and so tokens", u.Host),
				"serve the authorization server over https and remove allowInsecureIssuer"))
		}
		if o.Audience != "" {
			out = append(out, findPass(node.Get("audience").Path(), fmt.Sprintf("tokens must be issued for %q: a token for another service or project is refused", o.Audience)))
		}
		var wide []string
		for _, g := range []struct {
			key   string
			grant map[string][]string
		}{{"scopes", o.Scopes}, {"groups", o.Groups}} {
			for _, n := range slices.Sorted(maps.Keys(g.grant)) {
				if i := slices.IndexFunc(g.grant[n], grantsEverything); i >= 0 {
					p := node.Get(g.key).Get(n).Path()
					wide = append(wide, p)
					out = append(out, findWarn(p, fmt.Sprintf("grants every tool (%q): a token that holds it sees and calls every tool the filters allow, including tools servers add later", g.grant[n][i]),
						`list the tools it needs instead (for example ["*__read_*", "*__list_*"])`))
				}
			}
		}
		switch {
		case len(o.Scopes) == 0 && len(o.Groups) == 0 && len(o.RequiredScopes) == 0:
			out = append(out, findWarn(path,
				"any token the issuer issues for this audience sees every tool: no scope is required and none is mapped to tools",
				`require a scope (requiredScopes) or map scopes or groups to the tools they grant ("scopes": {"tools:read": ["*__read_*"]})`))
		case len(o.Scopes) == 0 && len(o.Groups) == 0:
			out = append(out, findPass(path, fmt.Sprintf("tokens need the %s %s, and see every tool the filters allow", checkPlural(len(o.RequiredScopes), "scope", "scopes"), strings.Join(o.RequiredScopes, ", "))))
		case len(wide) == 0:
			out = append(out, findPass(path, "a token sees only the tools its scopes and groups grant"))
		}
	}
	return out
}

// grantsEverything reports whether a tool glob matches every tool name:
// "*", and the globs that say it another way ("*__*", "?*", "*_*"), which
// match every namespaced name. It tries the glob, as the gateway compiles
// it, on names unlike each other in server, tool and characters; one it
// misses means the glob picks tools.
func grantsEverything(glob string) bool {
	f, err := policy.NewFilter(policy.FilterSpec{AllowGlob: []string{glob}})
	if err != nil {
		return false
	}
	for _, name := range []string{"a__b", "github__create_issue", "fs__write_file", "db-2__Drop.Table"} {
		if !f.Allows(name) {
			return false
		}
	}
	return true
}
