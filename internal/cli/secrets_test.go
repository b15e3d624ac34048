package cli

import (
	"strings"
	"testing"
)

// exampleJWT is the sample token of the JWT specification's examples
// (HS256, {"sub": "1234567890", "name": "John Doe", "iat": 1516239022}).
const exampleJWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"

func TestFindSecret(t *testing.T) {
	tests := []struct {
		name, field, value string
		wantKind           string // "" for no finding
		wantSure           bool
		wantToken          string
	}{
		{"reference", "Authorization", "Bearer ${TOKEN}", "", false, ""},
		{"env reference", "GITHUB_TOKEN", "${env:GITHUB_TOKEN}", "", false, ""},
		{"two references", "", "${USER}:${PASS}", "", false, ""},
		{"escaped reference", "", "$${NOT_A_REF}", "", false, ""},
		{"github token", "Authorization", "Bearer " + fakeGitHubToken, "GitHub personal access token", true, fakeGitHubToken},
		{"github token in a URL", "", "https://x-access-token:" + fakeGitHubToken + "@github.com/o/r.git", "password in a URL", true, fakeGitHubToken},
		{"github token as user", "", "https://" + fakeGitHubToken + "@github.com/o/r.git", "GitHub personal access token", true, fakeGitHubToken},
		{"fine-grained github token", "", "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "GitHub fine-grained token", true, "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"},
		{"openai key in a flag", "", "--key=sk-proj-Ab12Cd34Ef56Gh78Ij90", "API key (sk-)", true, "sk-proj-Ab12Cd34Ef56Gh78Ij90"},
		{"stripe", "STRIPE", "sk_live_51Habcdefghij0123456789", "Stripe live key", true, "sk_live_51Habcdefghij0123456789"},
		{"slack", "SLACK_BOT", "xoxb-1234567890-abcdefghijkl", "Slack bot token", true, "xoxb-1234567890-abcdefghijkl"},
		{"linear", "", "lin_api_0123456789abcdefABCDEF", "Linear API key", true, "lin_api_0123456789abcdefABCDEF"},
		{"notion", "NOTION", "secret_0123456789abcdefABCDEFghij", "Notion integration secret", true, "secret_0123456789abcdefABCDEFghij"},
		{"aws", "AWS_ACCESS_KEY_ID", "AKIAFAKE0123456789AB", "AWS access key id", true, "AKIAFAKE0123456789AB"},
		{"gitlab", "", "glpat-abcdefgh01234567XYZ", "GitLab personal access token", true, "glpat-abcdefgh01234567XYZ"},
		{"prefix of a word", "", "sk-learn", "", false, ""},
		{"prefix without digits", "", "secret_manager_settings_file", "", false, ""},
		{"random string", "", "q8Zr2Lm4Xp9Tn7Vb3Kc6Wd1Yf5Hg0Js", "random-looking string", false, "q8Zr2Lm4Xp9Tn7Vb3Kc6Wd1Yf5Hg0Js"},
		{"random segment of a URL", "", "https://hooks.example.com/services/Xk9mP2qR7sT4vW1yZ3aB5cD8", "random-looking string", false, "Xk9mP2qR7sT4vW1yZ3aB5cD8"},
		{"long path", "", "/srv/shared/documents-2024/q3-reports/final", "", false, ""},
		{"package", "", "@modelcontextprotocol/server-filesystem@2025.7.1", "", false, ""},
		{"plain URL", "", "https://api.githubcopilot.com/mcp/", "", false, ""},
		{"long word", "", "--max-old-space-size=256", "", false, ""},
		{"credential-named literal", "X-Api-Key", "changeme-please", "value", false, "changeme-please"},
		{"credential-named with scheme", "Authorization", "Basic dXNlcjpwYXNz", "value", false, "dXNlcjpwYXNz"},
		{"credential-named path", "TOKEN_FILE", "/run/secrets/token", "", false, ""},
		{"credential-named URL", "TOKEN_URL", "https://auth.example.com/token", "", false, ""},
		{"credential-named short", "API_KEY", "none", "", false, ""},
		{"other header", "X-Team", "platform-engineering-2024", "", false, ""},
		{"hex", "", "--hash 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b", "random-looking string", false, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"},
		{"short hex", "", "commit 9f86d081884c7d659a2f", "", false, ""},
		{"lower case words and digits", "", "my-service-name-2024-production", "", false, ""},
		{"toolgate key", "", "tg_abcdefghijkl_" + strings.Repeat("a2", 25) + "qa", "toolgate API key", true, "tg_abcdefghijkl_" + strings.Repeat("a2", 25) + "qa"},
		{"fine-grained github token in an env value", "GH", "github_pat_11AAAAAAA0aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "GitHub fine-grained token", true, "github_pat_11AAAAAAA0aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"},
		{"openai key in a header", "Authorization", "Bearer sk-Ab12Cd34Ef56Gh78Ij90Kl12", "API key (sk-)", true, "sk-Ab12Cd34Ef56Gh78Ij90Kl12"},
		{"slack bot token in an argument", "", "xoxb-2024-0123456789-AbCdEfGhIjKl", "Slack bot token", true, "xoxb-2024-0123456789-AbCdEfGhIjKl"},
		{"aws key id in a URL query", "access_key", "AKIAIOSFODNN7EXAMPLE", "AWS access key id", true, "AKIAIOSFODNN7EXAMPLE"},
		{"jwt", "Authorization", "Bearer " + exampleJWT, "random-looking string", false, exampleJWT},
		{"jwt in an env value", "SESSION", exampleJWT, "random-looking string", false, exampleJWT},
		{"long random string in an argument", "", "--seed=Zx8Qw2Er5Ty7Ui9Op1As3Df6Gh", "random-looking string", false, "Zx8Qw2Er5Ty7Ui9Op1As3Df6Gh"},
		{"reference in place of a token", "Authorization", "Bearer ${env:SLACK_BOT_TOKEN}", "", false, ""},
		{"reference in a URL password", "", "https://user:${DB_PASSWORD}@db.example.com/x", "", false, ""},
		{"reference beside a literal prefix", "", "ghp_${GITHUB_TOKEN_REST}", "", false, ""},
		{"credential-named reference", "API_KEY", "${API_KEY}", "", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hit, ok := findSecret(tt.field, literalText(tt.value))
			if tt.wantKind == "" {
				if ok {
					t.Fatalf("found %+v, want nothing", hit)
				}
				return
			}
			if !ok || hit.kind != tt.wantKind || hit.sure != tt.wantSure || hit.token != tt.wantToken {
				t.Fatalf("found %+v (%v), want %q sure=%v token %q", hit, ok, tt.wantKind, tt.wantSure, tt.wantToken)
			}
		})
	}
}

func TestLiteralText(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                  "plain",
		"Bearer ${TOKEN}":        "Bearer \x00",
		"${env:A}-${B}":          "\x00-\x00",
		"$${A} costs $5":         "${A} costs $5",
		"https://${U}:p@h/${P}x": "https://\x00:p@h/\x00x",
	} {
		if got := literalText(in); got != want {
			t.Errorf("literalText(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMaskSecret(t *testing.T) {
	for in, want := range map[string]string{
		fakeGitHubToken:                "ghp_…",
		"sk-proj-Ab12Cd34Ef56Gh78Ij90": "sk-p…",
		exampleJWT:                     "eyJh…",
		"hunter2":                      "hu…",
		"ab":                           "…",
		"":                             "…",
		"ééééééééééé":                  "éé…",
	} {
		if got := maskSecret(in); got != want {
			t.Errorf("maskSecret(%q) = %q, want %q", in, got, want)
		}
	}
}
