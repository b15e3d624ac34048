package policy

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/gobwas/glob"
	"github.com/gobwas/glob/syntax"
)

// FilterSpec is one server's (or project's) rules for one kind of name
// (tools, resources or prompts).
//
// A name is denied if any DenyGlob matches it. Otherwise, if Allow is non-nil
// or AllowGlob is non-empty, it is allowed only when it is listed in Allow or
// matches an AllowGlob. Otherwise it is allowed.
//
// Globs use the syntax of github.com/gobwas/glob with no separators, so a
// star matches any run of characters, slashes and dots included. Patterns
// must be valid UTF-8. For example:
//
//	read_file     exactly "read_file" (no meta characters)
//	read_*        names starting with "read_"
//	*delete*      names containing "delete"
//	tool?         "tool" and exactly one more character
//	v[12]_*       a character class; [a-z] is a range, [!a-z] its negation
//	{get,list}_*  alternatives, each of which may hold wildcards
//	a\*b          a literal meta character, escaped with a backslash
type FilterSpec struct {
	// Allow lists exact names. A non-nil slice, even an empty one, switches
	// the filter to default deny.
	Allow []string
	// AllowGlob lists globs; a non-empty list means only matching names (and
	// the names in Allow) are allowed.
	AllowGlob []string
	// DenyGlob lists globs; a name matching any of them is denied, whatever
	// the allow rules say.
	DenyGlob []string
}

// Filter decides whether a name passes a [FilterSpec]. It is immutable and
// safe for concurrent use. A nil *Filter allows every name.
type Filter struct {
	restrict bool // default deny: Allow was non-nil or AllowGlob non-empty

	deny      map[string]struct{} // deny globs without meta characters
	denyGlobs []*glob.Pattern
	denyAll   bool // a deny glob matches every name

	allow      map[string]struct{} // Allow, plus allow globs without meta characters
	allowGlobs []*glob.Pattern
	allowAll   bool // an allow glob matches every name
}

// NewFilter compiles spec. Globs without meta characters become exact-match
// set entries, so only real patterns are matched one by one. Every bad
// pattern is reported, each error naming its pattern.
func NewFilter(spec FilterSpec) (*Filter, error) {
	f := &Filter{restrict: spec.Allow != nil || len(spec.AllowGlob) > 0}
	var errs []error

	for _, name := range spec.Allow {
		addName(&f.allow, name)
	}
	for _, p := range spec.AllowGlob {
		if err := f.addGlob(p, &f.allow, &f.allowGlobs, &f.allowAll); err != nil {
			errs = append(errs, fmt.Errorf("compiling allow glob %q: %w", p, err))
		}
	}
	for _, p := range spec.DenyGlob {
		if err := f.addGlob(p, &f.deny, &f.denyGlobs, &f.denyAll); err != nil {
			errs = append(errs, fmt.Errorf("compiling deny glob %q: %w", p, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return f, nil
}

// addGlob sorts pattern p into the cheapest form that matches the same names:
// the match-all flag, the exact set, or a compiled pattern.
func (f *Filter) addGlob(p string, exact *map[string]struct{}, globs *[]*glob.Pattern, all *bool) error {
	switch {
	case p != "" && strings.Trim(p, "*") == "":
		// With no separators, `*` and `**` both match any string.
		*all = true
	case isLiteral(p):
		addName(exact, p)
	default:
		g, err := glob.Compile(p)
		if err != nil {
			return err
		}
		*globs = append(*globs, g)
	}
	return nil
}

func addName(set *map[string]struct{}, name string) {
	if *set == nil {
		*set = make(map[string]struct{})
	}
	(*set)[name] = struct{}{}
}

// isLiteral reports whether glob pattern p matches exactly the string p. Only
// valid UTF-8 qualifies, so that byte-level corner cases stay the glob
// package's to decide.
func isLiteral(p string) bool {
	for i := range len(p) {
		if syntax.IsSpecial(p[i]) {
			return false
		}
	}
	return utf8.ValidString(p)
}

// Allows reports whether name passes the filter. A nil *Filter allows
// everything.
func (f *Filter) Allows(name string) bool {
	if f == nil {
		return true
	}
	if f.denyAll {
		return false
	}
	if _, ok := f.deny[name]; ok {
		return false
	}
	for _, g := range f.denyGlobs {
		if g.Match(name) {
			return false
		}
	}
	if !f.restrict || f.allowAll {
		return true
	}
	if _, ok := f.allow[name]; ok {
		return true
	}
	for _, g := range f.allowGlobs {
		if g.Match(name) {
			return true
		}
	}
	return false
}
