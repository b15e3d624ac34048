package buildinfo

import (
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFromBuild(t *testing.T) {
	deps := []*debug.Module{
		{Path: "github.com/fastschema/qjs", Version: "v0.0.6"},
		{Path: "github.com/modelcontextprotocol/go-sdk", Version: "v1.8.0"},
		{Path: "github.com/tetratelabs/wazero", Version: "v1.11.0"},
	}
	linked := []Dependency{
		{Name: "go-sdk", Path: "github.com/modelcontextprotocol/go-sdk", Version: "v1.8.0"},
		{Name: "wazero", Path: "github.com/tetratelabs/wazero", Version: "v1.11.0"},
		{Name: "qjs", Path: "github.com/fastschema/qjs", Version: "v0.0.6"},
	}
	platform := runtime.GOOS + "/" + runtime.GOARCH
	const rev = "f198ece1a2b3c4d5e6f708192a3b4c5d6e7f8091"
	tests := []struct {
		name            string
		bi              *debug.BuildInfo
		version, commit string // set at link time
		want            Info
	}{
		{
			name: "go install module@version",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: Module, Version: "v1.2.3"}, Deps: deps},
			want: Info{Version: "v1.2.3", Go: "go1.26.8", Platform: platform, Dependencies: linked},
		},
		{
			name: "go install module@commit",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: Module, Version: "v1.2.4-0.20261207051349-f198ece1a2b3"}, Deps: deps},
			want: Info{Version: "v1.2.4-0.20261207051349-f198ece1a2b3", Commit: "f198ece1a2b3", Go: "go1.26.8", Platform: platform, Dependencies: linked},
		},
		{
			name: "built in a modified checkout",
			bi: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: Module, Version: "v0.0.0-20261207051349-f198ece1a2b3+dirty"}, Deps: deps,
				Settings: []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: "true"}}},
			want: Info{Version: "v0.0.0-20261207051349-f198ece1a2b3+dirty", Commit: rev, Modified: true, Go: "go1.26.8", Platform: platform, Dependencies: linked},
		},
		{
			name: "built without version control",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: Module, Version: "(devel)"}, Deps: deps},
			want: Info{Version: Devel, Go: "go1.26.8", Platform: platform, Dependencies: linked},
		},
		{
			name: "version and commit set at link time",
			bi: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: Module, Version: "(devel)"}, Deps: deps,
				Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: rev}}},
			version: "v1.2.3", commit: "abc123",
			want: Info{Version: "v1.2.3", Commit: "abc123", Go: "go1.26.8", Platform: platform, Dependencies: linked},
		},
		{
			name:    "a modified tree, set at link time",
			bi:      &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: Module, Version: "(devel)"}, Deps: deps},
			version: "v0.0.0-20261207051349-f198ece1a2b3+dirty", commit: rev,
			want: Info{Version: "v0.0.0-20261207051349-f198ece1a2b3+dirty", Commit: rev, Modified: true, Go: "go1.26.8", Platform: platform, Dependencies: linked},
		},
		{
			name: "built as a dependency of another module",
			bi: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "example.com/consumer", Version: "(devel)"},
				Deps: append([]*debug.Module{{Path: Module, Version: "v1.2.3"}}, deps...),
				// The consumer's version control says nothing about toolgate.
				Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: rev}}},
			want: Info{Version: "v1.2.3", Go: "go1.26.8", Platform: platform, Dependencies: linked},
		},
		{
			name: "a replaced module",
			bi: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "example.com/consumer"},
				Deps: []*debug.Module{
					{Path: Module, Version: "v0.0.0-00010101000000-000000000000", Replace: &debug.Module{Path: "/src/toolgate", Version: "(devel)"}},
					{Path: "github.com/modelcontextprotocol/go-sdk", Version: "v1.8.0", Replace: &debug.Module{Path: "example.com/fork", Version: "v1.8.1"}},
				}},
			want: Info{Version: "v0.0.0-00010101000000-000000000000 => /src/toolgate", Go: "go1.26.8", Platform: platform, Dependencies: []Dependency{
				{Name: "go-sdk", Path: "github.com/modelcontextprotocol/go-sdk", Version: "v1.8.0 => example.com/fork v1.8.1"},
				{Name: "wazero", Path: "github.com/tetratelabs/wazero"},
				{Name: "qjs", Path: "github.com/fastschema/qjs"},
			}},
		},
		{
			name: "no build information",
			want: Info{Version: Devel, Go: runtime.Version(), Platform: platform, Dependencies: []Dependency{
				{Name: "go-sdk", Path: "github.com/modelcontextprotocol/go-sdk"},
				{Name: "wazero", Path: "github.com/tetratelabs/wazero"},
				{Name: "qjs", Path: "github.com/fastschema/qjs"},
			}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := fromBuild(tc.bi, tc.version, tc.commit)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("fromBuild (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPseudoRevision(t *testing.T) {
	for v, want := range map[string]string{
		"v0.0.0-20261207051349-f198ece1a2b3":        "f198ece1a2b3",
		"v0.0.0-20261207051349-f198ece1a2b3+dirty":  "f198ece1a2b3",
		"v1.2.4-0.20261207051349-f198ece1a2b3":      "f198ece1a2b3",
		"v1.2.3-rc.1.0.20261207051349-f198ece1a2b3": "f198ece1a2b3",
		"v0.0.0-00010101000000-000000000000":        "",
		"v1.2.3":                                    "",
		"v1.2.3-rc.1":                               "",
		"(devel)":                                   "",
	} {
		if got := pseudoRevision(v); got != want {
			t.Errorf("pseudoRevision(%q) = %q, want %q", v, got, want)
		}
	}
}
