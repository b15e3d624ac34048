package gateway

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/internal/config"
)

// A tools/list served while a reload applies a filter change sees the old
// list or the new one, never a mix.
func TestToolListNeverHalfApplied(t *testing.T) {
	g := New(&config.Config{}, &Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(g.Close)
	p := newProject(g, "p")
	tools := map[string][]*mcp.Tool{"s": {tool("a"), tool("b"), tool("c"), tool("d")}}
	a := fakeSetupWith(t, nil, tools, &config.Server{Name: "s", AllowedToolsGlob: []string{"a", "b"}})
	b := fakeSetupWith(t, nil, tools, &config.Server{Name: "s", AllowedToolsGlob: []string{"c", "d"}})
	b.upstreams["s"] = a.upstreams["s"] // one upstream: only the filter changes
	p.reg.commit(a)

	ctx := context.Background()
	cs := connectInMemory(t, p.server)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p.reg.commit([]setup{a, b}[i%2])
		}
	})
	wantA, wantB := []string{"s__a", "s__b"}, []string{"s__c", "s__d"}
	var seen [2]int
	for range 500 {
		res, err := cs.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tl := range res.Tools {
			names = append(names, tl.Name)
		}
		slices.Sort(names)
		switch {
		case slices.Equal(names, wantA):
			seen[0]++
		case slices.Equal(names, wantB):
			seen[1]++
		default:
			close(stop)
			wg.Wait()
			t.Fatalf("tools/list = %v: neither configuration (after %v)", names, seen)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("lists of A: %d, of B: %d", seen[0], seen[1])
}
