package policy_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/policy"
)

// FuzzParseKey checks that ParseKey never panics, that what it accepts
// rebuilds the input exactly, and that its errors never repeat the input.
func FuzzParseKey(f *testing.F) {
	plaintext, _, _, err := policy.GenerateKey()
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		plaintext,
		"tg_aaaaaaaaaaaa_" + strings.Repeat("a", 52),
		"tg_aaaaaaaaaaaa_" + strings.Repeat("7", 52),
		"tg_",
		"",
		"tg_aaaaaaaaaaaa-" + strings.Repeat("a", 52),
		"Bearer " + plaintext,
		strings.ToUpper(plaintext),
		plaintext[:len(plaintext)-1] + "\x00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, secret, err := policy.ParseKey(s)
		if err != nil {
			if !errors.Is(err, policy.ErrMalformedKey) {
				t.Fatalf("error %q does not wrap ErrMalformedKey", err)
			}
			if id != "" || secret != "" {
				t.Fatalf("parts returned with an error")
			}
			if len(s) >= 8 && strings.Contains(err.Error(), s[3:]) {
				t.Fatalf("error %q repeats the input", err)
			}
			return
		}
		if got := policy.KeyPrefix + id + "_" + secret; got != s {
			t.Fatalf("ParseKey(%q) = %q, %q: does not rebuild the input", s, id, secret)
		}
		if len(id) != policy.KeyIDLen || len(secret) != policy.KeySecretLen {
			t.Fatalf("ParseKey(%q): id %q, secret of %d characters", s, id, len(secret))
		}
	})
}
