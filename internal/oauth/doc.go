// Package oauth verifies OAuth 2.1 access tokens for a resource server:
// JWTs (RFC 9068) signed by one authorization server, whose discovery
// document (OpenID Connect discovery, or RFC 8414 authorization server
// metadata) and keys (JWKS) it fetches, caches and refreshes. A token is
// good when its signature verifies with one of the issuer's keys under an
// accepted algorithm (never none, never HMAC), and its iss, aud, exp, nbf
// and iat claims hold, with a small leeway for clocks; the verifier then
// returns its subject, scopes and groups.
//
// The JWS and JWT parsing is go-jose's; this package decides which keys
// and algorithms to trust and keeps the keys fresh: a key set is used for
// at most KeysMaxAge, a token signed with a key id not in the set makes
// the verifier fetch the set again (at most once per
// KeysRefetchInterval), and keys that cannot be fetched again are kept
// while they are all there is.
//
// It knows nothing about MCP, the gateway or how a refusal is answered:
// it says whether a token is good and, when it is not, why, in words a
// client may read.
package oauth
