package bindings

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/callerr"
)

// addSchemaSeeds adds every schema of testdata/*.tools.json to f's corpus.
func addSchemaSeeds(f *testing.F, add func(schema []byte)) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.tools.json"))
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		var tools []capturedTool
		if err := json.Unmarshal(b, &tools); err != nil {
			f.Fatal(err)
		}
		for _, tool := range tools {
			add(tool.InputSchema)
			if tool.OutputSchema != nil {
				add(tool.OutputSchema)
			}
		}
	}
	for _, s := range []string{
		``, `null`, `true`, `false`, `1e400`, `"*/"`, `{"description":"*/ /*"}`,
		`{"$ref":"#"}`, `{"$ref":"#/"}`, `{"$ref":"#/a/0/~2"}`, `{"$ref":"#%zz"}`,
		`{"$defs":{"*/":{"type":"string"}},"properties":{"*/":{"$ref":"#/$defs/*~1"}}}`,
		`{"enum":["*/",1e999,-0]}`, `{"properties":{"a":{"default":"*/"}}}`,
		`{"type":["object","array"],"items":{"properties":{}}}`,
		`{"allOf":[{"anyOf":[{"allOf":[true,false]}]}]}`,
		// $ref cycles, direct and through definitions and positions.
		`{"$defs":{"a":{"$ref":"#/$defs/b"},"b":{"$ref":"#/$defs/a"}},"$ref":"#/$defs/a"}`,
		`{"properties":{"next":{"$ref":"#"},"kids":{"type":"array","items":{"$ref":"#/properties/kids"}}}}`,
		`{"$ref":"#/properties/a","properties":{"a":{"$ref":"#/properties/a"}}}`,
		// Names that are keywords, built-ins, empty, quoted or invalid.
		`{"properties":{"":{},"__proto__":{"type":"string"},"constructor":{},"0":{},"a b":{},"\"'":{},"*/":{},"\u2028":{},"\ud800":{},"x\ny":{}},"required":["__proto__","\ud800"]}`,
		`{"$defs":{"Array":{"type":"string"},"Promise":{},"string":{},"":{}},"properties":{"a":{"$ref":"#/$defs/Array"},"b":{"$ref":"#/$defs/Promise"},"c":{"$ref":"#/$defs/string"},"d":{"$ref":"#/$defs/"}}}`,
	} {
		add([]byte(s))
	}
	// Huge nesting, inline and through many references.
	add([]byte(strings.Repeat(`{"type":"array","items":`, 5000) + `{}` + strings.Repeat(`}`, 5000)))
	add([]byte(strings.Repeat(`{"type":"object","properties":{"a":`, 3000) + `{}` + strings.Repeat(`}}`, 3000)))
	add([]byte(`{"anyOf":[` + strings.Repeat(`{"allOf":[{"$ref":"#"},{"$ref":"#/anyOf/0"}]},`, 300) + `{}]}`))
	var many strings.Builder
	many.WriteString(`{"$defs":{`)
	for i := range 200 {
		if i > 0 {
			many.WriteString(",")
		}
		fmt.Fprintf(&many, `"d%d":{"type":"object","properties":{"n":{"$ref":"#/$defs/d%d"},"m":{"$ref":"#/$defs/d%d"}}}`, i, (i+1)%200, (i+7)%200)
	}
	many.WriteString(`},"$ref":"#/$defs/d0"}`)
	add([]byte(many.String()))
}

// FuzzDeclarations renders arbitrary schema bytes under arbitrary names:
// no panic, and the output is well-formed (comments and strings end,
// brackets balance) UTF-8. The prelude of the same tools carries the names
// unchanged as JSON.
func FuzzDeclarations(f *testing.F) {
	addSchemaSeeds(f, func(schema []byte) { f.Add(schema, "filesystem", "read_file") })
	f.Add([]byte(`{}`), "my-server", "do.it")
	f.Add([]byte(`{}`), "a\u2028b", "*/\n\"`${x}`")
	f.Add([]byte(`{}`), "\xff", "</script>")
	f.Fuzz(func(t *testing.T, schema []byte, server, name string) {
		tools := []Tool{
			{Server: server, Name: name, FullName: server + "__" + name, Description: string(schema), InputSchema: schema, OutputSchema: schema},
			{Server: name, Name: server + "~", Description: name + "*/" + server, InputSchema: schema},
		}
		out := Declarations(tools)
		if err := checkTS(out); err != nil {
			t.Fatalf("%v in:\n%s", err, out)
		}
		if !utf8.ValidString(out) {
			t.Fatalf("output is not UTF-8:\n%q", out)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "declare const ") &&
				!strings.HasPrefix(line, "declare const tools: ") && !strings.HasPrefix(line, "declare const console: ") {
				g := strings.TrimPrefix(line, "declare const ")
				if g = g[:strings.IndexByte(g, ':')]; !isGlobalServerName(g) {
					t.Fatalf("declares the global %q", g)
				}
			}
		}

		js := Prelude(tools, "__h")
		_, table, _ := preludeArgs(t, js)
		for _, row := range table {
			for _, s := range row {
				if !utf8.ValidString(s) {
					t.Fatalf("table holds invalid UTF-8 %q", s)
				}
			}
		}
		valid := func(s string) string { // as JSON carries it: each invalid byte becomes U+FFFD
			b, _ := json.Marshal(s)
			_ = json.Unmarshal(b, &s)
			return s
		}
		found := false
		for _, row := range table {
			if row == [3]string{valid(server), valid(name), valid(server + "__" + name)} {
				found = true
			}
		}
		if !found {
			t.Fatalf("table %q lacks %q %q", table, server, name)
		}
	})
}

// FuzzInvoke feeds Invoke arbitrary arguments from a script and arbitrary
// results from a tool: no panic, and it returns either JSON text (valid
// UTF-8, as the host hands it to JavaScript) or a *callerr.Error with a code.
func FuzzInvoke(f *testing.F) {
	f.Add([]byte(`{"a":1}`), "hello", []byte(nil), false)
	f.Add([]byte(``), `{"x":[1,2]}`, []byte(`{"s":1}`), false)
	f.Add([]byte(`[1]`), "", []byte(`null`), true)
	f.Add([]byte(` null `), "\xff\"", []byte(`"\xff"`), false)
	f.Add([]byte(`{"a":`), "1e999", []byte(`{`), false)
	f.Fuzz(func(t *testing.T, args []byte, text string, structured []byte, isError bool) {
		caller := callerFunc(func(_ context.Context, _ string, a json.RawMessage) (*mcp.CallToolResult, error) {
			if !json.Valid(a) || a[0] != '{' {
				t.Fatalf("caller got arguments that are not an object: %q", a)
			}
			res := &mcp.CallToolResult{IsError: isError, Content: []mcp.Content{&mcp.TextContent{Text: text}}}
			if structured != nil {
				res.StructuredContent = json.RawMessage(structured)
			}
			return res, nil
		})
		v, err := Invoke(context.Background(), caller, "t", args)
		if err != nil {
			var ce *callerr.Error
			if !errors.As(err, &ce) || ce.Code == "" {
				t.Fatalf("error %v (%T) is not a coded *callerr.Error", err, err)
			}
			return
		}
		if !json.Valid(v) || !utf8.Valid(v) {
			t.Fatalf("value is not UTF-8 JSON: %q", v)
		}
	})
}
