package config

import (
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"
)

// validateAuth checks each project's credentials: the accept list and the
// OAuth settings.
func (l *loader) validateAuth(c *Config) {
	for _, pp := range l.projects {
		p, proj := child(pp.path, "auth"), pp.v
		a := proj.Auth
		ap := child(p, "accept")
		if a.Accept != nil && len(a.Accept) == 0 && !l.bad[ap] {
			l.addf(ap, `accepts no credential: list "apiKey", "oauth" or both`)
		}
		for i, k := range a.Accept {
			switch k {
			case CredentialAPIKey:
			case CredentialOAuth:
				if a.OAuth == nil && !l.bad[child(p, "oauth")] {
					l.addf(index(ap, i), `"oauth" needs an oauth block (issuer, audience) beside it`)
				}
			default:
				l.addf(index(ap, i), "unknown credential %q (want %q or %q)", truncate(k), CredentialAPIKey, CredentialOAuth)
			}
		}
		if a.OAuth == nil {
			continue
		}
		op := child(p, "oauth")
		if !c.AuthRequired() {
			l.addf(op, "has no effect while auth.required is false: no credential is checked")
		}
		l.validateOAuth(op, a.OAuth)
	}
}

// oauthForbiddenAlgorithms are the JWS algorithms a token may never be
// signed with: none (unsigned) and HMAC, whose key would be a secret the
// gateway shares with the issuer (and which a token forger can fake with
// the issuer's public key when a verifier mixes them up).
var oauthForbiddenAlgorithms = []string{"none", "HS256", "HS384", "HS512"}

func (l *loader) validateOAuth(p string, o *OAuth) {
	ip := child(p, "issuer")
	switch u, err := url.Parse(o.Issuer); {
	case o.Issuer == "":
		if !l.bad[ip] {
			l.addf(ip, "required: the issuer identifier of the authorization server (an https URL)")
		}
	case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
		l.addf(ip, "invalid issuer %q: want an absolute https URL", truncate(o.Issuer))
	case u.RawQuery != "" || u.Fragment != "":
		l.addf(ip, "invalid issuer %q: an issuer has no query or fragment", truncate(o.Issuer))
	case u.Scheme == "http" && !IsLoopbackHost(u.Hostname()):
		l.addf(ip, "issuer %q is plain http: tokens would be checked against keys anyone on the path can replace; use https", truncate(o.Issuer))
	case u.Scheme == "http" && !o.AllowInsecureIssuer:
		l.addf(ip, "issuer %q is plain http: use https, or set allowInsecureIssuer: true for a provider on this machine", truncate(o.Issuer))
	}
	if strings.TrimSpace(o.Audience) == "" && !l.bad[child(p, "audience")] {
		l.addf(child(p, "audience"), "required: the value a token's aud claim must hold for this project (its URL, or the API identifier the authorization server uses)")
	}
	if o.Resource != "" {
		if u, err := parseHTTPURL(o.Resource); err != nil {
			l.addf(child(p, "resource"), "invalid url %q: %v", truncate(o.Resource), err)
		} else if u.Fragment != "" {
			l.addf(child(p, "resource"), "invalid url %q: a resource identifier has no fragment", truncate(o.Resource))
		}
	}
	for i, s := range o.RequiredScopes {
		if !validScope(s) {
			l.addf(index(child(p, "requiredScopes"), i), "invalid scope %q (want printable characters without spaces, quotes or backslashes)", truncate(s))
		}
	}
	for _, g := range []struct {
		key   string
		grant map[string][]string
	}{{"scopes", o.Scopes}, {"groups", o.Groups}} {
		gp := child(p, g.key)
		for _, name := range slices.Sorted(maps.Keys(g.grant)) {
			np := child(gp, name)
			if g.key == "scopes" && !validScope(name) {
				l.addf(np, "invalid scope %q (want printable characters without spaces, quotes or backslashes)", truncate(name))
			}
			if strings.TrimSpace(name) == "" {
				l.addf(np, "empty name")
			}
			if len(g.grant[name]) == 0 && !l.bad[np] {
				l.addf(np, "grants no tool: list globs of tool names, such as [\"*__read_*\"]")
			}
			for i, pat := range g.grant[name] {
				if err := checkGlob(pat); err != nil {
					l.addf(index(np, i), "%v", err)
				}
			}
		}
	}
	if len(o.Groups) > 0 && o.GroupsClaim == "" {
		l.addf(child(p, "groupsClaim"), "required with groups: the claim that holds a token's groups or roles (such as \"groups\")")
	}
	if o.GroupsClaim != "" && (strings.HasPrefix(o.GroupsClaim, ".") || strings.HasSuffix(o.GroupsClaim, ".") || strings.Contains(o.GroupsClaim, "..")) {
		l.addf(child(p, "groupsClaim"), "invalid claim path %q (want a name, or names joined by dots)", truncate(o.GroupsClaim))
	}
	for i, alg := range o.Algorithms {
		ap := index(child(p, "algorithms"), i)
		switch {
		case slices.ContainsFunc(oauthForbiddenAlgorithms, func(f string) bool { return strings.EqualFold(f, alg) }):
			l.addf(ap, "%q is never accepted: tokens must carry an asymmetric signature (one of %s)", truncate(alg), strings.Join(DefaultOAuthAlgorithms, ", "))
		case !slices.Contains(DefaultOAuthAlgorithms, alg):
			l.addf(ap, "unknown algorithm %q (one of %s)", truncate(alg), strings.Join(DefaultOAuthAlgorithms, ", "))
		}
	}
	l.checkTimeout(child(p, "leeway"), o.Leeway)
	if o.Leeway > Duration(5*time.Minute) {
		l.addf(child(p, "leeway"), "at most 5m (got %s)", o.Leeway.D())
	}
	l.checkTimeout(child(p, "keysMaxAge"), o.KeysMaxAge)
	l.checkTimeout(child(p, "keysRefetchInterval"), o.KeysRefetchInterval)
	if o.KeysRefetchInterval > 0 && o.KeysRefetchInterval < Duration(time.Second) {
		l.addf(child(p, "keysRefetchInterval"), "at least 1s (got %s): each unknown key id may cost the issuer a request", o.KeysRefetchInterval.D())
	}
	if o.KeysMaxAge > 0 && o.KeysMaxAge < o.KeysRefetchInterval {
		l.addf(child(p, "keysMaxAge"), "shorter than keysRefetchInterval (%s)", o.KeysRefetchInterval.D())
	}
}

// validScope reports whether s can be a scope token (RFC 6749 3.3) that
// a WWW-Authenticate header quotes as it is.
func validScope(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
