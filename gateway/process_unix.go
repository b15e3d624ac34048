//go:build unix

package gateway

import (
	"log/slog"
	"os/exec"
	"syscall"
)

// inheritedEnv lists the variables of the gateway's own environment that a
// stdio upstream inherits; everything else comes from the server's `env`.
// A gateway's environment often holds secrets meant for other servers, so
// upstreams do not get all of it.
var inheritedEnv = []string{"HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "TMPDIR", "TZ"}

// processGroup is a started stdio upstream whose whole process group is
// killed when the connection ends.
type processGroup struct {
	pid int
}

// inProcessGroup makes cmd start a process group of its own.
func inProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// newProcessGroup returns the group of cmd, started by inProcessGroup.
func newProcessGroup(cmd *exec.Cmd, _ *slog.Logger) *processGroup {
	return &processGroup{pid: cmd.Process.Pid}
}

// kill sends SIGKILL to the whole process group (npx, node and whatever
// else the server started). It is safe to call more than once.
func (p *processGroup) kill() {
	if p == nil || p.pid <= 0 {
		return
	}
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
}
