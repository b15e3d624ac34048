//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package gateway

// connPeeks says whether poolConn.open can peek at a socket. Here it
// cannot (Windows has no MSG_DONTWAIT for recv), so no pool is made and
// the calls to plain-HTTP upstreams go through http.Transport, as those
// to HTTPS upstreams do.
const connPeeks = false

// open is never called where connPeeks is false.
func (pc *poolConn) open() bool { return false }
