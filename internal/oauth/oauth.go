package oauth

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/toolgate/toolgate/internal/clip"
)

// Reasons a token is refused ([Error.Reason]): short, stable names for
// metrics and audit events.
const (
	ReasonMalformed   = "malformed_token"     // not a signed JWT, or claims that are not JSON
	ReasonAlgorithm   = "algorithm_refused"   // alg not among the accepted ones (none, HS256, ...)
	ReasonIssuer      = "wrong_issuer"        // iss is not the configured issuer
	ReasonUnknownKey  = "unknown_key"         // kid the issuer does not publish, even after a refetch
	ReasonSignature   = "bad_signature"       // the signature does not verify
	ReasonExpired     = "expired_token"       // exp (plus leeway) is past
	ReasonNotYetValid = "token_not_yet_valid" // nbf or iat (minus leeway) is ahead
	ReasonAudience    = "wrong_audience"      // aud does not hold the configured audience
	ReasonClaims      = "invalid_claims"      // no sub or no exp
)

// Error is a refused token. Its message is meant for the client that
// presented the token.
type Error struct {
	// Reason is one of the Reason constants.
	Reason string
	// Subject is the token's subject when its signature verified (the
	// token is the issuer's, refused for its claims), else "".
	Subject string
	msg     string
}

func (e *Error) Error() string { return e.msg }

func refuse(reason, format string, args ...any) *Error {
	return &Error{Reason: reason, msg: fmt.Sprintf(format, args...)}
}

// ErrUnavailable is wrapped by the error of a token that could not be
// checked: the issuer's discovery document or keys could not be fetched
// and none were fetched before. It says nothing about the token.
var ErrUnavailable = errors.New("the authorization server's keys cannot be fetched")

// Defaults of [Options].
const (
	DefaultLeeway              = 30 * time.Second
	DefaultKeysMaxAge          = time.Hour
	DefaultKeysRefetchInterval = 10 * time.Second
	// DefaultFetchTimeout bounds one fetch of the discovery document or
	// the keys.
	DefaultFetchTimeout = 10 * time.Second
)

// MaxTokenBytes bounds the tokens Verify reads; a longer one is refused
// unparsed.
const MaxTokenBytes = 32 << 10

// maxDocumentBytes bounds a discovery document or a key set.
const maxDocumentBytes = 1 << 20

// minRSABits is the smallest RSA key trusted.
const minRSABits = 2048

// Algorithms are the JWS algorithms a Verifier may accept: the asymmetric
// ones. "none" and HMAC are not among them, whatever the options say.
var Algorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// Options configure a [Verifier]. A nil *Options, and zero fields, mean
// the defaults.
type Options struct {
	// Algorithms accepted (default: all of [Algorithms]).
	Algorithms []string
	// Leeway is the clock skew allowed on exp, nbf and iat (default
	// DefaultLeeway).
	Leeway time.Duration
	// KeysMaxAge is how long a fetched key set is used (default
	// DefaultKeysMaxAge).
	KeysMaxAge time.Duration
	// KeysRefetchInterval is the least time between two fetches caused by
	// unknown key ids, or made after a failed fetch (default
	// DefaultKeysRefetchInterval).
	KeysRefetchInterval time.Duration
	// GroupsClaim names the claim of a token's groups or roles: a name, or
	// a dotted path into nested objects ("realm_access.roles"). Empty:
	// tokens have no groups.
	GroupsClaim string
	// Client fetches the discovery document and keys (default: a client
	// with a DefaultFetchTimeout timeout).
	Client *http.Client
	// Now is the clock that decides expiry and when to fetch again
	// (default time.Now).
	Now func() time.Time
	// Logger receives what goes wrong with fetches (default
	// slog.Default()).
	Logger *slog.Logger
	// OnFetch, when set, is called after each fetch of the keys (and the
	// discovery document before them), with its error.
	OnFetch func(error)
}

// Token is what a verified token says about its bearer.
type Token struct {
	// Subject is the sub claim: who the token speaks for.
	Subject string
	// ClientID is the client the token was issued to (client_id, else
	// azp), when the token says.
	ClientID string
	// Scopes are the scope claim's (space-separated) or scp's values.
	Scopes []string
	// Groups are the values of the groups claim, when one is configured.
	Groups []string
	// Expiry is the exp claim.
	Expiry time.Time
}

// Verifier checks the tokens of one issuer for one audience. It is safe
// for concurrent use, and holds no goroutine: keys are fetched by the
// calls that need them.
type Verifier struct {
	issuer, audience string
	algs             []jose.SignatureAlgorithm
	leeway           time.Duration
	maxAge, refetch  time.Duration
	groups           []string // path of the groups claim
	client           *http.Client
	now              func() time.Time
	log              *slog.Logger
	onFetch          func(error)

	fetchMu sync.Mutex // one fetch at a time

	mu        sync.Mutex
	set       *keySet   // nil until the first successful fetch
	lastFetch time.Time // the last fetch attempt
	lastErr   error     // its error, if it failed
}

// keySet is the issuer's discovery document and keys, as fetched at a
// time.
type keySet struct {
	issuer string // as the discovery document writes it
	keys   []jose.JSONWebKey
	at     time.Time
}

// NewVerifier returns a verifier of the tokens issuer issues for
// audience. issuer must be an absolute http(s) URL (whether plain http
// is acceptable is the caller's to decide). Nothing is fetched until
// the first Verify or Refresh.
func NewVerifier(issuer, audience string, opts *Options) (*Verifier, error) {
	if opts == nil {
		opts = &Options{}
	}
	u, err := url.Parse(issuer)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("issuer %q: want an absolute https URL", issuer)
	}
	if audience == "" {
		return nil, errors.New("no audience: a verifier must check that tokens were issued for its resource")
	}
	v := &Verifier{
		issuer: issuer, audience: audience,
		leeway: opts.Leeway, maxAge: opts.KeysMaxAge, refetch: opts.KeysRefetchInterval,
		client: opts.Client, now: opts.Now, log: opts.Logger, onFetch: opts.OnFetch,
	}
	names := opts.Algorithms
	if len(names) == 0 {
		names = Algorithms
	}
	for _, a := range names {
		if !slices.Contains(Algorithms, a) {
			return nil, fmt.Errorf("algorithm %q is not accepted (want some of %s)", a, strings.Join(Algorithms, ", "))
		}
		v.algs = append(v.algs, jose.SignatureAlgorithm(a))
	}
	if opts.GroupsClaim != "" {
		v.groups = strings.Split(opts.GroupsClaim, ".")
	}
	if v.leeway == 0 {
		v.leeway = DefaultLeeway
	}
	if v.maxAge <= 0 {
		v.maxAge = DefaultKeysMaxAge
	}
	if v.refetch <= 0 {
		v.refetch = DefaultKeysRefetchInterval
	}
	if v.client == nil {
		v.client = &http.Client{Timeout: DefaultFetchTimeout}
	}
	if v.now == nil {
		v.now = time.Now
	}
	if v.log == nil {
		v.log = slog.Default()
	}
	return v, nil
}

// Issuer returns the issuer the verifier trusts, as configured.
func (v *Verifier) Issuer() string { return v.issuer }

// Verify checks raw, the token a client presented, and returns what it
// says. A refused token is an [*Error]; a token that could not be checked
// because the issuer's keys cannot be fetched is an error wrapping
// [ErrUnavailable].
func (v *Verifier) Verify(ctx context.Context, raw string) (*Token, error) {
	if len(raw) > MaxTokenBytes {
		return nil, refuse(ReasonMalformed, "malformed token: longer than %d bytes", MaxTokenBytes)
	}
	tok, err := jwt.ParseSigned(raw, v.algs)
	if err != nil {
		var ua *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &ua) {
			return nil, refuse(ReasonAlgorithm, "token signed with algorithm %q, which is not accepted (accepted: %s)", clip.Text(string(ua.Got), 32), v.algNames())
		}
		return nil, refuse(ReasonMalformed, "malformed token: not a signed JWT")
	}
	if len(tok.Headers) != 1 {
		return nil, refuse(ReasonMalformed, "malformed token: not one signature")
	}
	h := tok.Headers[0]
	// The issuer is read before the signature is checked, only to refuse
	// a token of another issuer at once, without fetching anything.
	var unverified struct {
		Issuer string `json:"iss"`
	}
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return nil, refuse(ReasonMalformed, "malformed token: its claims are not a JSON object")
	}
	if !sameIssuer(unverified.Issuer, v.issuer) {
		return nil, refuse(ReasonIssuer, "token issued by %q, not by %q", clip.Text(unverified.Issuer, 128), v.issuer)
	}

	set, err := v.current(ctx)
	if err != nil {
		return nil, err
	}
	keys := set.candidates(h)
	if len(keys) == 0 && h.KeyID != "" {
		// A key the set does not have: the issuer may have added it since.
		if fresh, ferr := v.refresh(ctx, set, true); ferr == nil && fresh != nil {
			set = fresh
			keys = set.candidates(h)
		}
	}
	if len(keys) == 0 {
		if h.KeyID != "" {
			return nil, refuse(ReasonUnknownKey, "token signed with key %q, which the issuer does not publish", clip.Text(h.KeyID, 64))
		}
		return nil, refuse(ReasonUnknownKey, "token names no key (kid), and no key of the issuer is for %s", h.Algorithm)
	}
	var claims jwt.Claims
	var extra map[string]any
	verified := false
	for _, k := range keys {
		claims, extra = jwt.Claims{}, nil
		if tok.Claims(k.Key, &claims, &extra) == nil {
			verified = true
			break
		}
	}
	if !verified {
		return nil, refuse(ReasonSignature, "token signature does not verify with the issuer's keys")
	}

	// From here on the claims are the issuer's.
	fail := func(reason, format string, args ...any) (*Token, error) {
		e := refuse(reason, format, args...)
		e.Subject = claims.Subject
		return nil, e
	}
	if claims.Issuer != set.issuer {
		return fail(ReasonIssuer, "token issued by %q, not by %q", clip.Text(claims.Issuer, 128), set.issuer)
	}
	if claims.Expiry == nil {
		return fail(ReasonClaims, "token has no expiry (exp)")
	}
	now := v.now()
	switch err := claims.ValidateWithLeeway(jwt.Expected{Time: now}, v.leeway); {
	case errors.Is(err, jwt.ErrExpired):
		return fail(ReasonExpired, "token expired at %s", claims.Expiry.Time().UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrNotValidYet):
		return fail(ReasonNotYetValid, "token not valid before %s", claims.NotBefore.Time().UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrIssuedInTheFuture):
		return fail(ReasonNotYetValid, "token issued in the future (%s)", claims.IssuedAt.Time().UTC().Format(time.RFC3339))
	case err != nil:
		return fail(ReasonClaims, "token claims: %v", err)
	}
	if !hasAudience(claims.Audience, v.audience) {
		return fail(ReasonAudience, "token issued for %s, not for this resource (%q)", audienceText(claims.Audience), v.audience)
	}
	if claims.Subject == "" {
		return fail(ReasonClaims, "token has no subject (sub)")
	}
	t := &Token{Subject: claims.Subject, Expiry: claims.Expiry.Time(), Scopes: scopesOf(extra)}
	t.ClientID, _ = extra["client_id"].(string)
	if t.ClientID == "" {
		t.ClientID, _ = extra["azp"].(string)
	}
	if v.groups != nil {
		t.Groups = stringsAt(extra, v.groups)
	}
	return t, nil
}

func (v *Verifier) algNames() string {
	names := make([]string, len(v.algs))
	for i, a := range v.algs {
		names[i] = string(a)
	}
	return strings.Join(names, ", ")
}

// sameIssuer compares issuer identifiers, allowing one to end in a slash
// where the other does not (providers differ in that).
func sameIssuer(a, b string) bool {
	return a != "" && strings.TrimSuffix(a, "/") == strings.TrimSuffix(b, "/")
}

// hasAudience reports whether aud holds want, allowing a trailing slash
// on either side (a resource URL with an empty path is the same as one
// with "/"): path, host and scheme must match, so a token for another
// resource does not.
func hasAudience(aud jwt.Audience, want string) bool {
	for _, a := range aud {
		if a == want || strings.TrimSuffix(a, "/") == strings.TrimSuffix(want, "/") {
			return true
		}
	}
	return false
}

// audienceText shows a token's audience in a message, bounded.
func audienceText(aud jwt.Audience) string {
	switch len(aud) {
	case 0:
		return "no audience"
	case 1:
		return fmt.Sprintf("%q", clip.Text(aud[0], 128))
	}
	return fmt.Sprintf("%q and %d more", clip.Text(aud[0], 128), len(aud)-1)
}

// scopesOf reads the scope claim (RFC 9068, a space-separated string) or,
// without one or with an empty one, scp (a list, as some providers write
// it; an empty scope beside it is what others write when no scope was
// asked for).
func scopesOf(claims map[string]any) []string {
	if s, ok := claims["scope"].(string); ok && strings.TrimSpace(s) != "" {
		return strings.Fields(s)
	}
	switch s := claims["scp"].(type) {
	case string:
		return strings.Fields(s)
	case []any:
		return strs(s)
	}
	return nil
}

// stringsAt reads a list of strings (or one string) at path in claims.
func stringsAt(claims map[string]any, path []string) []string {
	var cur any = claims
	for _, k := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	switch c := cur.(type) {
	case string:
		return []string{c}
	case []any:
		return strs(c)
	}
	return nil
}

func strs(list []any) []string {
	out := make([]string, 0, len(list))
	for _, e := range list {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// candidates are the keys of the set that may have signed a token with
// header h: the key it names (kid), or without a kid every key that fits
// its algorithm.
func (s *keySet) candidates(h jose.Header) []jose.JSONWebKey {
	var out []jose.JSONWebKey
	for _, k := range s.keys {
		if h.KeyID != "" && k.KeyID != h.KeyID {
			continue
		}
		if k.Algorithm != "" && k.Algorithm != h.Algorithm {
			continue
		}
		out = append(out, k)
	}
	return out
}

// Refresh fetches the discovery document and the keys now, unless it was
// done less than KeysRefetchInterval ago; a gateway calls it at start, to
// learn early that the issuer cannot be reached.
func (v *Verifier) Refresh(ctx context.Context) error {
	v.mu.Lock()
	s := v.set
	v.mu.Unlock()
	_, err := v.refresh(ctx, s, false)
	return err
}

// Problem says what went wrong with the last fetch of the issuer's keys,
// when it failed; "" when it did not, or nothing was fetched yet.
func (v *Verifier) Problem() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch {
	case v.lastErr == nil:
		return ""
	case v.set == nil:
		return fmt.Sprintf("the keys of %s cannot be fetched, so its tokens cannot be checked until they are: %v", v.issuer, v.lastErr)
	}
	return fmt.Sprintf("the keys of %s cannot be fetched again; those fetched at %s stay in use: %v", v.issuer, v.set.at.UTC().Format(time.RFC3339), v.lastErr)
}

// current returns the key set to verify with: the cached one while it is
// younger than KeysMaxAge, else a fresh one.
func (v *Verifier) current(ctx context.Context) (*keySet, error) {
	v.mu.Lock()
	s := v.set
	v.mu.Unlock()
	if s != nil && v.now().Sub(s.at) < v.maxAge {
		return s, nil
	}
	return v.refresh(ctx, s, false)
}

// refresh fetches the key set again, unless another call did since the
// caller saw seen, or the last attempt is younger than KeysRefetchInterval
// and either failed or was for an unknown key id (kidMiss): then the set
// in hand is returned. A failed fetch keeps the set there was, if any.
func (v *Verifier) refresh(ctx context.Context, seen *keySet, kidMiss bool) (*keySet, error) {
	v.fetchMu.Lock()
	defer v.fetchMu.Unlock()
	v.mu.Lock()
	s, last, lastErr := v.set, v.lastFetch, v.lastErr
	v.mu.Unlock()
	if s != seen {
		return s, nil // fetched meanwhile
	}
	now := v.now()
	if !last.IsZero() && now.Sub(last) < v.refetch && (kidMiss || lastErr != nil) {
		if s == nil {
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, lastErr)
		}
		return s, nil
	}
	// The fetch serves every caller waiting: it is not cut short when the
	// request that started it goes away, only by a deadline the caller
	// set (a start-up's) and by DefaultFetchTimeout.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DefaultFetchTimeout)
	defer cancel()
	if d, ok := ctx.Deadline(); ok {
		var cancelD context.CancelFunc
		fctx, cancelD = context.WithDeadline(fctx, d)
		defer cancelD()
	}
	fresh, err := v.fetch(fctx)
	if v.onFetch != nil {
		v.onFetch(err)
	}
	v.mu.Lock()
	v.lastFetch, v.lastErr = now, err
	if err == nil {
		fresh.at = now
		v.set = fresh
	}
	v.mu.Unlock()
	if err != nil {
		if s != nil {
			v.log.Warn("oauth: the issuer's keys cannot be fetched again; the keys fetched before stay in use", "issuer", v.issuer, "fetchedAt", s.at, "error", err)
			return s, nil
		}
		v.log.Warn("oauth: the issuer's keys cannot be fetched: tokens cannot be checked", "issuer", v.issuer, "error", err)
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return fresh, nil
}

// fetch reads the issuer's discovery document, then its keys.
func (v *Verifier) fetch(ctx context.Context) (*keySet, error) {
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	var errs []error
	found := false
	for _, u := range discoveryURLs(v.issuer) {
		err := v.getJSON(ctx, u, &doc)
		if err == nil {
			found = true
			break
		}
		errs = append(errs, err)
	}
	if !found {
		return nil, fmt.Errorf("discovery: %w", errors.Join(errs...))
	}
	if !sameIssuer(doc.Issuer, v.issuer) {
		return nil, fmt.Errorf("discovery: the document names issuer %q, not %q", clip.Text(doc.Issuer, 128), v.issuer)
	}
	ju, err := url.Parse(doc.JWKSURI)
	if err != nil || ju.Host == "" || (ju.Scheme != "https" && ju.Scheme != "http") {
		return nil, fmt.Errorf("discovery: jwks_uri %q is not an http(s) URL", clip.Text(doc.JWKSURI, 128))
	}
	if iu, _ := url.Parse(v.issuer); iu.Scheme == "https" && ju.Scheme != "https" {
		return nil, fmt.Errorf("discovery: jwks_uri %q is plain http for an https issuer", clip.Text(doc.JWKSURI, 128))
	}
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := v.getJSON(ctx, doc.JWKSURI, &raw); err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	s := &keySet{issuer: doc.Issuer}
	skipped := 0
	for _, r := range raw.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(r); err != nil || !usable(&k) {
			skipped++ // a key of a kind go-jose does not read, or not for signatures
			continue
		}
		s.keys = append(s.keys, k)
	}
	if len(s.keys) == 0 {
		return nil, fmt.Errorf("keys: %s holds no public signing key (%d skipped)", clip.Text(doc.JWKSURI, 128), skipped)
	}
	return s, nil
}

// usable reports whether k may verify tokens: a valid public key for
// signatures (never a symmetric or a private one), RSA of 2048 bits or
// more.
func usable(k *jose.JSONWebKey) bool {
	if !k.Valid() || !k.IsPublic() || (k.Use != "" && k.Use != "sig") {
		return false
	}
	if rk, ok := k.Key.(*rsa.PublicKey); ok && rk.N.BitLen() < minRSABits {
		return false
	}
	return true
}

// discoveryURLs are where the issuer's metadata may be: OpenID Connect
// discovery, then RFC 8414 (the well-known path inserted before the
// issuer's path).
func discoveryURLs(issuer string) []string {
	oidc := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	u, err := url.Parse(issuer)
	if err != nil {
		return []string{oidc}
	}
	path := strings.TrimSuffix(u.Path, "/")
	u.Path, u.RawPath = "/.well-known/oauth-authorization-server"+path, ""
	return []string{oidc, u.String()}
}

// getJSON fetches u and decodes its JSON body into dst.
func (v *Verifier) getJSON(ctx context.Context, u string, dst any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err == nil && !strings.HasSuffix(mt, "json") {
		return fmt.Errorf("GET %s: content type %q, want JSON", u, mt)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocumentBytes+1))
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	if len(body) > maxDocumentBytes {
		return fmt.Errorf("GET %s: larger than %d bytes", u, maxDocumentBytes)
	}
	if err := json.Unmarshal(body, dst); err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	return nil
}
