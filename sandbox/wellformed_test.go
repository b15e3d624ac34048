package sandbox

import "testing"

// Lone surrogates come out of the interpreter as WTF-8; each becomes one
// U+FFFD, and valid text (astral characters included) is kept as is.
func TestWellFormed(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", "plain"},
		{"astral \U0001F600 é", "astral \U0001F600 é"},
		{"hello \xed\xa0\x80A", "hello \uFFFDA"},
		{"\xed\xa0\x80\xed\xbf\xbf", "\uFFFD\uFFFD"},
		{"end \xed\xa0", "end \uFFFD\uFFFD"},
		{"\xff", "\uFFFD"},
	} {
		if got := wellFormed(tc.in); got != tc.want {
			t.Errorf("wellFormed(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
