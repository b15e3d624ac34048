package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"time"

	"github.com/toolgate/toolgate/internal/clip"
)

// The caps of an event's fields, in bytes of their JSON encoding (quotes
// and escapes included). Together they keep a line within
// MaxEventBytes.
const (
	capID    = 128 // project, ids, address, decision, outcome, method, hashes
	capName  = 256 // server, tool, host, key name, subject
	capText  = 900 // reason, error
	capItem  = 128 // one item of a list (limitsHit, changed)
	capList  = 512 // a whole list
	capExtra = 512 // extra, encoded
)

// capFields cuts every field of e to its cap and records in e.Clipped what
// it cut. e is the log's own copy of an event: the slices and the map it
// shares with the caller's event are replaced, never modified. Values
// that cannot be encoded (a time outside years 0-9999, a NaN, an Extra
// holding a channel) are replaced, so that the event always encodes.
func capFields(e *Event, now func() time.Time) {
	e.Clipped = nil
	note := func(name string, full []byte, why string) {
		if e.Clipped == nil {
			e.Clipped = map[string]Clipped{}
		}
		c := Clipped{Bytes: int64(len(full)), Note: why}
		if full != nil {
			sum := sha256.Sum256(full)
			c.SHA256 = hex.EncodeToString(sum[:])
		}
		e.Clipped[name] = c
	}
	str := func(name string, p *string, n int) {
		if len(*p) <= n/6-2 || clip.JSONLen(*p) <= n {
			return
		}
		note(name, []byte(*p), "")
		*p = clip.JSON(*p, n)
	}
	for _, f := range [...]struct {
		name string
		p    *string
		n    int
	}{
		{"project", &e.Project, capID}, {"keyId", &e.KeyID, capID}, {"clientIp", &e.ClientIP, capID},
		{"executionId", &e.ExecutionID, capID}, {"decision", &e.Decision, capID}, {"outcome", &e.Outcome, capID},
		{"argsSha256", &e.ArgsSHA256, capID}, {"method", &e.Method, capID}, {"newKeyId", &e.NewKeyID, capID},
		{"oldHash", &e.OldHash, capID}, {"newHash", &e.NewHash, capID},
		{"server", &e.Server, capName}, {"tool", &e.Tool, capName}, {"host", &e.Host, capName}, {"keyName", &e.KeyName, capName},
		{"subject", &e.Subject, capName},
		{"reason", &e.Reason, capText}, {"error", &e.Error, capText},
	} {
		str(f.name, f.p, f.n)
	}
	list := func(name string, p *[]string) {
		if len(*p) == 0 {
			return
		}
		size, cut := 2, false
		out := make([]string, 0, len(*p))
		for _, s := range *p {
			c := s
			if len(c) > capItem/6-2 && clip.JSONLen(c) > capItem {
				c, cut = clip.JSON(c, capItem), true
			}
			if size += clip.JSONLen(c) + 1; size > capList {
				cut = true
				break
			}
			out = append(out, c)
		}
		if cut {
			full, _ := json.Marshal(*p)
			note(name, full, "")
		}
		*p = out
	}
	list("limitsHit", &e.LimitsHit)
	list("changed", &e.Changed)
	if e.Extra != nil {
		b, err := json.Marshal(e.Extra)
		switch {
		case err != nil:
			note("extra", nil, "left out: it does not encode as JSON")
			e.Extra = nil
		case len(b) > capExtra:
			note("extra", b, "left out: longer than its cap")
			e.Extra = nil
		}
	}
	for _, f := range [...]*float64{&e.LatencyMs, &e.DurationMs} {
		if math.IsNaN(*f) || math.IsInf(*f, 0) {
			*f = 0
		}
	}
	if y := e.Time.Year(); y < 0 || y > 9999 {
		e.Time = now()
	}
}
