// Package bench runs the measurements of `toolgate bench` and renders their
// reports: the exec runner (one script many times), the proxy runner
// (direct tool calls against calls through the gateway, at several
// concurrency levels), latency statistics, the machine description that
// makes a report reproducible, and the outputs: a terminal table, JSON,
// and report.md with SVG charts.
//
// It knows nothing about how an execution or a call reaches the gateway:
// the command line hands it functions that do one (in process, or over MCP
// to a running gateway). It must not know the gateway's internals.
package bench

import (
	"bufio"
	"os"
	"runtime"
	"strings"
)

// Machine is where a benchmark ran, printed with every report so that a
// figure can be reproduced or compared.
type Machine struct {
	Cores           int    `json:"cores"`
	CPUModel        string `json:"cpuModel,omitempty"`
	OS              string `json:"os"`
	Arch            string `json:"arch"`
	GoVersion       string `json:"goVersion"`
	ToolgateVersion string `json:"toolgateVersion"`
}

// DescribeMachine describes this machine and process; version is the
// toolgate version.
func DescribeMachine(version string) Machine {
	return Machine{
		Cores:           runtime.NumCPU(),
		CPUModel:        cpuModel(),
		OS:              runtime.GOOS,
		Arch:            runtime.GOARCH,
		GoVersion:       runtime.Version(),
		ToolgateVersion: version,
	}
}

// cpuModel reads the CPU model from /proc/cpuinfo; "" when unknown.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
