package benchcompare_test

import (
	"context"
	"fmt"
	"log"

	"github.com/toolgate/toolgate/internal/benchcompare"
)

// Run needs Node.js and the npm servers (e2e/npm/node_modules,
// $TOOLGATE_NPM_DIR, or npm to install them into the cache folder); its
// figures vary with the machine, so this example is compiled but not run.
func ExampleRun() {
	rep, err := benchcompare.Run(context.Background(), benchcompare.Options{
		Tasks:    []string{"search-files", "aggregate-records"},
		Progress: func(task, mode string) { log.Printf("running %s (%s)", task, mode) },
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, t := range rep.Tasks {
		fmt.Printf("%s: %d round trips and %d bytes directly, %d and %d with Code Mode\n",
			t.Name, t.Direct.RoundTrips, t.Direct.ContextBytes, t.CodeMode.RoundTrips, t.CodeMode.ContextBytes)
	}
}
