// Package deptest enforces the direction of toolgate's dependencies: a
// table of [Rules], each naming packages and what they must never depend
// on, directly or through other packages, checked by the package's test
// against what `go list -deps` reports for the whole module. A broken
// rule fails the test with the import chain that breaks it.
//
// It reads import graphs and nothing else: it must not import any
// package of the module it checks.
package deptest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
)

// Module is the import path of toolgate's module. [Violation.String]
// names its packages relative to it.
const Module = "github.com/toolgate/toolgate"

// A Rule forbids every package matching From to depend, directly or
// through other packages, on a package matching Deny.
//
// A pattern is an import path, which matches that package only, or an
// import path followed by "/...", which matches the package and every
// package under it, as with the go command.
type Rule struct {
	// From are the patterns of the packages the rule constrains.
	From []string
	// Deny are the patterns of the packages they must not depend on.
	Deny []string
	// Why says what the rule protects, for the failure message.
	Why string
}

// Package is one package of the import graph, as `go list -json` reports
// it: its import path and the import paths of the packages it imports
// (test files left out).
type Package struct {
	ImportPath string
	Imports    []string
}

// A Violation is a package that depends on one that a rule denies it.
type Violation struct {
	// Rule is the rule broken.
	Rule Rule
	// Chain is the import chain from the package the rule constrains to
	// the denied package, both included: Chain[0] imports Chain[1], and
	// so on.
	Chain []string
}

// From is the package that breaks the rule.
func (v Violation) From() string { return v.Chain[0] }

// Dep is the denied package it depends on.
func (v Violation) Dep() string { return v.Chain[len(v.Chain)-1] }

// String says which package depends on which, through which imports, and
// why it must not:
//
//	sandbox must not depend on gateway (sandbox -> bindings -> gateway): ...
func (v Violation) String() string {
	chain := make([]string, len(v.Chain))
	for i, p := range v.Chain {
		chain[i] = short(p)
	}
	return fmt.Sprintf("%s must not depend on %s (%s): %s",
		chain[0], chain[len(chain)-1], strings.Join(chain, " -> "), v.Rule.Why)
}

// short names a package of Module relative to it.
func short(path string) string {
	if rest, ok := strings.CutPrefix(path, Module+"/"); ok {
		return rest
	}
	return path
}

// Check returns the violations of rules in the import graph pkgs. For
// each package matching a rule's From, it follows the imports and
// reports each denied package it reaches, with the shortest import chain
// to it; it does not look past a denied package, so one forbidden import
// is one violation, not one per package behind it.
func Check(pkgs []Package, rules []Rule) []Violation {
	graph := make(map[string][]string, len(pkgs))
	for _, p := range pkgs {
		graph[p.ImportPath] = p.Imports
	}
	var out []Violation
	for _, r := range rules {
		for _, p := range pkgs {
			if !matchAny(r.From, p.ImportPath) {
				continue
			}
			for _, chain := range denied(graph, p.ImportPath, r.Deny) {
				out = append(out, Violation{Rule: r, Chain: chain})
			}
		}
	}
	return out
}

// denied walks the imports of from breadth first and returns the chain to
// each package matching deny that it reaches.
func denied(graph map[string][]string, from string, deny []string) [][]string {
	parent := map[string]string{from: ""}
	queue := []string{from}
	var chains [][]string
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, imp := range graph[p] {
			if _, seen := parent[imp]; seen {
				continue
			}
			parent[imp] = p
			if matchAny(deny, imp) {
				chain := []string{imp}
				for q := p; q != ""; q = parent[q] {
					chain = append([]string{q}, chain...)
				}
				chains = append(chains, chain)
				continue
			}
			queue = append(queue, imp)
		}
	}
	return chains
}

// Unmatched returns the From patterns of rules that match no package of
// pkgs: a rule about a package that was renamed or removed, which checks
// nothing any more.
func Unmatched(pkgs []Package, rules []Rule) []string {
	var out []string
	for _, r := range rules {
		for _, pat := range r.From {
			found := false
			for _, p := range pkgs {
				if match(pat, p.ImportPath) {
					found = true
					break
				}
			}
			if !found {
				out = append(out, pat)
			}
		}
	}
	return out
}

// match reports whether the package path matches pattern.
func match(pattern, path string) bool {
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return path == base || strings.HasPrefix(path, base+"/")
	}
	return path == pattern
}

func matchAny(patterns []string, path string) bool {
	for _, pat := range patterns {
		if match(pat, path) {
			return true
		}
	}
	return false
}

// List runs `go list -deps -json` in dir for the package patterns (as
// the go command takes them) and returns the import graph it reports:
// the packages matched and every package they depend on, test files
// left out.
func List(ctx context.Context, dir string, patterns ...string) ([]Package, error) {
	args := append([]string{"list", "-deps", "-json=ImportPath,Imports"}, patterns...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go list: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	var pkgs []Package
	dec := json.NewDecoder(&stdout)
	for {
		var p Package
		err := dec.Decode(&p)
		if errors.Is(err, io.EOF) {
			return pkgs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("go list: decode its output: %w", err)
		}
		pkgs = append(pkgs, p)
	}
}
