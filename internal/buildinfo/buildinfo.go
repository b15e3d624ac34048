// Package buildinfo says which toolgate a binary is: its version and
// commit, and the versions of the modules that decide how it speaks MCP
// and runs scripts (the MCP Go SDK, wazero, qjs). It reads them from the
// build information the go command records in every binary, so that a
// binary from `go install ...@version` names its module version and one
// built from a checkout its commit; -ldflags may set the version and
// commit instead (see Read). It knows nothing else of toolgate.
package buildinfo

import (
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
)

// Module is toolgate's module path.
const Module = "github.com/toolgate/toolgate"

// Set at link time, as make build and make install do
// (scripts/ldflags.sh), or by packagers who build from a tree without
// version control information:
//
//	go build -ldflags "-X github.com/toolgate/toolgate/internal/buildinfo.version=v1.2.3 -X github.com/toolgate/toolgate/internal/buildinfo.commit=abc123" ./cmd/toolgate
var (
	version string
	commit  string
)

// reported are the modules whose versions Info reports, in its order.
var reported = []Dependency{
	{Name: "go-sdk", Path: "github.com/modelcontextprotocol/go-sdk"},
	{Name: "wazero", Path: "github.com/tetratelabs/wazero"},
	{Name: "qjs", Path: "github.com/fastschema/qjs"},
}

// Devel is the version of a binary whose build recorded none (go run,
// go build -buildvcs=false, or a tree without version control).
const Devel = "(devel)"

// Info describes a toolgate binary.
type Info struct {
	// Version is toolgate's version: the one set at link time, else the
	// module version the go command recorded (a release tag for `go
	// install ...@v1.2.3`, a pseudo-version for a commit, with
	// "+dirty" for a tree with uncommitted changes), else Devel.
	Version string `json:"version"`
	// Commit is the revision built from, when known: set at link time,
	// recorded from version control, or read from a pseudo-version.
	Commit string `json:"commit,omitempty"`
	// Modified reports a build from a tree with uncommitted changes (as
	// recorded by the go command, or a version ending in "+dirty").
	Modified bool `json:"modified,omitempty"`
	// Go is the Go release that built the binary, and Platform its
	// GOOS/GOARCH.
	Go       string `json:"go"`
	Platform string `json:"platform"`
	// Dependencies are go-sdk, wazero and qjs, in that order.
	Dependencies []Dependency `json:"dependencies"`
}

// Dependency is a module linked into the binary.
type Dependency struct {
	// Name is the short name toolgate gives it: "go-sdk", "wazero", "qjs".
	Name string `json:"name"`
	// Path is its module path.
	Path string `json:"path"`
	// Version is the version linked in ("" when it is not), followed by
	// " => " and the replacement when the module was replaced.
	Version string `json:"version"`
}

// Read returns the information of the running binary.
func Read() Info {
	bi, _ := debug.ReadBuildInfo()
	return fromBuild(bi, version, commit)
}

// fromBuild builds Info from a binary's build information (nil when it
// has none) and the version and commit set at link time.
func fromBuild(bi *debug.BuildInfo, version, commit string) Info {
	info := Info{Version: version, Commit: commit, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi == nil {
		if info.Version == "" {
			info.Version = Devel
		}
		info.Dependencies = dependencies(nil)
		return info
	}
	info.Go = bi.GoVersion
	mods := map[string]*debug.Module{bi.Main.Path: &bi.Main}
	for _, m := range bi.Deps {
		mods[m.Path] = m
	}
	// toolgate is the main module when built in its own tree or by go
	// install; a dependency when another module builds its command.
	if m := mods[Module]; m != nil && info.Version == "" {
		info.Version = moduleVersion(m)
	}
	var vcsRevision string
	if bi.Main.Path == Module {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				vcsRevision = s.Value
			case "vcs.modified":
				info.Modified = s.Value == "true"
			}
		}
	}
	if info.Version == "" {
		info.Version = Devel
	}
	// A pseudo-version of a modified tree says so, whoever made it.
	info.Modified = info.Modified || strings.HasSuffix(info.Version, "+dirty")
	if info.Commit == "" {
		info.Commit = vcsRevision
	}
	if info.Commit == "" {
		info.Commit = pseudoRevision(info.Version)
	}
	info.Dependencies = dependencies(mods)
	return info
}

// dependencies returns the reported modules with their versions in mods.
func dependencies(mods map[string]*debug.Module) []Dependency {
	deps := make([]Dependency, len(reported))
	for i, d := range reported {
		if m := mods[d.Path]; m != nil {
			d.Version = moduleVersion(m)
		}
		deps[i] = d
	}
	return deps
}

// moduleVersion is m's version, and its replacement's when it was
// replaced.
func moduleVersion(m *debug.Module) string {
	v := m.Version
	if v == "" {
		v = Devel
	}
	if r := m.Replace; r != nil {
		to := r.Path
		if r.Version != "" && r.Version != Devel { // a folder's version is Devel
			to += " " + r.Version
		}
		v += " => " + to
	}
	return v
}

// pseudoVersion matches a Go pseudo-version (v0.0.0-yyyymmddhhmmss-abcdefabcdef,
// v1.2.4-0.yyyymmddhhmmss-abcdefabcdef after v1.2.3, v1.2.3-pre.0.yyyymmddhhmmss-abcdefabcdef,
// with "+dirty" from a modified tree), capturing its revision.
var pseudoVersion = regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+-(?:.*\.)?[0-9]{14}-([0-9a-f]{12})(?:\+.*)?$`)

// pseudoRevision returns the revision a pseudo-version names, or "" (the
// zero pseudo-version, v0.0.0-00010101000000-000000000000, that a
// requirement of a replaced module uses, names none).
func pseudoRevision(v string) string {
	if m := pseudoVersion.FindStringSubmatch(v); m != nil && strings.Trim(m[1], "0") != "" {
		return m[1]
	}
	return ""
}
