// Package oauthtest runs an OpenID provider for tests: zitadel's op
// package (an OpenID Connect provider library) served over TLS on
// loopback with a generated certificate. Its service clients get JWT
// access tokens through the client credentials grant, each with the
// audience, groups and lifetime the test gives it; its signing key can be
// rotated, and its key set fetches are counted.
//
// The tokens are the provider's own, signed and shaped by it, not made
// by the test; only the attacks on them (a changed signature, alg none, a
// key the provider never published) are made from them by the tests.
package oauthtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Client is a service client of the provider: it gets access tokens with
// its id and secret (the client credentials grant).
type Client struct {
	ID, Secret string
	// Subject is the sub of its tokens (default: ID).
	Subject string
	// Audience is the aud of its tokens.
	Audience []string
	// Groups go in the tokens' "groups" claim when set.
	Groups []string
	// Claims are other claims of its tokens, as some providers shape
	// them: roles under a nested claim, scopes in scp.
	Claims map[string]any
	// Lifetime of its tokens (default 5 minutes); a negative one makes
	// tokens that expired that long ago.
	Lifetime time.Duration
}

// Options configure a Provider. A nil *Options means defaults.
type Options struct {
	// Clients are the service clients.
	Clients []Client
	// Key signs the tokens; default a new 2048-bit RSA key. Two
	// providers given the same key sign alike under different issuers.
	Key *rsa.PrivateKey
}

// Provider is a running OpenID provider.
type Provider struct {
	// URL is the issuer: https://127.0.0.1:PORT.
	URL string
	srv *httptest.Server
	st  *store

	keyFetches atomic.Int64
}

// Start runs a provider until the test ends.
func Start(t testing.TB, opts *Options) *Provider {
	t.Helper()
	if opts == nil {
		opts = &Options{}
	}
	key := opts.Key
	if key == nil {
		key = NewKey(t)
	}
	p := &Provider{}
	var handler atomic.Pointer[http.Handler]
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/keys" {
			p.keyFetches.Add(1)
		}
		(*handler.Load()).ServeHTTP(w, r)
	}))
	p.srv.Config.ErrorLog = nil
	p.srv.StartTLS()
	t.Cleanup(p.srv.Close)
	p.URL = p.srv.URL

	users := storage.NewUserStore(p.URL)
	p.st = &store{Storage: storage.NewStorage(users), clients: map[string]*Client{}}
	p.st.keys = []*signingKey{{id: newID(), key: key}}
	for i := range opts.Clients {
		c := opts.Clients[i]
		if c.Subject == "" {
			c.Subject = c.ID
		}
		p.st.clients[c.ID] = &c
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	prov, err := op.NewProvider(&op.Config{CryptoKey: sha256.Sum256([]byte("oauthtest"))}, p.st, op.StaticIssuer(p.URL), op.WithLogger(quiet))
	if err != nil {
		t.Fatalf("oauthtest: starting the provider: %v", err)
	}
	var h http.Handler = prov
	handler.Store(&h)
	return p
}

// newID returns a random id.
func newID() string {
	return rand.Text()
}

// NewKey returns a new 2048-bit RSA key.
func NewKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// HTTPClient returns a client that trusts the provider's certificate.
func (p *Provider) HTTPClient() *http.Client { return p.srv.Client() }

// CertFile writes the provider's certificate (PEM) into a file of the
// test's and returns its path, for a process that must trust it
// (SSL_CERT_FILE).
func (p *Provider) CertFile(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "oauthtest-ca.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Close stops the provider (also done when the test ends).
func (p *Provider) Close() {
	p.srv.CloseClientConnections()
	p.srv.Close()
}

// KeyFetches is how many times the key set (jwks_uri) was fetched.
func (p *Provider) KeyFetches() int64 { return p.keyFetches.Load() }

// SigningKey returns the key that signs new tokens and its id.
func (p *Provider) SigningKey() (*rsa.PrivateKey, string) {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	return p.st.keys[0].key, p.st.keys[0].id
}

// Rotate makes a new key sign the tokens from now on and returns its id.
// The key set publishes the new key and, when keepOld, the previous ones.
func (p *Provider) Rotate(t testing.TB, keepOld bool) string {
	t.Helper()
	k := &signingKey{id: newID(), key: NewKey(t)}
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	if keepOld {
		p.st.keys = append([]*signingKey{k}, p.st.keys...)
	} else {
		p.st.keys = []*signingKey{k}
	}
	return k.id
}

// Token gets an access token for the client with the scopes, by the
// client credentials grant, and fails the test if the provider refuses.
func (p *Provider) Token(t testing.TB, clientID string, scopes ...string) string {
	t.Helper()
	tok, err := p.TokenErr(clientID, scopes...)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TokenErr is Token that returns the error.
func (p *Provider) TokenErr(clientID string, scopes ...string) (string, error) {
	p.st.mu.Lock()
	c := p.st.clients[clientID]
	p.st.mu.Unlock()
	if c == nil {
		return "", fmt.Errorf("oauthtest: no client %q", clientID)
	}
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {strings.Join(scopes, " ")}}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, p.URL+"/oauth/token", strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(c.ID), url.QueryEscape(c.Secret))
	resp, err := p.HTTPClient().Do(req)
	if err != nil {
		return "", fmt.Errorf("oauthtest: token request: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("oauthtest: token request: %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.AccessToken == "" {
		return "", fmt.Errorf("oauthtest: token response %s: %v", body, err)
	}
	return out.AccessToken, nil
}

// store is the example storage of zitadel's provider with the service
// clients, key rotation and token lifetimes of the tests.
type store struct {
	*storage.Storage
	mu      sync.Mutex
	keys    []*signingKey // [0] signs
	clients map[string]*Client
}

type signingKey struct {
	id  string
	key *rsa.PrivateKey
}

func (k *signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k *signingKey) Key() any                                    { return k.key }
func (k *signingKey) ID() string                                  { return k.id }

// publicKey is a key of the key set.
type publicKey struct{ *signingKey }

func (k publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return &k.key.PublicKey }

func (s *store) SigningKey(context.Context) (op.SigningKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[0], nil
}

func (s *store) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *store) KeySet(context.Context) ([]op.Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]op.Key, len(s.keys))
	for i, k := range s.keys {
		out[i] = publicKey{k}
	}
	return out, nil
}

func (s *store) ClientCredentials(_ context.Context, id, secret string) (op.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.clients[id]
	if c == nil || c.Secret != secret {
		return nil, fmt.Errorf("wrong client id or secret")
	}
	return &client{c}, nil
}

func (s *store) ClientCredentialsTokenRequest(_ context.Context, id string, scopes []string) (op.TokenRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.clients[id]
	if c == nil {
		return nil, fmt.Errorf("no client %q", id)
	}
	return &oidc.JWTTokenRequest{Subject: c.Subject, Audience: c.Audience, Scopes: scopes}, nil
}

func (s *store) CreateAccessToken(_ context.Context, req op.TokenRequest) (string, time.Time, error) {
	life := 5 * time.Minute
	s.mu.Lock()
	for _, c := range s.clients {
		if c.Subject == req.GetSubject() && c.Lifetime != 0 {
			life = c.Lifetime
		}
	}
	s.mu.Unlock()
	return newID(), time.Now().Add(life), nil
}

// GetPrivateClaimsFromScopes adds the claims zitadel's provider leaves to
// its storage: the granted scopes (RFC 9068's scope claim) and the
// client's groups and other claims.
func (s *store) GetPrivateClaimsFromScopes(_ context.Context, _, clientID string, scopes []string) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	claims := map[string]any{}
	if len(scopes) > 0 {
		claims["scope"] = strings.Join(scopes, " ")
	}
	if c := s.clients[clientID]; c != nil {
		if c.Groups != nil {
			claims["groups"] = c.Groups
		}
		maps.Copy(claims, c.Claims)
	}
	return claims, nil
}

// client is a service client as the provider sees it: JWT access tokens,
// the client credentials grant only.
type client struct{ c *Client }

var _ op.Client = (*client)(nil)

func (c *client) GetID() string                       { return c.c.ID }
func (c *client) RedirectURIs() []string              { return nil }
func (c *client) PostLogoutRedirectURIs() []string    { return nil }
func (c *client) ApplicationType() op.ApplicationType { return op.ApplicationTypeWeb }
func (c *client) AuthMethod() oidc.AuthMethod         { return oidc.AuthMethodBasic }
func (c *client) ResponseTypes() []oidc.ResponseType  { return nil }
func (c *client) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeClientCredentials}
}
func (c *client) LoginURL(string) string               { return "" }
func (c *client) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeJWT }
func (c *client) IDTokenLifetime() time.Duration       { return time.Hour }
func (c *client) DevMode() bool                        { return false }
func (c *client) IsScopeAllowed(string) bool           { return true }
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return false }
func (c *client) ClockSkew() time.Duration             { return 0 }
func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

// Sign signs payload as a compact JWS of type JWT with key under alg,
// naming kid: a token made by hand, for the cases a provider never
// issues (another key, another algorithm, a key id it does not publish).
func Sign(t testing.TB, alg jose.SignatureAlgorithm, key any, kid string, payload []byte) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}
