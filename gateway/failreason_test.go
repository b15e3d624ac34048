package gateway

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/toolgate/toolgate/internal/config"
)

// The tail of an upstream's stderr keeps the last stderrTailLines lines,
// oldest first, each at most stderrTailLineBytes long and valid UTF-8,
// without the server's configured secrets, even where a line is cut.
// (TestStderrAlwaysDrained has lines longer than what is read of them.)
func TestStderrTail(t *testing.T) {
	const secret = "sk-0123456789abcdef"
	long := strings.Repeat("é", 1000)
	tests := []struct {
		name  string
		lines []string
		want  []string
	}{
		{"empty", nil, nil},
		{"a few", []string{"one", "two"}, []string{"one", "two"}},
		{
			"the last lines",
			func() (l []string) {
				for i := range 25 {
					l = append(l, fmt.Sprintf("line %d", i))
				}
				return l
			}(),
			[]string{"line 15", "line 16", "line 17", "line 18", "line 19", "line 20", "line 21", "line 22", "line 23", "line 24"},
		},
		{"a long line", []string{long}, []string{strings.Repeat("é", 248) + "…[2000 bytes]"}},
		{
			"secrets",
			// The third line is cut inside the secret's place.
			[]string{"token " + secret + " refused", "Bearer " + secret, strings.Repeat("x", 490) + secret + strings.Repeat("y", 20)},
			[]string{"token [redacted] refused", "[redacted]", strings.Repeat("x", 490) + "[redacte…[520 bytes]"},
		},
	}
	redact := redactor(&config.Server{Env: map[string]string{"KEY": secret, "DEBUG": "1"}, Headers: map[string]string{"Authorization": "Bearer " + secret}})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tail := newStderrTail(redact)
			var stderr strings.Builder
			for _, l := range tc.lines {
				stderr.WriteString(l + "\n")
			}
			logLines(strings.NewReader(stderr.String()), slog.New(slog.DiscardHandler), tail)
			got := tail.last()
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("tail (-want +got):\n%s", diff)
			}
			for _, l := range got {
				if len(l) > stderrTailLineBytes || !utf8.ValidString(l) || strings.Contains(l, secret[:6]) {
					t.Errorf("kept line %q: %d bytes, or invalid UTF-8, or a secret", l, len(l))
				}
			}
			err := tail.explain(errors.New(`calling "initialize": EOF`))
			if got := stderrOf(fmt.Errorf("connecting: %w", err)); !cmp.Equal(got, tc.want) {
				t.Errorf("stderrOf = %q, want %q", got, tc.want)
			}
			if err.Error() != `calling "initialize": EOF` {
				t.Errorf("the error says %q: the lines go beside it", err)
			}
		})
	}
}

// An HTTP upstream's first error answer during the handshake is kept as
// its status and an excerpt of its body, redacted, on one line and
// bounded; the body is given back whole to its reader.
func TestHTTPRefusal(t *testing.T) {
	const secret = "tok-0123456789abcdef"
	long := strings.Repeat("a", httpExcerptBytes-8) + secret + strings.Repeat("b", 10000)
	tests := []struct {
		name    string
		method  string
		status  int
		body    string
		explain string // what is added to the error
	}{
		{"401", "POST", 401, `{"error":"invalid_token","token":"` + secret + `"}`, `; the server answered 401 Unauthorized: {"error":"invalid_token","token":"[redacted]"}`},
		{"no body", "POST", 404, "", "; the server answered 404 Not Found"},
		{"html", "GET", 502, "<html>\n  <body>bad\tgateway</body>\r\n</html>\n", "; the server answered 502 Bad Gateway: <html> <body>bad gateway</body> </html>"},
		{"long", "POST", 500, long, "; the server answered 500 Internal Server Error: " + strings.Repeat("a", httpExcerptBytes-8) + "[reda…"},
		{"invalid UTF-8", "POST", 400, "bad \xff\xfe byte", "; the server answered 400 Bad Request: bad \uFFFD byte"},
		{"no event stream", "GET", 405, "method not allowed", ""},
		{"closing", "DELETE", 404, "gone", ""},
		{"success", "POST", 200, "{}", ""},
	}
	redact := redactor(&config.Server{Headers: map[string]string{"X-Api-Key": secret}})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &httpRefusal{redact: redact}
			req, _ := http.NewRequest(tc.method, "http://upstream.test/mcp", nil)
			resp := &http.Response{StatusCode: tc.status, Status: fmt.Sprintf("%d Whatever The Server Says", tc.status), Body: io.NopCloser(strings.NewReader(tc.body))}
			r.record(req, resp)
			if b, _ := io.ReadAll(resp.Body); string(b) != tc.body {
				t.Errorf("the body read after the record is %d bytes, want the %d sent", len(b), len(tc.body))
			}
			base := errors.New("sending \"initialize\": Unauthorized")
			err := r.explain(base)
			if got := strings.TrimPrefix(err.Error(), base.Error()); got != tc.explain {
				t.Errorf("explained:\n got %q\nwant %q", got, tc.explain)
			}
			if !errors.Is(err, base) {
				t.Error("the explained error does not wrap the failure")
			}
			if len(err.Error()) > len(base.Error())+httpExcerptBytes+64 {
				t.Errorf("the explained error is %d bytes", len(err.Error()))
			}
		})
	}

	t.Run("the first answer", func(t *testing.T) {
		r := &httpRefusal{}
		req, _ := http.NewRequest("POST", "http://upstream.test/mcp", nil)
		for _, code := range []int{401, 500} {
			r.record(req, &http.Response{StatusCode: code, Body: io.NopCloser(strings.NewReader(fmt.Sprint(code)))})
		}
		r.stop()
		r.record(req, &http.Response{StatusCode: 403, Body: io.NopCloser(strings.NewReader("after"))})
		if got := r.explain(errors.New("x")).Error(); got != "x; the server answered 401 Unauthorized: 401" {
			t.Errorf("explained: %q", got)
		}
	})
}

// Values shorter than redactedMin are not secrets: they would blank out
// ordinary words.
func TestRedactor(t *testing.T) {
	if r := redactor(&config.Server{Env: map[string]string{"DEBUG": "1", "MODE": "json"}}); r != nil {
		t.Errorf("redactor for short values = %v, want nil", r)
	}
	r := redactor(&config.Server{
		Env:     map[string]string{"A": "abcdefgh", "B": "abcdefghij"},
		Headers: map[string]string{"Authorization": "Basic dXNlcjpwYXNz"},
	})
	got := r.Replace("abcdefghij abcdefgh Basic dXNlcjpwYXNz dXNlcjpwYXNz Basic")
	if want := "[redacted] [redacted] [redacted] [redacted] Basic"; got != want {
		t.Errorf("redacted %q, want %q", got, want)
	}
}
