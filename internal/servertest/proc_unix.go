//go:build unix && !linux

package servertest

import "syscall"

// account is the user a server process runs as.
type account struct{ uid, gid uint32 }

// procAttr runs a process as a (nil: as this process's user). Only Linux
// can kill it when the test process dies.
func procAttr(a *account, _ bool) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{}
	if a != nil {
		attr.Credential = &syscall.Credential{Uid: a.uid, Gid: a.gid}
	}
	return attr
}
