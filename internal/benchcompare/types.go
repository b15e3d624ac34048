// Package benchcompare runs fixed tasks both ways, as the direct tool calls
// an agent would make and as one Code Mode script, against real upstream
// servers, and reports what each way costs.
//
// This file holds the agreed interface only; the tasks live on the branch
// that builds them.
package benchcompare

import (
	"context"
	"errors"
	"time"

	"github.com/toolgate/toolgate/internal/config"
)

// Options configure Run.
type Options struct {
	NPMDir   string                                                                                       // node_modules holding the npm servers; "" = $TOOLGATE_NPM_DIR, then e2e/npm/node_modules found from the working directory upward
	WorkDir  string                                                                                       // scratch directory (generated file tree, memory file); "" = a temporary directory removed afterwards
	Tasks    []string                                                                                     // task names to run; nil = all
	Progress func(task, mode string)                                                                      // called before each task run, mode "direct" or "codemode"; may be nil
	Serve    func(ctx context.Context, cfg *config.Config) (endpoint, key string, stop func(), err error) // starts a gateway for cfg on loopback and returns its streamable-HTTP MCP endpoint and an API key ("" when auth is off); nil = an in-process gateway built by benchcompare
}

// Mode is one way of doing a task.
type Mode struct {
	RoundTrips   int           `json:"roundTrips"`   // MCP tools/call requests the agent made
	ContextBytes int64         `json:"contextBytes"` // bytes of tool output that would enter the model's context
	ApproxTokens int64         `json:"approxTokens"` // ContextBytes/4, rounded up
	Wall         time.Duration `json:"wallNs"`
	Answer       string        `json:"answer"` // the task's answer; the same both ways
}

// TaskResult is one task done both ways.
type TaskResult struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Direct      Mode   `json:"direct"`
	CodeMode    Mode   `json:"codeMode"`
}

// Report is the outcome of Run.
type Report struct {
	Tasks    []TaskResult      `json:"tasks"`
	Settings map[string]string `json:"settings"` // e.g. files in the tree, entities, records
}

// Run runs the tasks of opts both ways.
func Run(ctx context.Context, opts Options) (*Report, error) {
	return nil, errors.New("not built")
}
