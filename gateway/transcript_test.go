package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"

	"github.com/toolgate/toolgate/internal/config"
)

var update = flag.Bool("update", false, "rewrite the answers in testdata/transcripts.txtar")

const transcriptsFile = "testdata/transcripts.txtar"

// archive is a txtar archive: a comment, then files each introduced by a
// line "-- name --".
type archive struct {
	comment string
	files   []archiveFile
}

type archiveFile struct {
	name string
	data string
}

func parseArchive(text string) archive {
	var a archive
	cur := &a.comment
	for line := range strings.SplitAfterSeq(text, "\n") {
		trimmed := strings.TrimRight(line, "\n")
		if name, ok := strings.CutPrefix(trimmed, "-- "); ok && strings.HasSuffix(name, " --") {
			a.files = append(a.files, archiveFile{name: strings.TrimSuffix(name, " --")})
			cur = &a.files[len(a.files)-1].data
			continue
		}
		*cur += line
	}
	return a
}

func (a archive) format() string {
	var b strings.Builder
	b.WriteString(a.comment)
	for _, f := range a.files {
		fmt.Fprintf(&b, "-- %s --\n%s", f.name, f.data)
	}
	return b.String()
}

// transcriptRequest is one request of the table.
type transcriptRequest struct {
	method      string
	session     string // "", "session", "other", "closed", "unknown"
	key         string // "first", "second", "none"
	inflight    string // the id of a call in flight meanwhile, as JSON
	inflightSDK bool   // that call goes to the SDK
	header      http.Header
	body        string
}

func parseTranscriptRequest(t *testing.T, name, text string) transcriptRequest {
	t.Helper()
	head, body, _ := strings.Cut(text, "\n\n")
	lines := strings.Split(head, "\n")
	words := strings.Fields(lines[0])
	if len(words) == 0 {
		t.Fatalf("%s: no method", name)
	}
	req := transcriptRequest{method: words[0], key: "first", header: http.Header{}, body: strings.TrimSuffix(body, "\n")}
	for _, w := range words[1:] {
		k, v, _ := strings.Cut(w, "=")
		switch k {
		case "session":
			req.session = "session"
			if v != "" {
				req.session = v
			}
		case "key":
			req.key = v
		case "inflight", "inflight-sdk":
			req.inflight, req.inflightSDK = v, k == "inflight-sdk"
		default:
			t.Fatalf("%s: unknown option %q", name, w)
		}
	}
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			t.Fatalf("%s: bad header line %q", name, l)
		}
		req.header.Add(k, strings.TrimSpace(v))
	}
	return req
}

// transcriptHeaders are the answer's headers a transcript records.
var transcriptHeaders = []string{"Allow", "Cache-Control", "Content-Type", "Mcp-Session-Id", "Retry-After", "Www-Authenticate", "X-Content-Type-Options"}

// answerText renders an answer for the transcript.
func answerText(t *testing.T, resp *http.Response) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "status: %d\n", resp.StatusCode)
	for _, h := range transcriptHeaders {
		for _, v := range resp.Header.Values(h) {
			if h == "Mcp-Session-Id" {
				v = "(an id)"
			}
			fmt.Fprintf(&b, "%s: %s\n", h, v)
		}
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	var msgs []string
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		sc := bufio.NewScanner(bytes.NewReader(body))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				msgs = append(msgs, canonicalJSON(data))
			}
		}
	} else if s := strings.TrimSpace(string(body)); s != "" {
		msgs = append(msgs, canonicalJSON(s))
	}
	if len(msgs) > 0 {
		// The gateway's version depends on the build; the transcript
		// shows a placeholder in its place.
		text := strings.ReplaceAll(strings.Join(msgs, "\n"), `"version":`+strconv.Quote(Version), `"version":"(toolgate version)"`)
		b.WriteString("\n" + text + "\n")
	}
	return b.String()
}

// canonicalJSON re-encodes a JSON text with sorted keys; text that is not
// JSON is kept, marked.
func canonicalJSON(s string) string {
	var v any
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return "(not JSON) " + s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// transcriptMode is one way of answering.
type transcriptMode struct {
	name          string
	direct        bool // the access layer answers the calls it can
	checks        bool // the access layer does the transport's checks
	byAccessLayer bool // answers may come from the access layer
}

var transcriptModes = []transcriptMode{
	{"access layer answering", true, true, true},
	{"SDK answering", false, true, false},
	{"SDK checking and answering", false, false, false},
}

// TestTranscripts replays testdata/transcripts.txtar with the access
// layer's answers on and off, and with its transport checks off, and
// expects the same answers each time: one request, one answer, whoever
// gives it. The counter of calls the access layer answered must move
// exactly for the requests the transcripts say it answers, so the test
// fails when the access layer stops serving.
func TestTranscripts(t *testing.T) {
	raw, err := os.ReadFile(transcriptsFile)
	if err != nil {
		t.Fatal(err)
	}
	ar := parseArchive(string(raw))
	f := newHTTPFixture(t)
	defer func() { directCallsOn.Store(true); transportChecksOn.Store(true) }()

	var updated []archiveFile
	answers := map[string]string{}
	for _, file := range ar.files {
		if strings.HasSuffix(file.name, ".answer") {
			answers[strings.TrimSuffix(file.name, ".answer")] = file.data
		}
	}
	for mi, mode := range transcriptModes {
		directCallsOn.Store(mode.direct)
		transportChecksOn.Store(mode.checks)
		sessions := map[string]string{
			"session": f.session(t, f.keys[0]),
			"other":   f.session(t, f.keys[1]),
			"unknown": "NOSUCHSESSIONID",
		}
		closed := f.session(t, f.keys[0])
		f.deleteSession(t, f.keys[0], closed)
		sessions["closed"] = closed
		for _, file := range ar.files {
			if strings.HasSuffix(file.name, ".answer") {
				continue
			}
			req := parseTranscriptRequest(t, file.name, file.data)
			got := f.replay(t, req, sessions)
			if mi == 0 && *update {
				updated = append(updated, file, archiveFile{name: file.name + ".answer", data: got})
				answers[file.name] = got
				continue
			}
			want, ok := answers[file.name]
			if !ok {
				t.Errorf("%s: no answer in %s (run with -update)", file.name, transcriptsFile)
				continue
			}
			if !mode.byAccessLayer {
				want = strings.Replace(want, "access layer: yes\n", "access layer: no\n", 1)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s, %s (-want +got):\n%s", file.name, mode.name, diff)
			}
		}
		if mi == 0 && *update {
			ar.files = updated
			if err := os.WriteFile(transcriptsFile, []byte(ar.format()), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The access layer must have served: a table where it answers nothing
	// proves nothing.
	served := 0
	for _, a := range answers {
		if strings.HasPrefix(a, "access layer: yes") {
			served++
		}
	}
	if served < 10 {
		t.Errorf("the access layer answered %d requests of the table", served)
	}
}

// replay sends req (after starting its call in flight, if any) and
// returns the answer as a transcript records it.
func (f *httpFixture) replay(t *testing.T, req transcriptRequest, sessions map[string]string) string {
	t.Helper()
	sid := sessions[req.session]
	key := map[string]string{"first": f.keys[0], "second": f.keys[1], "none": ""}[req.key]
	if req.inflight != "" {
		meta := ""
		if req.inflightSDK {
			meta = `,"_meta":{"x":1}`
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			f.post(t, f.keys[0], sid, `{"jsonrpc":"2.0","id":`+req.inflight+`,"method":"tools/call","params":{"name":"demo__slow"`+meta+`}}`)
		}()
		select {
		case <-f.started:
		case <-time.After(10 * time.Second):
			t.Fatal("the call in flight did not reach the upstream")
		}
		defer func() {
			if code, _, msg := f.post(t, f.keys[0], sid, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":`+req.inflight+`}}`); code != http.StatusAccepted {
				t.Errorf("cancel: %d %s", code, msg)
			}
			select {
			case <-f.cancelled:
			case <-time.After(10 * time.Second):
				t.Error("the call in flight was not cancelled")
			}
			<-done
		}()
	}
	hr, err := http.NewRequest(req.method, f.url, strings.NewReader(req.body))
	if err != nil {
		t.Fatal(err)
	}
	hr.Header = req.header.Clone()
	if key != "" {
		hr.Header.Set("Authorization", "Bearer "+key)
	}
	if sid != "" {
		hr.Header.Set("Mcp-Session-Id", sid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	before := f.accessCalls(t)
	resp, err := http.DefaultClient.Do(hr.WithContext(ctx))
	if err != nil {
		t.Fatalf("%s %v: %v", req.method, req.header, err)
	}
	defer resp.Body.Close()
	text := answerText(t, resp)
	switch d := f.accessCalls(t) - before; d {
	case 0:
		return "access layer: no\n" + text
	case 1:
		return "access layer: yes\n" + text
	default:
		t.Fatalf("the access layer answered %v calls", d)
		return ""
	}
}

// accessCalls reads the counter of calls the access layer answered.
func (f *httpFixture) accessCalls(t *testing.T) float64 {
	t.Helper()
	var m dto.Metric
	if err := f.g.metrics.accessCalls.WithLabelValues(config.DefaultProject).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// deleteSession closes session sid with a DELETE.
func (f *httpFixture) deleteSession(t *testing.T, key, sid string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, f.url, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Mcp-Session-Id", sid)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: status %d", resp.StatusCode)
	}
}
