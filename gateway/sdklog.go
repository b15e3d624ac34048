package gateway

import (
	"context"
	"log/slog"
	"strings"
)

// sdkLogger returns the logger the MCP SDK's servers, clients and HTTP
// handlers log through: log, with the SDK's records brought to the levels
// an operator reads them at.
//
//   - The SDK's INFO records are DEBUG. They follow sessions and
//     subscriptions ("server session connected", "session initialized",
//     "server session disconnected" for each session, again at shutdown),
//     which toolgate reports itself, once per session.
//   - A WARN for a notification that the transport rejected is DEBUG. A
//     change of the lists (a reload, an upstream's list_changed) is sent
//     to every session, and a session without an open event stream cannot
//     take it; its client lists again when it next opens one or asks.
//
// Everything else keeps its level: a warning or an error of the SDK is a
// problem to see.
func sdkLogger(log *slog.Logger) *slog.Logger {
	return slog.New(sdkHandler{log.Handler()})
}

// sdkHandler is the slog.Handler of sdkLogger.
type sdkHandler struct{ h slog.Handler }

var _ slog.Handler = sdkHandler{}

func (s sdkHandler) Enabled(ctx context.Context, level slog.Level) bool {
	if level == slog.LevelInfo {
		level = slog.LevelDebug
	}
	return s.h.Enabled(ctx, level)
}

func (s sdkHandler) Handle(ctx context.Context, r slog.Record) error {
	if level := sdkLevel(r); level != r.Level {
		if !s.h.Enabled(ctx, level) {
			return nil
		}
		r.Level = level
	}
	return s.h.Handle(ctx, r)
}

func (s sdkHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return sdkHandler{s.h.WithAttrs(attrs)}
}

func (s sdkHandler) WithGroup(name string) slog.Handler {
	return sdkHandler{s.h.WithGroup(name)}
}

// rejectedNote is what the SDK's warning for an undelivered notification
// says: "calling notifications/…: rejected by transport: …" (the text of
// the JSON-RPC error codeRejected).
const rejectedNote = "rejected by transport"

// sdkLevel is the level at which toolgate logs the SDK's record r.
func sdkLevel(r slog.Record) slog.Level {
	switch {
	case r.Level == slog.LevelInfo:
		return slog.LevelDebug
	case r.Level == slog.LevelWarn && strings.HasPrefix(r.Message, "calling notifications/") && strings.Contains(r.Message, rejectedNote):
		return slog.LevelDebug
	}
	return r.Level
}
