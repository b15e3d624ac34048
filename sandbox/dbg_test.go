package sandbox
import "testing"
func TestDbgPump(t *testing.T) {
	g, err := newGuest(testEngine.opts)
	if err != nil { t.Fatal(err) }
	defer g.close()
	s, err := g.step("agent.js", "__toolgate_bridge.seal({logCap:1000,fetch:false,seed:[1,2,3,4]});__toolgate_bridge.start(async function () { console.log('a'); const p = new Promise(r => setTimeout(r, 0)); await p; console.log('b'); return 5 })")
	t.Logf("%q %v", s, err)
	s, err = g.pump(`[[1,1,null]]`)
	t.Logf("%q %v", s, err)
	s, err = g.drainReport()
	t.Logf("%q %v", s, err)
}
