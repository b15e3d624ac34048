package policy_test

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/glob"
	"github.com/google/go-cmp/cmp"

	"github.com/toolgate/toolgate/policy"
)

func TestFilterAllows(t *testing.T) {
	tests := []struct {
		name string
		spec policy.FilterSpec
		want map[string]bool // name -> Allows
	}{
		{
			name: "no rules",
			spec: policy.FilterSpec{},
			want: map[string]bool{"read_file": true, "delete_file": true, "": true},
		},
		{
			name: "deny only",
			spec: policy.FilterSpec{DenyGlob: []string{"*delete*", "*write*"}},
			want: map[string]bool{
				"read_file":   true,
				"delete_file": false,
				"file_delete": false,
				"write":       false,
				"list":        true,
			},
		},
		{
			name: "allow glob only",
			spec: policy.FilterSpec{AllowGlob: []string{"read_*", "list_*"}},
			want: map[string]bool{
				"read_file":      true,
				"list_directory": true,
				"read_":          true,
				"read":           false,
				"write_file":     false,
				"xread_file":     false,
			},
		},
		{
			name: "exact allow only",
			spec: policy.FilterSpec{Allow: []string{"read_file", "list_directory"}},
			want: map[string]bool{
				"read_file":      true,
				"list_directory": true,
				"read_files":     false,
				"Read_file":      false,
				"write_file":     false,
			},
		},
		{
			name: "exact allow and glob allow are a union",
			spec: policy.FilterSpec{Allow: []string{"search"}, AllowGlob: []string{"read_*"}},
			want: map[string]bool{
				"search":    true,
				"read_file": true,
				"searches":  false,
				"write":     false,
			},
		},
		{
			name: "deny beats exact allow",
			spec: policy.FilterSpec{Allow: []string{"read_file", "delete_file"}, DenyGlob: []string{"*delete*"}},
			want: map[string]bool{"read_file": true, "delete_file": false},
		},
		{
			name: "deny beats glob allow",
			spec: policy.FilterSpec{AllowGlob: []string{"*_file"}, DenyGlob: []string{"delete_*"}},
			want: map[string]bool{"read_file": true, "delete_file": false, "read_dir": false},
		},
		{
			name: "literal deny glob is an exact deny",
			spec: policy.FilterSpec{AllowGlob: []string{"*"}, DenyGlob: []string{"drop_table"}},
			want: map[string]bool{"drop_table": false, "drop_tables": true, "select": true},
		},
		{
			name: "empty non-nil allow denies all",
			spec: policy.FilterSpec{Allow: []string{}},
			want: map[string]bool{"read_file": false, "": false, "x": false},
		},
		{
			name: "empty allow glob list is no rule",
			spec: policy.FilterSpec{AllowGlob: []string{}},
			want: map[string]bool{"read_file": true},
		},
		{
			name: "match-all allow glob",
			spec: policy.FilterSpec{Allow: []string{}, AllowGlob: []string{"**"}},
			want: map[string]bool{"read_file": true, "": true},
		},
		{
			name: "match-all deny glob",
			spec: policy.FilterSpec{Allow: []string{"read_file"}, DenyGlob: []string{"*"}},
			want: map[string]bool{"read_file": false, "": false},
		},
		{
			name: "star inside",
			spec: policy.FilterSpec{DenyGlob: []string{"*delete*"}},
			want: map[string]bool{"delete": false, "undelete_all": false, "del_ete": true},
		},
		{
			name: "alternatives",
			spec: policy.FilterSpec{AllowGlob: []string{"{get,list}*"}},
			want: map[string]bool{"get_user": true, "list": true, "set_user": false, "{get,list}": false},
		},
		{
			name: "single character",
			spec: policy.FilterSpec{AllowGlob: []string{"tool?"}},
			want: map[string]bool{"tool1": true, "toolé": true, "tool": false, "tool12": false},
		},
		{
			name: "character class and range",
			spec: policy.FilterSpec{AllowGlob: []string{"v[12]_*", "step_[a-c]"}},
			want: map[string]bool{"v1_run": true, "v2_run": true, "v3_run": false, "step_b": true, "step_d": false},
		},
		{
			name: "negated character class",
			spec: policy.FilterSpec{DenyGlob: []string{"[!a-m]*"}},
			want: map[string]bool{"alpha": true, "mike": true, "november": false, "Zulu": false, "": true},
		},
		{
			name: "escaped meta characters",
			spec: policy.FilterSpec{Allow: []string{}, AllowGlob: []string{`a\*b`}},
			want: map[string]bool{"a*b": true, "axb": false, "ab": false},
		},
		{
			name: "case sensitive",
			spec: policy.FilterSpec{DenyGlob: []string{"*Delete*"}},
			want: map[string]bool{"DeleteFile": false, "deletefile": true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := policy.NewFilter(tt.spec)
			if err != nil {
				t.Fatalf("NewFilter(%+v): %v", tt.spec, err)
			}
			got := make(map[string]bool, len(tt.want))
			for name := range tt.want {
				got[name] = f.Allows(name)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Allows mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNilFilterAllowsEverything(t *testing.T) {
	var f *policy.Filter
	for _, name := range []string{"", "read_file", "delete_everything"} {
		if !f.Allows(name) {
			t.Errorf("nil filter: Allows(%q) = false, want true", name)
		}
	}
}

func TestNewFilterBadGlob(t *testing.T) {
	tests := []struct {
		name string
		spec policy.FilterSpec
		want []string // substrings of the error
	}{
		{
			name: "unclosed class in allow glob",
			spec: policy.FilterSpec{AllowGlob: []string{"read_*", "read_[abc"}},
			want: []string{`allow glob "read_[abc"`},
		},
		{
			name: "unclosed alternatives in deny glob",
			spec: policy.FilterSpec{DenyGlob: []string{"{delete,drop"}},
			want: []string{`deny glob "{delete,drop"`},
		},
		{
			name: "every bad pattern is reported",
			spec: policy.FilterSpec{AllowGlob: []string{"[x"}, DenyGlob: []string{"ok_*", `trailing\`}},
			want: []string{`allow glob "[x"`, `deny glob "trailing\\"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := policy.NewFilter(tt.spec)
			if err == nil {
				t.Fatalf("NewFilter(%+v) = %v, nil; want an error", tt.spec, f)
			}
			if f != nil {
				t.Errorf("NewFilter returned a filter with an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %s", err, w)
				}
			}
		})
	}
}

// reference is the filter semantics written out plainly, with every glob
// compiled and matched by the glob package; Filter must agree with it.
func reference(spec policy.FilterSpec, name string) bool {
	for _, p := range spec.DenyGlob {
		if glob.MustCompile(p).Match(name) {
			return false
		}
	}
	if spec.Allow == nil && len(spec.AllowGlob) == 0 {
		return true
	}
	for _, a := range spec.Allow {
		if a == name {
			return true
		}
	}
	for _, p := range spec.AllowGlob {
		if glob.MustCompile(p).Match(name) {
			return true
		}
	}
	return false
}

// splitList turns a fuzzed string into a list: "" is nil, "\x00" alone is an
// empty non-nil list, otherwise the parts between newlines.
func splitList(s string) []string {
	switch s {
	case "":
		return nil
	case "\x00":
		return []string{}
	}
	return strings.Split(s, "\n")
}

func FuzzFilter(f *testing.F) {
	f.Add("read_file", "", "read_*\nlist_*", "*delete*")
	f.Add("delete_file", "delete_file", "", "*delete*")
	f.Add("x", "\x00", "", "")
	f.Add("get_user", "", "{get,list}*", "[!a-z]*")
	f.Add("a*b", "", `a\*b`, "")
	f.Add("tool?", "", "tool[0-9]", "*?*")
	f.Add("", "", "**", "")
	f.Add("[a]", "", "", "[a]")
	f.Add("\xff", "", "?", "\xff")
	f.Add("\xff", "", "0", "0")
	f.Fuzz(func(t *testing.T, name, allow, allowGlob, denyGlob string) {
		spec := policy.FilterSpec{
			Allow:     splitList(allow),
			AllowGlob: splitList(allowGlob),
			DenyGlob:  splitList(denyGlob),
		}
		flt, err := policy.NewFilter(spec)
		if err != nil {
			bad := false
			for _, p := range append(append([]string(nil), spec.AllowGlob...), spec.DenyGlob...) {
				if _, cerr := glob.Compile(p); cerr != nil {
					bad = true
					if !strings.Contains(err.Error(), fmt.Sprintf("%q", p)) {
						t.Errorf("error %q does not name bad pattern %q", err, p)
					}
				}
			}
			if !bad {
				t.Fatalf("NewFilter(%#v) failed with no bad pattern: %v", spec, err)
			}
			return
		}
		if got, want := flt.Allows(name), reference(spec, name); got != want {
			t.Fatalf("NewFilter(%#v).Allows(%q) = %v, reference says %v", spec, name, got, want)
		}

		// A deny glob spelling the name exactly denies it, whatever else the
		// spec says: the quoted form always, the bare name when it has no
		// meta characters (then the two are the same pattern). Patterns must
		// be valid UTF-8, so other names cannot be spelled as one.
		if !utf8.ValidString(name) {
			return
		}
		denies := []string{glob.QuoteMeta(name)}
		if !strings.ContainsAny(name, `*?\[]{}`) {
			denies = append(denies, name)
		}
		for _, d := range denies {
			spec.DenyGlob = append(splitList(denyGlob), d)
			flt, err := policy.NewFilter(spec)
			if err != nil {
				t.Fatalf("NewFilter(%#v): %v", spec, err)
			}
			if flt.Allows(name) {
				t.Fatalf("deny glob %q: Allows(%q) = true, want false", d, name)
			}
		}
	})
}

func BenchmarkFilterAllows(b *testing.B) {
	typical := policy.FilterSpec{
		AllowGlob: []string{"read_*", "list_*", "get_*", "search_*"},
		DenyGlob:  []string{"*delete*", "*write*", "*remove*"},
	}
	exact := policy.FilterSpec{
		Allow:    []string{"filesystem__read_file", "filesystem__list_directory", "github__create_issue"},
		DenyGlob: []string{"*delete*"},
	}
	benches := []struct {
		name string
		spec *policy.FilterSpec // nil: a nil *Filter
		arg  string
	}{
		{"nil", nil, "read_file"},
		{"no rules", &policy.FilterSpec{}, "read_file"},
		{"globs/allowed", &typical, "read_multiple_files"},
		{"globs/denied", &typical, "read_and_delete_file"},
		{"globs/not allowed", &typical, "move_file"},
		{"exact/allowed", &exact, "filesystem__list_directory"},
		{"exact/not allowed", &exact, "filesystem__move_file"},
	}
	for _, bb := range benches {
		b.Run(bb.name, func(b *testing.B) {
			var f *policy.Filter
			if bb.spec != nil {
				var err error
				if f, err = policy.NewFilter(*bb.spec); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				f.Allows(bb.arg)
			}
		})
	}
}

func ExampleFilter() {
	// A filesystem server configured as README.md shows one.
	f, err := policy.NewFilter(policy.FilterSpec{
		AllowGlob: []string{"read_*", "list_*"},
		DenyGlob:  []string{"*delete*", "*write*", "*remove*"},
	})
	if err != nil {
		panic(err)
	}
	for _, tool := range []string{"read_file", "list_directory", "write_file", "read_then_delete", "move_file"} {
		fmt.Println(tool, f.Allows(tool))
	}
	// Output:
	// read_file true
	// list_directory true
	// write_file false
	// read_then_delete false
	// move_file false
}
