package gateway

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// The MCP SDK's session records and its warnings for notifications no
// stream took are DEBUG; its other warnings and errors keep their level.
func TestSDKLogger(t *testing.T) {
	tests := []struct {
		name  string
		level slog.Level
		msg   string
		info  string // the level logged at INFO, "" for none
		debug string // the level logged at DEBUG
	}{
		{"session", slog.LevelInfo, "server session connected", "", "DEBUG"},
		{"disconnect", slog.LevelInfo, "server session disconnected", "", "DEBUG"},
		{"debug", slog.LevelDebug, "anything", "", "DEBUG"},
		{"no stream", slog.LevelWarn, "calling notifications/tools/list_changed: rejected by transport: undelivered message: stream not connected or already closed", "", "DEBUG"},
		{"closed stream", slog.LevelWarn, "calling notifications/resources/updated: rejected by transport: write to closed stream", "", "DEBUG"},
		{"other notification failure", slog.LevelWarn, "calling notifications/tools/list_changed: session is closed", "WARN", "WARN"},
		{"other warning", slog.LevelWarn, "keepalive ping failed; tolerating below threshold", "WARN", "WARN"},
		{"error", slog.LevelError, "failed to connect: rejected by transport", "ERROR", "ERROR"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, at := range []struct {
				level slog.Level
				want  string
			}{{slog.LevelInfo, tc.info}, {slog.LevelDebug, tc.debug}} {
				var buf bytes.Buffer
				log := sdkLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: at.level})).With("project", "p"))
				log.Log(t.Context(), tc.level, tc.msg, "k", "v")
				out := buf.String()
				if at.want == "" {
					if out != "" {
						t.Errorf("at %v: logged %q, want nothing", at.level, out)
					}
					continue
				}
				if !strings.Contains(out, "level="+at.want+" ") || !strings.Contains(out, "project=p k=v") {
					t.Errorf("at %v: logged %q, want level %s with the attributes", at.level, out, at.want)
				}
			}
		})
	}
}
