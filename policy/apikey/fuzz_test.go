package apikey_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/toolgate/toolgate/policy/apikey"
)

// FuzzParseKey checks that Parse never panics, that what it accepts
// rebuilds the input exactly, and that its errors never repeat the input.
func FuzzParseKey(f *testing.F) {
	plaintext, _, _, err := apikey.Generate()
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
		id, secret, err := apikey.Parse(s)
		if err != nil {
			if !errors.Is(err, apikey.ErrMalformed) {
				t.Fatalf("error %q does not wrap ErrMalformed", err)
			}
			if id != "" || secret != "" {
				t.Fatalf("parts returned with an error")
			}
			if len(s) >= 8 && strings.Contains(err.Error(), s[3:]) {
				t.Fatalf("error %q repeats the input", err)
			}
			return
		}
		if got := apikey.Prefix + id + "_" + secret; got != s {
			t.Fatalf("Parse(%q) = %q, %q: does not rebuild the input", s, id, secret)
		}
		if len(id) != apikey.IDLen || len(secret) != apikey.SecretLen {
			t.Fatalf("Parse(%q): id %q, secret of %d characters", s, id, len(secret))
		}
	})
}
