package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// Modes of the control endpoint.
const (
	modeOK      = "ok"      // behave
	modeSlow    = "slow"    // every tool call waits delayMs before it is handled
	modeHang    = "hang"    // answer the handshake, then no request at all
	modeGarbage = "garbage" // stdio: junk lines instead of answers; HTTP: a non-JSON body for every POST
	modeCrash   = "crash"   // answer the control request, then exit 3
)

// fault is the misbehaviour chosen at run time through the control
// endpoint.
type fault struct {
	Mode    string `json:"mode"`
	DelayMs int    `json:"delayMs"`
}

// maxDelayMs bounds the slow mode's delay (one hour).
const maxDelayMs = 3_600_000

func (st *state) currentFault() fault {
	if f := st.fault.Load(); f != nil {
		return *f
	}
	return fault{Mode: modeOK}
}

// parseFault decodes and checks the body of POST /control.
func parseFault(body []byte) (fault, error) {
	var f fault
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return f, fmt.Errorf(`want {"mode": "ok|slow|hang|garbage|crash", "delayMs": N}: %v`, err)
	}
	switch f.Mode {
	case modeOK, modeHang, modeGarbage, modeCrash:
		if f.DelayMs != 0 {
			return f, fmt.Errorf("delayMs is only for mode %q, not %q", modeSlow, f.Mode)
		}
	case modeSlow:
		if f.DelayMs <= 0 || f.DelayMs > maxDelayMs {
			return f, fmt.Errorf("mode %q needs delayMs between 1 and %d, not %d", modeSlow, maxDelayMs, f.DelayMs)
		}
	default:
		return f, fmt.Errorf("unknown mode %q (want ok, slow, hang, garbage or crash)", f.Mode)
	}
	return f, nil
}

// controlHandler serves GET /control (the current mode and the pid) and
// POST /control (set the mode).
func (st *state) controlHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
		case http.MethodPost:
			body, err := readAllLimited(r, 4096)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			f, err := parseFault(body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if f.Mode == modeCrash {
				// Answer completely (with a length, so the client reads the
				// whole body), then exit.
				b, _ := json.Marshal(map[string]any{"mode": modeCrash, "delayMs": 0, "pid": os.Getpid()})
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Content-Length", strconv.Itoa(len(b)))
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write(b)
				if fl, ok := w.(http.Flusher); ok {
					fl.Flush()
				}
				log.Printf("crashing as asked (control endpoint)")
				st.exit(3)
				return
			}
			log.Printf("control: mode %s (delay %d ms)", f.Mode, f.DelayMs)
			st.fault.Store(&f)
		default:
			w.Header().Set("Allow", "GET, POST")
			http.Error(w, "use GET or POST", http.StatusMethodNotAllowed)
			return
		}
		f := st.currentFault()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"mode": f.Mode, "delayMs": f.DelayMs, "pid": os.Getpid()})
	})
}

func readAllLimited(r *http.Request, n int64) ([]byte, error) {
	var b bytes.Buffer
	if _, err := b.ReadFrom(http.MaxBytesReader(nil, r.Body, n)); err != nil {
		return nil, fmt.Errorf("reading the body: %v", err)
	}
	return b.Bytes(), nil
}

// garbageHTTP answers every POST with a body that is not JSON-RPC while the
// mode is garbage; otherwise it passes the request to next.
func (st *state) garbageHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && st.currentFault().Mode == modeGarbage {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte(strings.Repeat("garbage: this is not JSON-RPC ", 3) + "{\"jsonrpc\": oops\n"))
			return
		}
		next.ServeHTTP(w, r)
	})
}
