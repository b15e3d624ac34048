//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package gateway

import (
	"errors"
	"syscall"
)

// connPeeks says whether poolConn.open can peek at a socket: the pool is
// used only where it can.
const connPeeks = true

// open reports whether the server has neither closed pc nor sent
// anything on it since its last response, which http.Transport learns
// from the read it keeps pending on an idle connection. It peeks at the
// socket without waiting.
func (pc *poolConn) open() bool {
	if pc.br.Buffered() > 0 {
		return false
	}
	sc, ok := pc.conn.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	open := false
	var b [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		open = errors.Is(rerr, syscall.EAGAIN) // no byte, no end of stream
		return true
	})
	return err == nil && open
}
