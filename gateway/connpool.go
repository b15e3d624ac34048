package gateway

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// connPool is an http.RoundTripper for the tool calls of one plain-HTTP
// upstream: a pool of HTTP/1.1 connections on which the calling goroutine
// writes the request and reads the response itself, in net/http's own
// wire format (Request.Write, ReadResponse). http.Transport keeps two
// goroutines per connection that hand every request and response over to
// the caller; on a small machine each hand-off wakes a thread (what doing
// without them saves is measured in benchmarks/README.md). HTTPS
// upstreams keep http.Transport, with its TLS sessions and HTTP/2: a
// remote server's round trip dwarfs the hand-offs.
//
// A response's body must be closed; a connection goes back to the pool
// when its body was read to the end, and is closed otherwise. A request
// whose context ends has its connection's reads and writes fail at once.
type connPool struct {
	addr   string // host:port
	dialer net.Dialer

	mu     sync.Mutex
	idle   []*poolConn // most recently used last
	closed bool
}

const (
	// poolMaxIdle and poolIdleTimeout are http.DefaultTransport's limits
	// for one host (MaxIdleConnsPerHost as toolgate sets it).
	poolMaxIdle     = 64
	poolIdleTimeout = 90 * time.Second
)

// poolConn is one connection with its buffers.
type poolConn struct {
	conn      net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
}

// newConnPool returns a pool for the server of u, or nil when u's scheme
// is not http or the platform cannot peek at an idle connection (see
// connPeeks), which leaves the calls to http.Transport.
func newConnPool(u *url.URL) *connPool {
	if u.Scheme != "http" || !connPeeks {
		return nil
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	return &connPool{
		addr:   net.JoinHostPort(u.Hostname(), port),
		dialer: net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}, // http.DefaultTransport's
	}
}

// RoundTrip sends req on a pooled connection, or a new one, and reads the
// response's header.
func (p *connPool) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	pc, err := p.get(ctx)
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { pc.conn.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*http.Response, error) {
		stop()
		pc.conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if err := req.Write(pc.bw); err != nil {
		return fail(err)
	}
	if err := pc.bw.Flush(); err != nil {
		return fail(err)
	}
	resp, err := http.ReadResponse(pc.br, req)
	// Informational answers (103 Early Hints) precede the real one.
	for err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
		resp, err = http.ReadResponse(pc.br, req)
	}
	if err != nil {
		return fail(err)
	}
	resp.Body = &pooledBody{body: resp.Body, pool: p, pc: pc, stop: stop, keep: !resp.Close}
	return resp, nil
}

// get returns an idle connection that is still open, or a new one.
func (p *connPool) get(ctx context.Context) (*poolConn, error) {
	p.mu.Lock()
	for len(p.idle) > 0 {
		pc := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		p.mu.Unlock()
		if time.Since(pc.idleSince) < poolIdleTimeout && pc.open() {
			return pc, nil
		}
		pc.conn.Close()
		p.mu.Lock()
	}
	p.mu.Unlock()
	conn, err := p.dialer.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	return &poolConn{conn: conn, br: bufio.NewReader(conn), bw: bufio.NewWriter(conn)}, nil
}

// put returns pc to the pool, or closes it when the pool is full or
// closed.
func (p *connPool) put(pc *poolConn) {
	pc.idleSince = time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle) >= poolMaxIdle {
		p.mu.Unlock()
		pc.conn.Close()
		return
	}
	p.idle = append(p.idle, pc)
	p.mu.Unlock()
}

// close closes the idle connections, and those that come back later.
func (p *connPool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, pc := range idle {
		pc.conn.Close()
	}
}

// pooledBody is a response body whose connection goes back to the pool
// when the body was read to its end.
type pooledBody struct {
	body io.ReadCloser
	pool *connPool
	pc   *poolConn
	stop func() bool // stops the request's cancellation
	keep bool        // the server keeps the connection open
	eof  bool
	once sync.Once
}

func (b *pooledBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *pooledBody) Close() error {
	b.once.Do(func() {
		if b.stop() && b.eof && b.keep {
			b.body.Close()
			b.pool.put(b.pc)
			return
		}
		// Closing the connection first makes the body's Close, which
		// would read the rest, return at once.
		b.pc.conn.Close()
		b.body.Close()
	})
	return nil
}
