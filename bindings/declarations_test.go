package bindings

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// loadTools reads testdata/<file>.tools.json. server names the tools'
// server unless the file gives one per tool. An inputSchema or
// outputSchema that is a JSON string stands for raw schema bytes, so that
// broken JSON can be tested.
func loadTools(t testing.TB, file, server string) []Tool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", file+".tools.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cts []capturedTool
	if err := json.Unmarshal(b, &cts); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	raw := func(m json.RawMessage) json.RawMessage {
		var s string
		if json.Unmarshal(m, &s) == nil {
			return json.RawMessage(s)
		}
		return m
	}
	tools := make([]Tool, 0, len(cts))
	for _, c := range cts {
		s := c.Server
		if s == "" {
			s = server
		}
		tools = append(tools, Tool{
			Server:       s,
			Name:         c.Name,
			FullName:     s + "__" + c.Name,
			Description:  c.Description,
			InputSchema:  raw(c.InputSchema),
			OutputSchema: raw(c.OutputSchema),
		})
	}
	return tools
}

// checkGolden compares got with testdata/<name>.golden, or rewrites the
// file with -update.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s mismatch (-want +got; go test -update rewrites it):\n%s", path, diff)
	}
}

func TestDeclarationsGolden(t *testing.T) {
	for _, tc := range []struct {
		golden, file, server string
	}{
		{"constructs", "constructs", ""},
		{"everything", "everything", "everything"},
		{"filesystem", "filesystem", "filesystem"},
		{"memory", "memory", "memory"},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			tools := loadTools(t, tc.file, tc.server)
			got := Declarations(tools)
			if err := checkTS(got); err != nil {
				t.Errorf("declarations are not well formed: %v", err)
			}
			checkGolden(t, tc.golden, got)
		})
	}
}

// TestDeclarationsNPMSize reports the size of the declarations of the npm
// servers, which decides whether they fit in execute_code's description.
func TestDeclarationsNPMSize(t *testing.T) {
	var all []Tool
	for _, s := range npmServers {
		tools := loadTools(t, s.name, s.name)
		t.Logf("%-10s %2d tools: %6d bytes", s.name, len(tools), len(Declarations(tools)))
		all = append(all, tools...)
	}
	t.Logf("all three  %2d tools: %6d bytes (no tools: %d bytes)", len(all), len(Declarations(all)), len(Declarations(nil)))
}

func TestDeclarationsDeterministic(t *testing.T) {
	tools := append(loadTools(t, "constructs", ""), loadTools(t, "memory", "memory")...)
	want := Declarations(tools)
	reversed := make([]Tool, len(tools))
	for i, tool := range tools {
		reversed[len(tools)-1-i] = tool
	}
	// A repeated tool keeps its first occurrence and changes nothing.
	reversed = append(reversed, tools[0])
	if diff := cmp.Diff(want, Declarations(reversed)); diff != "" {
		t.Errorf("declarations depend on the order of tools (-sorted +reversed):\n%s", diff)
	}
}

// TestSchemaTypes pins the TypeScript type of single schemas.
func TestSchemaTypes(t *testing.T) {
	for _, tc := range []struct {
		name, schema, want string
	}{
		{"true", `true`, `unknown`},
		{"false", `false`, `never`},
		{"empty", `{}`, `unknown`},
		{"not an object", `[1]`, `unknown`},
		{"string", `{"type":"string"}`, `string`},
		{"integer", `{"type":"integer"}`, `number`},
		{"null", `{"type":"null"}`, `null`},
		{"type list", `{"type":["string","number","null"]}`, `string | number | null`},
		{"type list with duplicates", `{"type":["integer","number"]}`, `number`},
		{"nullable", `{"type":"string","nullable":true}`, `string | null`},
		{"nullable alone", `{"nullable":true}`, `unknown`},
		{"enum", `{"enum":["a","b"]}`, `"a" | "b"`},
		{"empty enum", `{"enum":[]}`, `never`},
		{"enum of objects", `{"type":"string","enum":[{}]}`, `string`},
		{"const", `{"const":"x","type":"number"}`, `"x"`},
		{"const number", `{"const":-1.5e3}`, `-1.5e3`},
		{"const null", `{"const":null}`, `null`},
		{"const object", `{"const":{"a":1},"type":"object","properties":{}}`, `{}`},
		{"array", `{"type":"array","items":{"type":"string"}}`, `string[]`},
		{"array of unknown", `{"type":"array"}`, `unknown[]`},
		{"array of union", `{"items":{"type":["string","null"]}}`, `(string | null)[]`},
		{"tuple", `{"prefixItems":[{"type":"string"},{"type":"number"}],"items":false}`, `[string, number]`},
		{"tuple with rest", `{"prefixItems":[{"type":"string"}],"items":{"type":"number"}}`, `[string, ...number[]]`},
		{"tuple with open rest", `{"prefixItems":[{"type":"string"}],"items":true}`, `[string, ...unknown[]]`},
		{"tuple with optional", `{"prefixItems":[{"type":"string"},{"type":["number","null"]}],"minItems":1}`, `[string, (number | null)?]`},
		{"draft-07 tuple", `{"items":[{"type":"string"}],"additionalItems":{"type":"boolean"}}`, `[string, ...boolean[]]`},
		{"empty tuple", `{"type":"array","prefixItems":[]}`, `[]`},
		{"free-form object", `{"type":"object"}`, `{ [key: string]: unknown }`},
		{"map", `{"additionalProperties":{"type":"number"}}`, `{ [key: string]: number }`},
		{"closed empty object", `{"type":"object","additionalProperties":false}`, `{}`},
		{"empty properties", `{"type":"object","properties":{}}`, `{}`},
		{"object", `{"properties":{"a":{"type":"string"},"b":{}},"required":["a","zzz"]}`, "{\n  a: string;\n  b?: unknown;\n}"},
		{"anyOf", `{"anyOf":[{"type":"string"},{"type":"number"}]}`, `string | number`},
		{"anyOf with unknown", `{"anyOf":[{"type":"string"},true]}`, `unknown`},
		{"empty anyOf", `{"type":"string","anyOf":[]}`, `string`},
		{"anyOf with never", `{"anyOf":[{"type":"string"},false]}`, `string`},
		{"oneOf nested", `{"oneOf":[{"anyOf":[{"type":"string"},{"type":"null"}]},{"type":"number"}]}`, `string | null | number`},
		{"allOf", `{"allOf":[{"$ref":"#/$defs/A"},{"$ref":"#/$defs/B"}],"$defs":{"A":{"type":"string"},"B":{"type":"number"}}}`, `Demo_T_A & Demo_T_B`},
		{"allOf of unions", `{"allOf":[{"type":["string","number"]},{"type":["number","null"]}]}`, `(string | number) & (number | null)`},
		{"union of intersections", `{"anyOf":[{"allOf":[{"type":"string"},{"type":"number"}]},{"type":"null"}]}`, `(string & number) | null`},
		{"allOf with never", `{"allOf":[{"type":"string"},false]}`, `never`},
		{"type and anyOf", `{"type":"object","anyOf":[{"type":"object","properties":{}},{"type":"null"}]}`, `{} | null`},
		{"ref", `{"$ref":"#/$defs/X","$defs":{"X":{"type":"string"}}}`, `Demo_T_X`},
		{"ref to root", `{"type":"array","items":{"$ref":"#"}}`, `Demo_T_Input[]`},
		{"ref missing", `{"$ref":"#/$defs/X"}`, `unknown`},
		{"ref remote", `{"$ref":"other.json#/X"}`, `unknown`},
		{"ref anchor", `{"$ref":"#thing"}`, `unknown`},
		{"ref into array", `{"$ref":"#/$defs/list/1","$defs":{"list":[{"type":"string"},{"type":"number"}]}}`, `Demo_T_List1`},
		{"ref percent-encoded", `{"$ref":"#/$defs/a%20b","$defs":{"a b":{"type":"string"}}}`, `Demo_T_AB`},
		{"ref self cycle", `{"$ref":"#/$defs/A","$defs":{"A":{"$ref":"#/$defs/A"}}}`, `unknown`},
		{"wrong keyword types", `{"type":5,"properties":[],"required":{},"enum":"x","anyOf":{},"items":7}`, `{}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := parseJSON([]byte(tc.schema))
			if err != nil {
				t.Fatal(err)
			}
			r := &schemaRenderer{names: &typeNames{}, prefix: "Demo_T_", roots: []schemaRoot{{value: v, label: "Input"}}}
			if got := r.render(v, 0, 0, 0).text; got != tc.want {
				t.Errorf("schema %s\n got: %s\nwant: %s", tc.schema, got, tc.want)
			}
		})
	}
}

func TestDeclarationsEmpty(t *testing.T) {
	got := Declarations(nil)
	for _, want := range []string{
		"declare const tools: {};\n",
		"declare function callTool(name: string, args?: object): Promise<unknown>;\n",
		"declare const console: {",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("declarations of no tools lack %q:\n%s", want, got)
		}
	}
}

func TestDeclarationsDeepSchema(t *testing.T) {
	// Nesting beyond maxDepth becomes unknown instead of recursing on.
	schema := strings.Repeat(`{"type":"array","items":`, 5000) + `{"type":"string"}` + strings.Repeat(`}`, 5000)
	got := Declarations([]Tool{{Server: "s", Name: "t", InputSchema: json.RawMessage(`{"type":"object","properties":{"deep":` + schema + `}}`)}})
	line := got[strings.Index(got, "deep?: "):]
	line = line[:strings.IndexByte(line, '\n')]
	if want := "deep?: unknown" + strings.Repeat("[]", maxDepth); line != want+";" {
		t.Errorf("deep schema rendered as\n%s\nwant\n%s;", line, want)
	}
	if err := checkTS(got); err != nil {
		t.Error(err)
	}
}

func TestTypeNamesUnique(t *testing.T) {
	// Servers and tools whose PascalCase names collide, and a server named
	// like a built-in type, still get distinct, non-built-in type names.
	defs := json.RawMessage(`{"type":"object","properties":{"x":{"$ref":"#/$defs/X"}},"$defs":{"X":{"type":"string"}}}`)
	tools := []Tool{
		{Server: "a-b", Name: "read_file", InputSchema: defs},
		{Server: "a_b", Name: "readFile", InputSchema: defs},
		{Server: "promise", Name: "t", InputSchema: defs},
		{Server: "", Name: "t", InputSchema: defs},
		{Server: "9lives", Name: "t", InputSchema: defs},
	}
	got := Declarations(tools)
	for _, want := range []string{
		"type AB_ReadFile_X = string;",
		"type AB_ReadFile_X2 = string;",
		"interface ABTools {", "interface ABTools2 {",
		"interface PromiseTools {", "interface Tools {", "interface T9livesTools {",
		`readonly "": Tools;`, `readonly "9lives": T9livesTools;`,
		"declare const promise: PromiseTools;",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
}
