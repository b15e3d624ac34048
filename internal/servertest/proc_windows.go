package servertest

import "syscall"

// account is the user a server process runs as.
type account struct{ uid, gid uint32 }

// procAttr runs a process as this process's user: the servers these tests
// start are Debian packages, not run on Windows.
func procAttr(*account, bool) *syscall.SysProcAttr { return nil }
