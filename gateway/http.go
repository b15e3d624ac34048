package gateway

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/toolgate/toolgate/internal/config"
)

// Handler returns the gateway's HTTP routes:
//
//	/mcp                 the default project (streamable HTTP)
//	/v1/mcp/{project}    any project
//	/.well-known/oauth-protected-resource[/mcp | /v1/mcp/{project}]
//	                     a project's protected resource metadata (RFC
//	                     9728): the default project's without a path
//	/healthz             liveness, always 200 while the process serves
//	/readyz              200 when every enabled upstream is ready, else 503
//	                     (503 with "draining": true once a shutdown began)
//	/metrics             Prometheus text (behind the gateway's IP rules)
//
// Every route but /healthz first checks the Host and Origin headers
// (hosts.go): the project's endpoints with the project's lists, the others
// with the gateway's.
func (g *Gateway) Handler() http.Handler {
	started := time.Now()
	mux := http.NewServeMux()
	mux.HandleFunc("/mcp", func(w http.ResponseWriter, r *http.Request) {
		g.serveProject(w, r, config.DefaultProject)
	})
	mux.HandleFunc("/v1/mcp/{project}", func(w http.ResponseWriter, r *http.Request) {
		g.serveProject(w, r, r.PathValue("project"))
	})
	g.handleMetadata(mux) // authn.go
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{
			"status":  "ok",
			"version": Version,
			"uptime":  time.Since(started).Round(time.Second).String(),
		})
	})
	metrics := g.Metrics()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		// The gateway's own IP rules guard metrics; for more, serve them on
		// a listener of their own (metrics.listen).
		a := g.accessPolicy()
		if !g.checkHostOrigin(w, r, a.hosts, "") {
			return
		}
		ip, err := a.proxies.ClientIP(r.RemoteAddr, r.Header.Values("X-Forwarded-For"))
		if err != nil || !a.ips.Allows(ip) {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		metrics.ServeHTTP(w, r)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !g.checkHostOrigin(w, r, g.accessPolicy().hosts, "") {
			return
		}
		ready, projects := g.Status()
		body := map[string]any{"ready": ready, "projects": projects}
		if g.Draining() {
			// Shutting down: load balancers stop sending new clients.
			ready = false
			body["ready"], body["draining"] = false, true
		}
		code := http.StatusOK
		if !ready {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, body)
	})
	return mux
}

func (g *Gateway) serveProject(w http.ResponseWriter, r *http.Request, name string) {
	p := g.project(name)
	if p == nil {
		if !g.checkHostOrigin(w, r, g.accessPolicy().hosts, "") {
			return
		}
		writeJSON(w, http.StatusNotFound, map[string]any{
			"jsonrpc": "2.0", "id": nil,
			"error": map[string]any{"code": -32600, "message": "unknown project " + quote(name)},
		})
		return
	}
	p.guarded.ServeHTTP(w, r)
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
