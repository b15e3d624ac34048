package oauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// FuzzVerify feeds the verifier arbitrary tokens, with the issuer's keys
// already in hand (nothing is fetched): it never panics, every refusal is
// an *Error with a reason, and nothing is accepted but claims the issuer's
// key signed.
func FuzzVerify(f *testing.F) {
	const issuer, aud = "https://id.example.com", "https://mcp.example.com/mcp"
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Now()
	claims, _ := json.Marshal(map[string]any{
		"iss": issuer, "aud": []string{aud}, "sub": "fuzz-subject", "scope": "a b",
		"exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "nbf": now.Unix(),
	})
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}}, nil)
	if err != nil {
		f.Fatal(err)
	}
	jws, err := signer.Sign(claims)
	if err != nil {
		f.Fatal(err)
	}
	good, _ := jws.CompactSerialize()
	b64 := base64.RawURLEncoding.EncodeToString
	f.Add(good)
	f.Add(b64([]byte(`{"alg":"none"}`)) + "." + b64(claims) + ".")
	f.Add(b64([]byte(`{"alg":"HS256","kid":"k1"}`)) + "." + b64(claims) + ".c2ln")
	f.Add(b64([]byte(`{"alg":"ES256","kid":"k1","crit":["exp"]}`)) + "." + b64(claims) + ".c2ln")
	f.Add(b64([]byte(`{"alg":"ES256"}`)) + "." + b64([]byte(`{"iss":"https://id.example.com"}`)) + ".c2ln")
	f.Add(b64([]byte(`{"alg":"ES256","kid":"x"}`)) + "." + b64([]byte(`[]`)) + ".")
	f.Add("a.b.c")
	f.Add("..")
	f.Add(`{"payload":"e30","signatures":[]}`)

	v, err := NewVerifier(issuer, aud, &Options{GroupsClaim: "realm_access.roles"})
	if err != nil {
		f.Fatal(err)
	}
	v.set = &keySet{issuer: issuer, at: time.Now().Add(time.Hour), keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}}
	// Past the refetch interval nothing is fetched either: the last fetch
	// is "now", and the set never ages (at is ahead).
	v.lastFetch = time.Now().Add(time.Hour)

	f.Fuzz(func(t *testing.T, raw string) {
		tok, err := v.Verify(context.Background(), raw)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Reason == "" || e.Error() == "" {
				t.Fatalf("Verify(%q): %#v, want an *Error with a reason", raw, err)
			}
			return
		}
		if tok.Subject != "fuzz-subject" {
			t.Fatalf("Verify(%q) accepted subject %q", raw, tok.Subject)
		}
	})
}
