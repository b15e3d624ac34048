package config

import (
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestExpand(t *testing.T) {
	lookup := env(map[string]string{"A": "alpha", "B_2": "beta", "EMPTY": "", "DOLLAR": "${A}"})
	for _, tc := range []struct {
		name, in, want string
		problems       []string
	}{
		{name: "no reference", in: "plain text", want: "plain text"},
		{name: "empty string", in: "", want: ""},
		{name: "braced", in: "${A}", want: "alpha"},
		{name: "env spelling", in: "${env:A}", want: "alpha"},
		{name: "embedded", in: "x-${A}-${env:B_2}-y", want: "x-alpha-beta-y"},
		{name: "adjacent", in: "${A}${A}", want: "alphaalpha"},
		{name: "empty but set", in: "[${EMPTY}]", want: "[]"},
		{name: "value is not expanded again", in: "${DOLLAR}", want: "${A}"},
		{name: "escape", in: "$${A}", want: "${A}"},
		{name: "escape then reference", in: "$${A}${A}", want: "${A}alpha"},
		{name: "escape unterminated", in: "$${", want: "${"},
		{name: "three dollars", in: "$$${A}", want: "$${A}"},
		{name: "lone dollar", in: "cost: $5 $", want: "cost: $5 $"},
		{name: "dollar dollar", in: "$$", want: "$$"},
		{name: "shell style is literal", in: "$A", want: "$A"},
		{name: "missing", in: "Bearer ${TOKEN}", want: "Bearer ",
			problems: []string{"environment variable TOKEN is not set"}},
		{name: "all missing", in: "${X}/${env:Y}", want: "/",
			problems: []string{"environment variable X is not set", "environment variable Y is not set"}},
		{name: "unterminated", in: "a ${A", want: "a ${A",
			problems: []string{`unterminated reference "${A" (missing "}")`}},
		{name: "empty", in: "${}", want: "",
			problems: []string{`empty reference "${}"`}},
		{name: "empty env", in: "${env:}", want: "",
			problems: []string{`empty reference "${env:}"`}},
		{name: "leading digit", in: "${1A}", want: "",
			problems: []string{`invalid reference "${1A}" (want ${NAME} or ${env:NAME}, NAME made of letters, digits and _; write $${ for a literal ${)`}},
		{name: "other scheme", in: "${file:/etc/passwd}", want: "",
			problems: []string{`invalid reference "${file:/etc/passwd}" (want ${NAME} or ${env:NAME}, NAME made of letters, digits and _; write $${ for a literal ${)`}},
		{name: "nested", in: "${${A}}", want: "}",
			problems: []string{`invalid reference "${${A}" (want ${NAME} or ${env:NAME}, NAME made of letters, digits and _; write $${ for a literal ${)`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, problems := expand(tc.in, lookup)
			if got != tc.want {
				t.Errorf("expand(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if diff := cmp.Diff(tc.problems, problems); diff != "" {
				t.Errorf("expand(%q) problems mismatch (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

// refRE is a second, independent reading of the syntax: at each position
// the escape is tried before a reference.
var refRE = regexp.MustCompile(`\$\$\{|\$\{(env:)?([A-Za-z_][A-Za-z0-9_]*)\}`)

func FuzzInterpolate(f *testing.F) {
	for _, s := range []string{
		"", "plain", "${A}", "${env:A}", "$${A}", "$$${A}", "${", "${}", "${env:}",
		"${1}", "a${B}c${", "Bearer ${TOKEN}", "${A}${UNSET}", "$", "$$", "${${A}}",
	} {
		f.Add(s)
	}
	// Variables whose name starts with U are unset; others are set to a
	// value holding a reference, which must not be expanded again.
	lookup := func(name string) (string, bool) {
		if strings.HasPrefix(name, "U") {
			return "", false
		}
		return "<${" + name + "}>", true
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, problems := expand(s, lookup)
		if !strings.Contains(s, "$") && (got != s || problems != nil) {
			t.Fatalf("expand(%q) = %q, %q; want it unchanged", s, got, problems)
		}
		if problems != nil {
			return
		}
		want := refRE.ReplaceAllStringFunc(s, func(m string) string {
			if m == "$${" {
				return "${"
			}
			name := refRE.FindStringSubmatch(m)[2]
			v, ok := lookup(name)
			if !ok {
				t.Fatalf("expand(%q) reported no problem for unset %s", s, name)
			}
			return v
		})
		if got != want {
			t.Fatalf("expand(%q) = %q, want %q", s, got, want)
		}
	})
}
