package apikey_test

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/toolgate/toolgate/policy/apikey"
)

// keyRE is the shape a secret scanner would look for.
var keyRE = regexp.MustCompile(`^tg_[a-z2-7]{12}_[a-z2-7]{51}[aq]$`)

func TestGenerateKey(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		plaintext, id, hash, err := apikey.Generate()
		if err != nil {
			t.Fatal(err)
		}
		if !keyRE.MatchString(plaintext) || len(plaintext) != apikey.Len {
			t.Fatalf("key %q does not have the documented shape", plaintext)
		}
		gotID, secret, err := apikey.Parse(plaintext)
		if err != nil {
			t.Fatalf("Parse(Generate()): %v", err)
		}
		if gotID != id || plaintext != "tg_"+id+"_"+secret {
			t.Fatalf("Parse(%q) = %q, %q; Generate's id is %q", plaintext, gotID, secret, id)
		}
		if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(hash) {
			t.Fatalf("secret hash %q is not hex SHA-256", hash)
		}
		if hash == apikey.Hash(plaintext) || strings.Contains(hash, secret) {
			t.Fatalf("the stored hash must be of the secret alone")
		}
		if seen[id] || seen[secret] {
			t.Fatalf("Generate repeated itself: %q", id)
		}
		seen[id], seen[secret] = true, true
	}
}

func TestParseKey(t *testing.T) {
	const (
		id     = "abcdefgh2345"
		secret = "abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrsq" // 52, ends in q
	)
	valid := "tg_" + id + "_" + secret
	tests := []struct {
		name    string
		in      string
		wantErr string // "" means valid
	}{
		{"valid", valid, ""},
		{"valid all a", "tg_aaaaaaaaaaaa_" + strings.Repeat("a", 52), ""},
		{"empty", "", `does not start with "tg_"`},
		{"other prefix", "sk_" + id + "_" + secret, `does not start with "tg_"`},
		{"upper-case prefix", "TG_" + id + "_" + secret, `does not start with "tg_"`},
		{"prefix only", "tg_", "it has 3 characters, want 68"},
		{"too short", valid[:67], "it has 67 characters, want 68"},
		{"too long", valid + "a", "it has 69 characters, want 68"},
		{"trailing newline", valid[:67] + "\n", "secret has a character outside a-z and 2-7 at position 52"},
		{"no separator", "tg_" + id + "-" + secret, `want "_" after the 12-character key id`},
		{"separator moved", "tg_" + id[:11] + "_a" + secret, `want "_" after the 12-character key id`},
		{"upper-case id", "tg_ABCDEFGH2345_" + secret, "key id has a character outside a-z and 2-7 at position 1"},
		{"digit 1 in id", "tg_abcdefgh2341_" + secret, "key id has a character outside a-z and 2-7 at position 12"},
		{"digit 0 in secret", "tg_" + id + "_0" + secret[1:], "secret has a character outside a-z and 2-7 at position 1"},
		{"base64 character in secret", "tg_" + id + "_" + secret[:20] + "-" + secret[21:], "secret has a character outside a-z and 2-7 at position 21"},
		{"upper-case secret", "tg_" + id + "_" + strings.ToUpper(secret), "secret has a character outside a-z and 2-7 at position 1"},
		{"non-zero trailing bits", valid[:67] + "b", "the secret does not encode 32 bytes"},
		{"non-ASCII", "tg_" + id + "_" + secret[:50] + "é", "secret has a character outside a-z and 2-7 at position 51"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gotID, gotSecret, err := apikey.Parse(tt.in)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if "tg_"+gotID+"_"+gotSecret != tt.in {
					t.Fatalf("Parse(%q) = %q, %q", tt.in, gotID, gotSecret)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse(%q) = %q, %q, want an error", tt.in, gotID, gotSecret)
			}
			if !errors.Is(err, apikey.ErrMalformed) {
				t.Errorf("error %q does not wrap ErrMalformed", err)
			}
			if !strings.HasPrefix(err.Error(), "malformed API key: ") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q, want it to say %q", err, tt.wantErr)
			}
			if gotID != "" || gotSecret != "" {
				t.Errorf("Parse returned parts with an error")
			}
			// The error never repeats the input.
			if len(tt.in) > 4 && strings.Contains(err.Error(), tt.in[4:]) || strings.Contains(err.Error(), secret[:10]) || strings.Contains(err.Error(), id) {
				t.Errorf("error %q repeats the presented key", err)
			}
		})
	}
}

func TestHashKey(t *testing.T) {
	// SHA-256 test vector from FIPS 180-2.
	if got, want := apikey.Hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; got != want {
		t.Errorf("Hash(abc) = %s, want %s", got, want)
	}
}

func TestKeyStatus(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		key  apikey.Key
		now  time.Time
		want string
	}{
		{"never expires", apikey.Key{}, t0, apikey.StatusActive},
		{"before expiry", apikey.Key{Expires: t0.Add(time.Second)}, t0, apikey.StatusActive},
		{"at expiry", apikey.Key{Expires: t0}, t0, apikey.StatusExpired},
		{"after expiry", apikey.Key{Expires: t0}, t0.Add(time.Hour), apikey.StatusExpired},
		{"revoked", apikey.Key{Revoked: t0}, t0.Add(-time.Hour), apikey.StatusRevoked},
		{"revoked beats expired", apikey.Key{Revoked: t0, Expires: t0}, t0.Add(time.Hour), apikey.StatusRevoked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.key.Status(tt.now); got != tt.want {
				t.Errorf("Status = %q, want %q", got, tt.want)
			}
		})
	}
}

func ExampleHash() {
	// The configuration lists keys by the SHA-256 of the whole key:
	//   "apiKeys": [{"name": "ci", "sha256": "<this>"}]
	fmt.Println(apikey.Hash("tg_aaaaaaaaaaaa_" + strings.Repeat("a", 52)))
	// Output: f7151eb3206ee27a3ce7128a7493971ca1d0c4d18e2774e2bf47b1e66cb3653d
}

func ExampleParse() {
	id, _, err := apikey.Parse("tg_abcdefgh2345_" + strings.Repeat("a", 52))
	fmt.Println(id, err)
	_, _, err = apikey.Parse("tg_abcdefgh2345_short")
	fmt.Println(err)
	// Output:
	// abcdefgh2345 <nil>
	// malformed API key: it has 21 characters, want 68
}
