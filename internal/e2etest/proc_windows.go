//go:build windows

package e2etest

import (
	"os"
	"syscall"

	"golang.org/x/sys/windows"
)

// The end-to-end tests run on Unix; these keep the package building on
// Windows, with the nearest equivalents.

// groupAttr starts a process in a process group of its own.
func groupAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{CreationFlags: windows.CREATE_NEW_PROCESS_GROUP}
}

// signalGroup ends p: Windows has no signals to send to a group.
func signalGroup(p *os.Process, _ syscall.Signal) error { return p.Kill() }

func processAlive(pid int) bool {
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(pid))
	if err != nil {
		return false
	}
	defer windows.CloseHandle(h)
	var code uint32
	return windows.GetExitCodeProcess(h, &code) == nil && code == 259 // STILL_ACTIVE
}
