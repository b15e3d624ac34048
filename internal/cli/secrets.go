package cli

import (
	"fmt"
	"math"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policy/apikey"
)

// Secret detection for `toolgate check`: finding a credential in a
// value of a configuration file, telling a literal one from one taken
// from the environment with ${VAR}, and masking what the report shows.
// A hit is sure (a known token prefix, a password in a URL) or a guess
// (a random-looking string, or any long literal in a field whose name
// says it holds a credential); the check fails the first and warns on
// the second.

// refSep stands for a `${VAR}` reference in literalText's result.
const refSep = "\x00"

// literalText is the part of s that the file states literally: every
// `${NAME}` and `${env:NAME}` reference is replaced by refSep, `$${` (an
// escaped literal) by "${", following package config's interpolation.
func literalText(s string) string { return config.LiteralText(s, refSep) }

// secretPrefix is a known prefix of a credential issued by a service.
type secretPrefix struct {
	prefix, kind string
}

// secretPrefixes are the token prefixes that mark a credential for sure.
var secretPrefixes = []secretPrefix{
	{"github_pat_", "GitHub fine-grained token"},
	{"ghp_", "GitHub personal access token"},
	{"gho_", "GitHub OAuth token"},
	{"ghs_", "GitHub app token"},
	{"glpat-", "GitLab personal access token"},
	{"sk_live_", "Stripe live key"},
	{"sk-", "API key (sk-)"},
	{"xoxb-", "Slack bot token"},
	{"xoxp-", "Slack user token"},
	{"lin_", "Linear API key"},
	{"secret_", "Notion integration secret"},
	{"AKIA", "AWS access key id"},
	{apikey.Prefix, "toolgate API key"},
}

// credentialNameRE matches header and environment variable names whose
// value is a credential.
var credentialNameRE = regexp.MustCompile(`(?i)(token|secret|passw|api[-_]?key|private[-_]?key|credential|^authorization$|^proxy-authorization$|^cookie$|^x-auth)`)

// authSchemes are the words that may precede a credential in a header.
var authSchemes = []string{"bearer", "basic", "token", "bot", "apikey"}

// urlPasswordRE finds the password of a URL's user information.
var urlPasswordRE = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s]*?:([^/?#@\s]+)@`)

// secretHit is a credential found in a value.
type secretHit struct {
	kind  string
	token string
	// sure: a known prefix or a URL password; otherwise a guess (a long
	// random-looking string, or any literal in a credential's field),
	// and why says what it is based on.
	sure bool
	why  string
}

// findSecret looks for a credential in lit, the literal text of a value
// (see literalText) of the header or variable called name ("" for url and
// args). It returns the strongest hit.
func findSecret(name, lit string) (secretHit, bool) {
	if m := urlPasswordRE.FindStringSubmatch(lit); m != nil && strings.Trim(m[1], refSep) != "" {
		pw, err := url.PathUnescape(m[1])
		if err != nil {
			pw = m[1]
		}
		if !strings.Contains(pw, refSep) {
			return secretHit{kind: "password in a URL", token: pw, sure: true}, true
		}
	}
	var guess *secretHit
	for _, tok := range secretTokens(lit) {
		if kind, ok := prefixKind(tok); ok {
			return secretHit{kind: kind, token: tok, sure: true}, true
		}
		if guess == nil && highEntropy(tok) {
			guess = &secretHit{kind: "random-looking string", token: tok, why: "it looks like a generated secret"}
		}
	}
	if guess != nil {
		return *guess, true
	}
	if name != "" && credentialNameRE.MatchString(name) {
		v := strings.TrimSpace(lit)
		if f := strings.Fields(v); len(f) == 2 && slices.Contains(authSchemes, strings.ToLower(f[0])) {
			v = f[1]
		}
		if len(v) >= 8 && !strings.Contains(v, refSep) && !strings.Contains(v, "://") && !looksLikePath(v) {
			return secretHit{kind: "value", token: v, why: fmt.Sprintf("the name %s says it is a credential", name)}, true
		}
	}
	return secretHit{}, false
}

// secretTokens splits text into the words a credential could be: at
// spaces, references and punctuation that does not occur in tokens. A
// path (or a URL) is split into its segments too, so that a long path is
// not taken for a random string, while base64 text keeps its slashes.
func secretTokens(text string) []string {
	var out []string
	words := strings.FieldsFunc(text, func(r rune) bool {
		return r <= ' ' || strings.ContainsRune(`"'=,;&?#@()[]{}<>|:!*`+"`", r)
	})
	for _, w := range words {
		if strings.Contains(w, "/") && (looksLikePath(w) || strings.Contains(w, ".") || strings.HasPrefix(w, "@")) {
			for seg := range strings.SplitSeq(w, "/") {
				if seg != "" {
					out = append(out, seg)
				}
			}
			continue
		}
		out = append(out, w)
	}
	return out
}

// looksLikePath reports text that starts like a file path or a URL path.
func looksLikePath(s string) bool {
	for _, p := range []string{"/", "./", "../", "~/"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return len(s) > 2 && s[1] == ':' && (s[2] == '\\' || s[2] == '/') // C:\ or C:/
}

// prefixKind reports a token that starts with a known credential prefix
// and continues like a credential: at least 16 more letters, digits, _ or
// -, letters and digits among them.
func prefixKind(tok string) (string, bool) {
	tok = strings.TrimLeft(tok, "-/")
	for _, p := range secretPrefixes {
		rest, ok := strings.CutPrefix(tok, p.prefix)
		if !ok {
			continue
		}
		if p.prefix == apikey.Prefix {
			if _, _, err := apikey.Parse(tok); err == nil {
				return p.kind, true
			}
			continue
		}
		end := strings.IndexFunc(rest, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-')
		})
		if end >= 0 {
			rest = rest[:end]
		}
		if len(rest) >= 16 && strings.ContainsFunc(rest, isDigit) && strings.ContainsFunc(rest, isLetter) {
			return p.kind, true
		}
	}
	return "", false
}

func isDigit(r rune) bool  { return r >= '0' && r <= '9' }
func isLetter(r rune) bool { return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' }

// Thresholds of a random-looking string.
const (
	minSecretLen     = 24
	minSecretEntropy = 3.5 // bits per character
)

// highEntropy reports a string that looks random: long, with a Shannon
// entropy above minSecretEntropy bits per character, and either mixing
// upper case, lower case and digits (base62, base64) or made of at least
// 32 hex digits, letters and digits among them. Words joined by dashes
// ("platform-engineering-2024") have one case only.
func highEntropy(s string) bool {
	if len(s) < minSecretLen || shannonEntropy(s) <= minSecretEntropy {
		return false
	}
	upper := strings.ContainsFunc(s, func(r rune) bool { return r >= 'A' && r <= 'Z' })
	lower := strings.ContainsFunc(s, func(r rune) bool { return r >= 'a' && r <= 'z' })
	digit := strings.ContainsFunc(s, isDigit)
	if upper && lower && digit {
		return true
	}
	hex := 0
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9', r >= 'a' && r <= 'f', r >= 'A' && r <= 'F':
			hex++
		case r == '-':
		default:
			return false
		}
	}
	return hex >= 32 && digit && (upper || lower)
}

// shannonEntropy is the Shannon entropy of the bytes of s, in bits per
// byte.
func shannonEntropy(s string) float64 {
	var counts [256]int
	for i := 0; i < len(s); i++ {
		counts[s[i]]++
	}
	var h float64
	n := float64(len(s))
	for _, c := range counts {
		if c > 0 {
			p := float64(c) / n
			h -= p * math.Log2(p)
		}
	}
	return h
}

// maskSecret shows the first characters of a secret (at most 4, at most a third
// of it) and "…".
func maskSecret(s string) string {
	n := min(4, len(s)/3)
	for n > 0 && !isRuneStart(s, n) {
		n--
	}
	return s[:n] + "…"
}

func isRuneStart(s string, i int) bool { return i >= len(s) || s[i] < 0x80 || s[i] >= 0xC0 }

// argNameValue splits an argument --flag=value into the flag's name and
// the value; other arguments have no name.
func argNameValue(a string) (name, value string) {
	if flag, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(flag, "-") {
		return strings.TrimLeft(flag, "-"), v
	}
	return "", a
}
