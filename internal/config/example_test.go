package config_test

import (
	"fmt"
	"log"
	"maps"
	"os"
	"slices"

	"github.com/toolgate/toolgate/internal/config"
)

func ExampleLoad() {
	os.Setenv("TOOLGATE_EXAMPLE_TOKEN", "s3cret")
	defer os.Unsetenv("TOOLGATE_EXAMPLE_TOKEN")

	c, err := config.Load("testdata/example.yaml")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("listen:", c.Listen, "call timeout:", c.CallTimeout.D())
	for _, name := range slices.Sorted(maps.Keys(c.Projects)) {
		p := c.Projects[name]
		fmt.Println("project", name)
		for _, sn := range slices.Sorted(maps.Keys(p.MCPServers)) {
			s := p.MCPServers[sn]
			fmt.Printf("  %s: transport=%q command=%q url=%q\n", s.Name, s.Transport, s.Command, s.URL)
		}
	}
	fmt.Println(c.Projects[config.DefaultProject].MCPServers["api"].Headers["Authorization"] == "Bearer s3cret")
	// Output:
	// listen: 127.0.0.1:8080 call timeout: 1m0s
	// project default
	//   api: transport="" command="" url="https://mcp.example.com/mcp"
	//   filesystem: transport="stdio" command="npx" url=""
	// true
}

func ExampleParse_problems() {
	_, err := config.Parse([]byte(`{
		// comments and trailing commas are fine
		"mcpServers": {
			"github": {"comand": "npx"},
			"api": {"url": "https://example.com/mcp", "headers": {"Authorization": "Bearer ${TOOLGATE_EXAMPLE_UNSET}"}},
		},
	}`), "json")
	fmt.Println(err)
	// Output:
	// mcpServers.api.headers.Authorization: environment variable TOOLGATE_EXAMPLE_UNSET is not set
	// mcpServers.github: needs command (a local server) or url (a remote one)
	// mcpServers.github.comand: unknown key (did you mean "command"?)
}

func ExampleInspect() {
	os.Setenv("TOOLGATE_CODE_MODE_TIMEOUT", "20s")
	defer os.Unsetenv("TOOLGATE_CODE_MODE_TIMEOUT")

	in, err := config.Inspect("testdata/example.yaml")
	if err != nil {
		log.Fatal(err)
	}
	// The variable TOOLGATE_EXAMPLE_TOKEN is not set: a problem, but the
	// rest of the file is read.
	for _, p := range in.Problems {
		fmt.Println("problem:", p)
	}
	for _, o := range in.Config.FromEnv {
		fmt.Println("from the environment:", o.Path, o.Var, in.Config.CodeMode.Timeout.D())
	}
	// The file as written keeps the reference, with its key path.
	for _, h := range in.File.Get("mcpServers").Get("api").Get("headers").Entries() {
		v, _ := h.Text()
		fmt.Printf("%s = %q\n", h.Path(), v)
	}
	// Output:
	// problem: mcpServers.api.headers.Authorization: environment variable TOOLGATE_EXAMPLE_TOKEN is not set
	// from the environment: codeMode.timeout TOOLGATE_CODE_MODE_TIMEOUT 20s
	// mcpServers.api.headers.Authorization = "Bearer ${TOOLGATE_EXAMPLE_TOKEN}"
}
