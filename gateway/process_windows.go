//go:build windows

package gateway

import (
	"log/slog"
	"os/exec"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/windows"
)

// inheritedEnv lists the variables of the gateway's own environment that a
// stdio upstream inherits; everything else comes from the server's `env`.
// A gateway's environment often holds secrets meant for other servers, so
// upstreams do not get all of it. Windows programs need more of it than
// Unix ones to start at all (SystemRoot, COMSPEC, PATHEXT).
var inheritedEnv = []string{
	"PATH", "PATHEXT", "SystemRoot", "SystemDrive", "windir", "COMSPEC", "TEMP", "TMP",
	"USERPROFILE", "USERNAME", "HOMEDRIVE", "HOMEPATH", "APPDATA", "LOCALAPPDATA",
	"ProgramData", "ProgramFiles", "ProgramFiles(x86)", "LANG", "TZ",
}

// processGroup is a started stdio upstream in a job object of its own,
// so that everything it starts (npx, node, ...) ends with it: closing the
// job kills every process in it, and the job is closed when the connection
// ends, or by Windows when the gateway's process ends, however it ends.
type processGroup struct {
	job  windows.Handle
	once sync.Once
}

// inProcessGroup makes cmd start a process group of its own (a console
// Ctrl+C meant for the gateway does not reach it).
func inProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{CreationFlags: windows.CREATE_NEW_PROCESS_GROUP}
}

// newProcessGroup puts the started process of cmd in a new job object. A
// process it starts before that (within microseconds of its start) stays
// out of the job; the SDK's transport still kills the upstream itself.
func newProcessGroup(cmd *exec.Cmd, log *slog.Logger) *processGroup {
	job, err := windows.CreateJobObject(nil, nil)
	if err != nil {
		log.Warn("cannot create a job object for the upstream's processes", "error", err)
		return nil
	}
	info := windows.JOBOBJECT_EXTENDED_LIMIT_INFORMATION{
		BasicLimitInformation: windows.JOBOBJECT_BASIC_LIMIT_INFORMATION{LimitFlags: windows.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE},
	}
	if _, err := windows.SetInformationJobObject(job, windows.JobObjectExtendedLimitInformation, uintptr(unsafe.Pointer(&info)), uint32(unsafe.Sizeof(info))); err != nil {
		log.Warn("cannot set up the upstream's job object", "error", err)
		_ = windows.CloseHandle(job)
		return nil
	}
	proc, err := windows.OpenProcess(windows.PROCESS_SET_QUOTA|windows.PROCESS_TERMINATE, false, uint32(cmd.Process.Pid))
	if err == nil {
		err = windows.AssignProcessToJobObject(job, proc)
		_ = windows.CloseHandle(proc)
	}
	if err != nil {
		log.Warn("cannot put the upstream in a job object", "error", err)
		_ = windows.CloseHandle(job)
		return nil
	}
	return &processGroup{job: job}
}

// kill ends every process of the job. It is safe to call more than once.
func (p *processGroup) kill() {
	if p == nil {
		return
	}
	p.once.Do(func() {
		_ = windows.TerminateJobObject(p.job, 1)
		_ = windows.CloseHandle(p.job)
	})
}
