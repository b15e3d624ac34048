package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/toolgate/toolgate/callerr"
	"github.com/toolgate/toolgate/internal/config"
)

// begin admits a call as the tool path does: a slot, and the context the
// call runs under.
func begin(l *lifecycle, ctx context.Context, limit int, session string) (context.Context, func(), *refusal) {
	s, r := l.take(limit, session)
	if r != nil {
		return nil, nil, r
	}
	return s.bind(ctx), s.done, nil
}

func TestLifecycleAdmission(t *testing.T) {
	var l lifecycle
	_, done1, r := begin(&l, context.Background(), 2, "")
	if r != nil {
		t.Fatalf("first call refused: %v", r.message)
	}
	_, done2, r := begin(&l, context.Background(), 2, "")
	if r != nil {
		t.Fatalf("second call refused: %v", r.message)
	}
	if _, _, r := begin(&l, context.Background(), 2, ""); r == nil || r.callCode != callerr.Overloaded || r.retryAfter <= 0 {
		t.Fatalf("third call = %v, want overloaded with a retry hint", r)
	}
	_, done3, r := begin(&l, context.Background(), 0, "")
	if r != nil {
		t.Fatalf("a cap of 0 means none, got %v", r.message)
	}
	done3()
	done1()
	done1() // twice is harmless
	if _, done, r := begin(&l, context.Background(), 2, ""); r != nil {
		t.Fatalf("after one call ended: %v", r.message)
	} else {
		done()
	}
	if n := l.inFlight(); n != 1 {
		t.Fatalf("in flight = %d, want 1", n)
	}

	idle := l.drain(time.Second)
	select {
	case <-idle:
		t.Fatal("idle with a call in flight")
	default:
	}
	if _, _, r := begin(&l, context.Background(), 0, ""); r == nil || r.code != codeShuttingDown {
		t.Fatalf("call while draining = %v, want shutting down", r)
	}
	if _, _, r := l.stream(context.Background(), ""); r == nil || r.code != codeShuttingDown {
		t.Fatalf("stream while draining = %v, want shutting down", r)
	}
	done2()
	select {
	case <-idle:
	case <-time.After(5 * time.Second):
		t.Fatal("not idle once the last call ended")
	}
	select {
	case <-l.drain(time.Second):
	default:
		t.Fatal("a second drain of an idle gateway does not report idle")
	}
}

func TestLifecycleDrainClosesStreamsAndCancelsCalls(t *testing.T) {
	var l lifecycle
	sctx, release, r := l.stream(context.Background(), "a")
	if r != nil {
		t.Fatal(r.message)
	}
	defer release()
	cctx, done, r := begin(&l, context.Background(), 0, "b")
	if r != nil {
		t.Fatal(r.message)
	}
	idle := l.drain(time.Minute)
	if sctx.Err() == nil {
		t.Error("the event stream is still open after drain")
	}
	if cctx.Err() != nil {
		t.Error("drain cancelled a call in flight")
	}
	if n := l.cancelAll(); n != 1 {
		t.Errorf("cancelAll = %d, want 1", n)
	}
	if !errors.Is(context.Cause(cctx), errShutdown) {
		t.Errorf("cause = %v, want errShutdown", context.Cause(cctx))
	}
	done()
	<-idle
}

// A call admitted before a shutdown's grace period ended but not yet
// running (the access layer admits a call before the MCP SDK hands it to
// its handler) runs cancelled.
func TestLifecycleCancelBeforeBind(t *testing.T) {
	var l lifecycle
	s, r := l.take(0, "")
	if r != nil {
		t.Fatal(r.message)
	}
	l.drain(time.Minute)
	if n := l.cancelAll(); n != 1 {
		t.Errorf("cancelAll = %d, want 1", n)
	}
	ctx := s.bind(context.Background())
	if !errors.Is(context.Cause(ctx), errShutdown) {
		t.Errorf("cause = %v, want errShutdown", context.Cause(ctx))
	}
	s.done()
	if n := l.inFlight(); n != 0 {
		t.Errorf("in flight = %d, want 0", n)
	}
}

// The event stream of a session with a call in flight stays open through
// the drain until that call ends: the call's progress and relayed requests
// travel on it. The streams of idle sessions close at once.
func TestLifecycleStreamsOfBusySessions(t *testing.T) {
	var l lifecycle
	busy, releaseBusy, _ := l.stream(context.Background(), "busy")
	defer releaseBusy()
	idle, releaseIdle, _ := l.stream(context.Background(), "idle")
	defer releaseIdle()
	_, done, _ := begin(&l, context.Background(), 0, "busy")
	_, doneOther, _ := begin(&l, context.Background(), 0, "busy")
	l.drain(time.Minute)
	if idle.Err() == nil {
		t.Error("the stream of an idle session is open after drain")
	}
	if busy.Err() != nil {
		t.Fatal("the stream of a session with calls in flight closed at drain")
	}
	done()
	if busy.Err() != nil {
		t.Fatal("the stream closed while a call of its session is in flight")
	}
	doneOther()
	if busy.Err() == nil {
		t.Error("the stream is open after the session's last call ended")
	}
}

// Shutdown returns at once when nothing is in flight, waits for the calls
// that are, and cancels those still running at its deadline.
func TestGatewayShutdown(t *testing.T) {
	quiet := &Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	t.Run("calls finish", func(t *testing.T) {
		g := New(&config.Config{}, quiet)
		t.Cleanup(g.Close)
		_, done, _ := begin(&g.life, context.Background(), 0, "")
		time.AfterFunc(50*time.Millisecond, done)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := g.Shutdown(ctx); err != nil {
			t.Fatalf("Shutdown = %v", err)
		}
		if !g.Draining() {
			t.Error("not draining after Shutdown")
		}
	})
	t.Run("calls cancelled at the deadline", func(t *testing.T) {
		g := New(&config.Config{}, quiet)
		t.Cleanup(g.Close)
		cctx, done, _ := begin(&g.life, context.Background(), 0, "")
		go func() { <-cctx.Done(); done() }()
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		err := g.Shutdown(ctx)
		if err == nil || !errors.Is(context.Cause(cctx), errShutdown) {
			t.Fatalf("Shutdown = %v, cause %v; want the call cancelled", err, context.Cause(cctx))
		}
		if g.InFlight() != 0 {
			t.Errorf("in flight after Shutdown = %d", g.InFlight())
		}
	})
}

// BenchmarkAdmitCall measures what admission adds to every tools/call:
// taking a slot, binding the call's cancellable context to it, and giving
// it back.
func BenchmarkAdmitCall(b *testing.B) {
	var l lifecycle
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s, r := l.take(256, "s")
			if r != nil {
				b.Fatal(r.message)
			}
			_ = s.bind(ctx)
			s.done()
		}
	})
}
