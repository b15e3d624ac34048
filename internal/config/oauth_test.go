package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseOAuth(t *testing.T) {
	c, err := parse([]byte(`{
		"auth": {"oauth": {
			"issuer": "https://id.example.com",
			"audience": "https://mcp.example.com/mcp",
			"requiredScopes": ["mcp"],
			"scopes": {"tools:read": ["*__read_*", "*__list_*"]},
			"groupsClaim": "realm_access.roles",
			"groups": {"admins": ["*"]},
		}},
	}`), FormatJSON, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	a := c.Projects[DefaultProject].Auth
	if c.Auth.OAuth != nil || c.Auth.Accept != nil {
		t.Errorf("top-level auth kept oauth %v, accept %v; want them moved into the default project", c.Auth.OAuth, c.Auth.Accept)
	}
	if !a.Accepts(CredentialAPIKey) || !a.Accepts(CredentialOAuth) {
		t.Errorf("with oauth and no accept list, the project accepts API keys %v, tokens %v; want both", a.Accepts(CredentialAPIKey), a.Accepts(CredentialOAuth))
	}
	o := a.OAuth
	if o == nil {
		t.Fatal("no oauth in the default project")
	}
	if o.Leeway.D() != DefaultOAuthLeeway || o.KeysMaxAge.D() != DefaultOAuthKeysMaxAge || o.KeysRefetchInterval.D() != DefaultOAuthKeysRefetchInterval {
		t.Errorf("defaults: leeway %s, keysMaxAge %s, keysRefetchInterval %s", o.Leeway.D(), o.KeysMaxAge.D(), o.KeysRefetchInterval.D())
	}
	if diff := cmp.Diff(DefaultOAuthAlgorithms, o.Algorithms); diff != "" {
		t.Errorf("algorithms (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string][]string{"tools:read": {"*__read_*", "*__list_*"}}, o.Scopes); diff != "" {
		t.Errorf("scopes (-want +got):\n%s", diff)
	}

	// Without oauth, a project accepts API keys only.
	c, err = parse([]byte(`{"projects": {"a": {}, "b": {"auth": {"accept": ["oauth"], "oauth": {"issuer": "https://id.example.com", "audience": "b", "leeway": "5s"}}}}}`), FormatJSON, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b"} {
		a := c.Projects[name].Auth
		if a.Accepts(CredentialAPIKey) != (name == "a") || a.Accepts(CredentialOAuth) != (name == "b") {
			t.Errorf("project %s accepts API keys %v, tokens %v", name, a.Accepts(CredentialAPIKey), a.Accepts(CredentialOAuth))
		}
	}
	if got := c.Projects["b"].Auth.OAuth.Leeway.D(); got != 5*time.Second {
		t.Errorf("leeway = %s, want 5s", got)
	}
}

func TestParseOAuthProblems(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		want []string
	}{
		{
			name: "issuer and audience are required",
			doc:  `{"auth": {"oauth": {}}}`,
			want: []string{
				`auth.oauth.audience: required: the value a token's aud claim must hold for this project (its URL, or the API identifier the authorization server uses)`,
				`auth.oauth.issuer: required: the issuer identifier of the authorization server (an https URL)`,
			},
		},
		{
			name: "plain http issuer",
			doc: `{"projects": {
				"a": {"auth": {"oauth": {"issuer": "http://id.example.com", "audience": "a"}}},
				"b": {"auth": {"oauth": {"issuer": "http://127.0.0.1:9000", "audience": "b"}}},
				"c": {"auth": {"oauth": {"issuer": "http://127.0.0.1:9000", "audience": "c", "allowInsecureIssuer": true}}},
				"d": {"auth": {"oauth": {"issuer": "https://id.example.com/?x=1", "audience": "d"}}},
				"e": {"auth": {"oauth": {"issuer": "id.example.com", "audience": "e"}}},
			}}`,
			want: []string{
				`projects.a.auth.oauth.issuer: issuer "http://id.example.com" is plain http: tokens would be checked against keys anyone on the path can replace; use https`,
				`projects.b.auth.oauth.issuer: issuer "http://127.0.0.1:9000" is plain http: use https, or set allowInsecureIssuer: true for a provider on this machine`,
				`projects.d.auth.oauth.issuer: invalid issuer "https://id.example.com/?x=1": an issuer has no query or fragment`,
				`projects.e.auth.oauth.issuer: invalid issuer "id.example.com": want an absolute https URL`,
			},
		},
		{
			name: "algorithms: no none, no HMAC, nothing unknown",
			doc:  `{"auth": {"oauth": {"issuer": "https://id.example.com", "audience": "x", "algorithms": ["RS256", "none", "HS256", "RS1"]}}}`,
			want: []string{
				`auth.oauth.algorithms[1]: "none" is never accepted: tokens must carry an asymmetric signature (one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA)`,
				`auth.oauth.algorithms[2]: "HS256" is never accepted: tokens must carry an asymmetric signature (one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA)`,
				`auth.oauth.algorithms[3]: unknown algorithm "RS1" (one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA)`,
			},
		},
		{
			name: "grants and claims",
			doc: `{"auth": {"oauth": {"issuer": "https://id.example.com", "audience": "x",
				"requiredScopes": ["a b"],
				"scopes": {"tools:read": [], "bad\"scope": ["*"], "w": ["[unclosed"]},
				"groups": {"admins": ["*"]},
			}}}`,
			want: []string{
				`auth.oauth.groupsClaim: required with groups: the claim that holds a token's groups or roles (such as "groups")`,
				`auth.oauth.requiredScopes[0]: invalid scope "a b" (want printable characters without spaces, quotes or backslashes)`,
				`auth.oauth.scopes.w[0]: invalid glob "[unclosed": glob: syntax error at 9: unexpected end of input`,
				`auth.oauth.scopes["bad\"scope"]: invalid scope "bad\"scope" (want printable characters without spaces, quotes or backslashes)`,
				`auth.oauth.scopes["tools:read"]: grants no tool: list globs of tool names, such as ["*__read_*"]`,
			},
		},
		{
			name: "durations",
			doc:  `{"auth": {"oauth": {"issuer": "https://id.example.com", "audience": "x", "leeway": "10m", "keysRefetchInterval": "10ms", "keysMaxAge": "5ms"}}}`,
			want: []string{
				`auth.oauth.keysMaxAge: shorter than keysRefetchInterval (10ms)`,
				`auth.oauth.keysRefetchInterval: at least 1s (got 10ms): each unknown key id may cost the issuer a request`,
				`auth.oauth.leeway: at most 5m (got 10m0s)`,
			},
		},
		{
			name: "accept",
			doc:  `{"projects": {"a": {"auth": {"accept": []}}, "b": {"auth": {"accept": ["oauth", "password"]}}}}`,
			want: []string{
				`projects.a.auth.accept: accepts no credential: list "apiKey", "oauth" or both`,
				`projects.b.auth.accept[0]: "oauth" needs an oauth block (issuer, audience) beside it`,
				`projects.b.auth.accept[1]: unknown credential "password" (want "apiKey" or "oauth")`,
			},
		},
		{
			name: "top-level oauth with projects",
			doc:  `{"auth": {"oauth": {"issuer": "https://id.example.com", "audience": "x"}, "accept": ["apiKey"]}, "projects": {"a": {}}}`,
			want: []string{
				`auth.accept: not allowed together with projects (move it into the auth block of each project)`,
				`auth.oauth: not allowed together with projects (move it into the auth block of each project)`,
			},
		},
		{
			name: "oauth without authentication",
			doc:  `{"auth": {"required": false, "oauth": {"issuer": "https://id.example.com", "audience": "x"}}}`,
			want: []string{`auth.oauth: has no effect while auth.required is false: no credential is checked`},
		},
		{
			name: "required is the gateway's",
			doc:  `{"projects": {"a": {"auth": {"required": false}}}}`,
			want: []string{`projects.a.auth.required: unknown key`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parse([]byte(tc.doc), FormatJSON, env(nil))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if diff := cmp.Diff(tc.want, strings.Split(ce.Error(), "\n")); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}
