package oauth_test

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/toolgate/toolgate/internal/oauth"
	"github.com/toolgate/toolgate/internal/oauthtest"
)

const audience = "https://mcp.example.com/v1/mcp/team"

// clients of the provider in these tests.
var clients = []oauthtest.Client{
	{ID: "alice", Secret: "s1", Audience: []string{audience}, Groups: []string{"admins", "ops"}},
	{ID: "other-api", Secret: "s2", Audience: []string{"https://other.example.com/api"}},
	{ID: "stale", Secret: "s3", Audience: []string{audience}, Lifetime: -time.Hour},
	{ID: "just-expired", Secret: "s4", Audience: []string{audience}, Lifetime: -10 * time.Second},
	{ID: "slash", Secret: "s5", Audience: []string{audience + "/"}},
}

// clock is a test clock: the real time, shifted.
type clock struct {
	mu    sync.Mutex
	shift time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.shift)
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.shift += d
	c.mu.Unlock()
}

func newVerifier(t *testing.T, p *oauthtest.Provider, opts *oauth.Options) *oauth.Verifier {
	t.Helper()
	if opts == nil {
		opts = &oauth.Options{}
	}
	if opts.Client == nil {
		opts.Client = p.HTTPClient()
	}
	if opts.GroupsClaim == "" {
		opts.GroupsClaim = "groups"
	}
	v, err := oauth.NewVerifier(p.URL, audience, opts)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// segments splits a compact JWS into its decoded header and payload.
func segments(t *testing.T, tok string) (header map[string]any, payload []byte, sig string) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q is not a compact JWS", tok)
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(hb, &header); err != nil {
		t.Fatal(err)
	}
	payload, err = base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	return header, payload, parts[2]
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func reasonOf(err error) string {
	var e *oauth.Error
	if errors.As(err, &e) {
		return e.Reason
	}
	if err != nil {
		return "error: " + err.Error()
	}
	return ""
}

// TestVerify checks tokens the provider issued, and tokens made from them
// by an attacker, against the provider's keys.
func TestVerify(t *testing.T) {
	p := oauthtest.Start(t, &oauthtest.Options{Clients: clients})
	good := p.Token(t, "alice", "tools:read", "mcp")
	_, kid := p.SigningKey()
	header, payload, sig := segments(t, good)

	// The same key, another issuer: only the iss claim tells the tokens
	// apart.
	key, _ := p.SigningKey()
	other := oauthtest.Start(t, &oauthtest.Options{Clients: clients, Key: key})
	foreign := other.Token(t, "alice", "mcp")

	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})

	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	claims["sub"] = "mallory"
	forged, _ := json.Marshal(claims)

	noneHeader, _ := json.Marshal(map[string]any{"alg": "none", "typ": "JWT", "kid": header["kid"]})
	// One character of the signature replaced by another of the base64url
	// alphabet: still a well-formed JWS, with a signature that does not
	// verify.
	flipped := []byte(sig)
	flipped[10] = 'A'
	if sig[10] == 'A' {
		flipped[10] = 'B'
	}

	for _, tc := range []struct {
		name, token, reason string
	}{
		{"valid", good, ""},
		{"slash in the audience", p.Token(t, "slash"), ""},
		{"expired within the leeway", p.Token(t, "just-expired"), ""},
		{"expired", p.Token(t, "stale"), oauth.ReasonExpired},
		{"another audience", p.Token(t, "other-api"), oauth.ReasonAudience},
		{"another issuer", foreign, oauth.ReasonIssuer},
		{"alg none", b64(noneHeader) + "." + b64(payload) + ".", oauth.ReasonAlgorithm},
		{"HS256 keyed with the public key", oauthtest.Sign(t, jose.HS256, pubPEM, kid, payload), oauth.ReasonAlgorithm},
		{"signature changed", strings.Join([]string{strings.Split(good, ".")[0], b64(payload), string(flipped)}, "."), oauth.ReasonSignature},
		{"claims changed", strings.Join([]string{strings.Split(good, ".")[0], b64(forged), sig}, "."), oauth.ReasonSignature},
		{"unknown key id", oauthtest.Sign(t, jose.RS256, oauthtest.NewKey(t), "rogue", payload), oauth.ReasonUnknownKey},
		{"another key under the provider's key id", oauthtest.Sign(t, jose.RS256, oauthtest.NewKey(t), kid, payload), oauth.ReasonSignature},
		{"not a JWT", "tg_notatoken", oauth.ReasonMalformed},
		{"empty", "", oauth.ReasonMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newVerifier(t, p, nil)
			tok, err := v.Verify(context.Background(), tc.token)
			if got := reasonOf(err); got != tc.reason {
				t.Fatalf("Verify: reason %q (%v), want %q", got, err, tc.reason)
			}
			if tc.reason != "" {
				return
			}
			if tok.Subject == "" || tok.Expiry.IsZero() {
				t.Errorf("token = %+v: no subject or expiry", tok)
			}
		})
	}

	v := newVerifier(t, p, nil)
	tok, err := v.Verify(context.Background(), good)
	if err != nil {
		t.Fatal(err)
	}
	want := &oauth.Token{Subject: "alice", ClientID: "alice", Scopes: []string{"tools:read", "mcp"}, Groups: []string{"admins", "ops"}}
	if diff := cmp.Diff(want, tok, cmpIgnoreExpiry); diff != "" {
		t.Errorf("token (-want +got):\n%s", diff)
	}

	// A token whose signature verifies but whose claims are refused
	// names its subject, for the audit log; an unverified one does not.
	_, err = v.Verify(context.Background(), p.Token(t, "stale"))
	var e *oauth.Error
	if !errors.As(err, &e) || e.Subject != "stale" {
		t.Errorf("expired token: error %#v, want the subject %q", err, "stale")
	}
	_, err = v.Verify(context.Background(), strings.Join([]string{strings.Split(good, ".")[0], b64(forged), sig}, "."))
	if !errors.As(err, &e) || e.Subject != "" {
		t.Errorf("forged token: error %#v names subject %q", err, e.Subject)
	}
}

var cmpIgnoreExpiry = cmp.Transformer("noExpiry", func(t *oauth.Token) oauth.Token {
	c := *t
	c.Expiry = time.Time{}
	return c
})

// TestClaimShapes reads scopes and groups as providers write them: the
// scope string, scp as a list or a string, and roles under a nested
// claim (Keycloak's realm_access.roles).
func TestClaimShapes(t *testing.T) {
	p := oauthtest.Start(t, &oauthtest.Options{Clients: []oauthtest.Client{
		{ID: "keycloak", Secret: "k", Audience: []string{audience}, Claims: map[string]any{"realm_access": map[string]any{"roles": []string{"admins", "ops"}}}},
		{ID: "one-role", Secret: "o", Audience: []string{audience}, Claims: map[string]any{"realm_access": map[string]any{"roles": "admins"}}},
		{ID: "entra", Secret: "e", Audience: []string{audience}, Claims: map[string]any{"scp": []string{"tools:read", "mcp"}}},
		{ID: "scp-string", Secret: "s", Audience: []string{audience}, Claims: map[string]any{"scp": "tools:read mcp"}},
		{ID: "not-a-list", Secret: "n", Audience: []string{audience}, Claims: map[string]any{"realm_access": map[string]any{"roles": map[string]any{"admins": true}}, "scp": 7}},
		{ID: "flat", Secret: "f", Audience: []string{audience}, Claims: map[string]any{"realm_access": []string{"admins"}}},
	}})
	v := newVerifier(t, p, &oauth.Options{GroupsClaim: "realm_access.roles"})
	for _, tc := range []struct {
		client string
		scopes []string // requested: they go in the scope claim
		want   *oauth.Token
	}{
		{"keycloak", nil, &oauth.Token{Groups: []string{"admins", "ops"}}},
		{"one-role", nil, &oauth.Token{Groups: []string{"admins"}}},
		{"entra", nil, &oauth.Token{Scopes: []string{"tools:read", "mcp"}}},
		{"scp-string", nil, &oauth.Token{Scopes: []string{"tools:read", "mcp"}}},
		{"entra", []string{"mcp"}, &oauth.Token{Scopes: []string{"mcp"}}}, // scope wins over scp
		{"not-a-list", nil, &oauth.Token{}},
		{"flat", nil, &oauth.Token{}},
	} {
		t.Run(tc.client+strings.Join(tc.scopes, "+"), func(t *testing.T) {
			tok, err := v.Verify(context.Background(), p.Token(t, tc.client, tc.scopes...))
			if err != nil {
				t.Fatal(err)
			}
			tc.want.Subject, tc.want.ClientID = tc.client, tc.client
			if diff := cmp.Diff(tc.want, tok, cmpIgnoreExpiry, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("token (-want +got):\n%s", diff)
			}
		})
	}
}

// TestNotYetValid: a token from a clock ahead of the verifier's, beyond
// the leeway, is refused; within it, accepted.
func TestNotYetValid(t *testing.T) {
	p := oauthtest.Start(t, &oauthtest.Options{Clients: clients})
	tok := p.Token(t, "alice")
	c := &clock{}
	c.Advance(-10 * time.Second)
	v := newVerifier(t, p, &oauth.Options{Now: c.Now})
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("token 10s ahead, 30s leeway: %v", err)
	}
	c.Advance(-time.Minute)
	if _, err := v.Verify(context.Background(), tok); reasonOf(err) != oauth.ReasonNotYetValid {
		t.Fatalf("token 70s ahead, 30s leeway: %v, want %s", err, oauth.ReasonNotYetValid)
	}
}

// TestKeyRotation: a key the provider starts signing with is picked up at
// the first token that names it; a key it withdraws stops working once
// the keys are fetched again.
func TestKeyRotation(t *testing.T) {
	p := oauthtest.Start(t, &oauthtest.Options{Clients: clients})
	c := &clock{}
	v := newVerifier(t, p, &oauth.Options{Now: c.Now, KeysRefetchInterval: 10 * time.Second, KeysMaxAge: time.Hour})
	old := p.Token(t, "alice")
	if _, err := v.Verify(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	if n := p.KeyFetches(); n != 1 {
		t.Fatalf("key fetches = %d, want 1", n)
	}

	p.Rotate(t, true)
	rotated := p.Token(t, "alice")
	c.Advance(11 * time.Second) // past the refetch interval
	if _, err := v.Verify(context.Background(), rotated); err != nil {
		t.Fatalf("token signed with the new key: %v", err)
	}
	if n := p.KeyFetches(); n != 2 {
		t.Errorf("key fetches = %d, want 2 (one for the new key id)", n)
	}
	if _, err := v.Verify(context.Background(), old); err != nil {
		t.Errorf("token of the old key, still published: %v", err)
	}

	// The provider withdraws the old key: it works until the keys are
	// fetched again, after KeysMaxAge.
	p.Rotate(t, false)
	if _, err := v.Verify(context.Background(), old); err != nil {
		t.Errorf("old key before the keys are fetched again: %v", err)
	}
	c.Advance(time.Hour)
	if _, err := v.Verify(context.Background(), old); reasonOf(err) != oauth.ReasonUnknownKey {
		t.Errorf("old key after KeysMaxAge: %v, want %s", err, oauth.ReasonUnknownKey)
	}
}

// TestUnknownKeyRefetchLimited: tokens naming key ids the provider never
// published make the verifier fetch the keys at most once per
// KeysRefetchInterval.
func TestUnknownKeyRefetchLimited(t *testing.T) {
	p := oauthtest.Start(t, &oauthtest.Options{Clients: clients})
	c := &clock{}
	v := newVerifier(t, p, &oauth.Options{Now: c.Now, KeysRefetchInterval: 10 * time.Second})
	_, payload, _ := segments(t, p.Token(t, "alice"))
	rogue := oauthtest.NewKey(t)
	try := func(n int) {
		t.Helper()
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				tok := oauthtest.Sign(t, jose.RS256, rogue, "rogue-"+string(rune('a'+i%26)), payload)
				if _, err := v.Verify(context.Background(), tok); reasonOf(err) != oauth.ReasonUnknownKey {
					t.Errorf("rogue key: %v, want %s", err, oauth.ReasonUnknownKey)
				}
			})
		}
		wg.Wait()
	}
	try(50)
	if n := p.KeyFetches(); n != 1 {
		t.Errorf("after 50 unknown key ids at once: %d key fetches, want 1 (the first fetch)", n)
	}
	c.Advance(5 * time.Second)
	try(20)
	if n := p.KeyFetches(); n != 1 {
		t.Errorf("within the refetch interval: %d key fetches, want 1", n)
	}
	c.Advance(6 * time.Second)
	try(20)
	if n := p.KeyFetches(); n != 2 {
		t.Errorf("past the refetch interval: %d key fetches, want 2", n)
	}
}

// TestIssuerUnavailable: with no keys ever fetched, a token cannot be
// checked (ErrUnavailable, not a refusal); keys fetched before stay in use
// while the issuer is down.
func TestIssuerUnavailable(t *testing.T) {
	p := oauthtest.Start(t, &oauthtest.Options{Clients: clients})
	tok := p.Token(t, "alice")

	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	v, err := oauth.NewVerifier(down.URL, audience, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The token names p as its issuer: it is refused before anything is
	// fetched. One naming the down issuer cannot be checked.
	if _, err := v.Verify(context.Background(), tok); reasonOf(err) != oauth.ReasonIssuer {
		t.Errorf("token of another issuer: %v", err)
	}
	if err := v.Refresh(context.Background()); !errors.Is(err, oauth.ErrUnavailable) {
		t.Errorf("Refresh of a down issuer: %v, want ErrUnavailable", err)
	}
	if p := v.Problem(); !strings.Contains(p, "its tokens cannot be checked") {
		t.Errorf("Problem() = %q", p)
	}

	c := &clock{}
	fetches := 0
	v = newVerifier(t, p, &oauth.Options{Now: c.Now, KeysMaxAge: time.Minute, OnFetch: func(error) { fetches++ }})
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	p.Close()
	c.Advance(2 * time.Minute)
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Errorf("issuer down, keys fetched before: %v", err)
	}
	if fetches != 2 {
		t.Errorf("fetches = %d, want 2 (the first, and the failed one after KeysMaxAge)", fetches)
	}
	if p := v.Problem(); !strings.Contains(p, "stay in use") {
		t.Errorf("Problem() = %q", p)
	}
	// The failed fetch is not retried at every token.
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Errorf("issuer down, keys fetched before: %v", err)
	}
	if fetches != 2 {
		t.Errorf("fetches = %d, want 2: a failed fetch waits KeysRefetchInterval", fetches)
	}
}

// TestRFC8414Discovery: an authorization server that publishes only RFC
// 8414 metadata is found too.
func TestRFC8414Discovery(t *testing.T) {
	p := oauthtest.Start(t, &oauthtest.Options{Clients: clients})
	var meta []byte
	as := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/oauth-authorization-server" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(meta)
	}))
	defer as.Close()
	// The provider's own metadata, served as RFC 8414's by another host:
	// its issuer is the provider's, so it is refused for this issuer.
	resp, err := p.HTTPClient().Get(p.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	doc["issuer"] = as.URL
	doc["jwks_uri"] = p.URL + "/keys"
	meta, _ = json.Marshal(doc)

	// httptest's servers share one certificate: as.Client trusts p too.
	v, err := oauth.NewVerifier(as.URL, audience, &oauth.Options{Client: as.Client()})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Refresh(context.Background()); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
}
