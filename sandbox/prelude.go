package sandbox

import (
	"bytes"
	"container/list"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/singleflight"

	"github.com/toolgate/toolgate/wasm"
)

// Evaluating the tool-bindings prelude (parsing and running a few KB of
// JavaScript) used to take most of an execution's start. The prelude is the
// same text for every execution of a configuration, so the engine evaluates
// a given text once, in the fresh interpreter of the first execution that
// uses it and before that execution's own code runs, and keeps how that
// interpreter's linear memory then differs from the engine's template: a
// preludeImage. Later executions with the same text still get a fresh,
// never-used interpreter; its memory is made equal to that state by copying
// the changed pages in. Nothing a script does reaches the image: it is taken
// before any agent code ran and only ever copied from.
//
// A prelude that fails is evaluated again by every execution (and reports its
// error each time); only a successful evaluation is kept.

// Bounds of an engine's prelude cache. A configuration has one prelude per
// project, and a reload replaces it; the bounds only keep texts that are
// no longer used from accumulating.
const (
	maxPreludeImages     = 16
	maxPreludeImageBytes = 64 << 20 // texts plus page contents, all entries together
)

// preludeImage is an interpreter's state right after evaluating a prelude,
// as the pages where its linear memory differs from the engine's template.
type preludeImage struct {
	size       uint64     // linear memory size
	runs       [][2]int64 // byte ranges that differ from the template, ascending
	data       []byte     // their contents, one after the other
	scratch    uint32     // the guest's string buffer, which a long prelude may have moved
	scratchCap uint32
}

// captureImage records how g's memory differs from its template after the
// prelude ran. It returns nil when the guest was asked to stop meanwhile,
// so an interrupt can never be copied into other executions.
func (g *guest) captureImage() *preludeImage {
	m := g.mod.Memory()
	size := uint64(m.Size())
	buf, ok := m.Read(0, uint32(size))
	if !ok || g.stop.Load() {
		return nil
	}
	tpl := g.tpl
	img := &preludeImage{size: size, scratch: g.scratch, scratchCap: g.scratchCap}
	for off := int64(0); off+snapshotPage <= int64(size); off += snapshotPage {
		page := buf[off : off+snapshotPage]
		if off+snapshotPage <= int64(len(tpl.image)) {
			if bytes.Equal(page, tpl.image[off:off+snapshotPage]) {
				continue
			}
		} else if isZero(page) {
			continue
		}
		img.data = append(img.data, page...)
		if n := len(img.runs); n > 0 && img.runs[n-1][1] == off {
			img.runs[n-1][1] = off + snapshotPage
		} else {
			img.runs = append(img.runs, [2]int64{off, off + snapshotPage})
		}
	}
	// The interrupt bit is only ever set, never cleared while a script
	// runs: if it is clear now, it was clear in the copy.
	if v, ok := g.mem.AtomicLoad32(pendingSignalsAddr); !ok || v != 0 || g.stop.Load() {
		return nil
	}
	return img
}

// applyImage makes the memory of g, a never-used guest, equal to img. It
// returns false, with the memory unchanged, when it cannot grow the memory
// to the image's size within the execution's memory limit.
func (g *guest) applyImage(img *preludeImage) bool {
	m := g.mod.Memory()
	if cur := uint64(m.Size()); cur < img.size {
		if img.size > g.mem.Limit() {
			return false
		}
		if _, ok := m.Grow(uint32((img.size - cur) / wasm.PageSize)); !ok {
			return false
		}
	}
	buf, ok := m.Read(0, uint32(img.size))
	if !ok {
		return false
	}
	p := int64(0)
	for _, r := range img.runs {
		n := r[1] - r[0]
		copy(buf[r[0]:r[1]], img.data[p:p+n])
		p += n
	}
	g.scratch, g.scratchCap = img.scratch, img.scratchCap
	return true
}

// preludeCache keeps the images of the most recently used prelude texts,
// keyed by the whole text, within a count and a byte bound. It is safe for
// concurrent use.
type preludeCache struct {
	maxEntries int
	maxBytes   int

	mu      sync.Mutex
	bytes   int
	order   list.List // of *preludeEntry, most recently used first
	entries map[string]*list.Element

	flight      singleflight.Group // evaluations of texts not in the cache, by text
	evaluations atomic.Int64       // how many times a prelude text was evaluated
}

type preludeEntry struct {
	text string
	img  *preludeImage
}

func newPreludeCache(maxEntries, maxBytes int) *preludeCache {
	return &preludeCache{maxEntries: maxEntries, maxBytes: maxBytes, entries: map[string]*list.Element{}}
}

func (e *preludeEntry) cost() int { return len(e.text) + len(e.img.data) }

// get returns the image of text, or nil.
func (c *preludeCache) get(text string) *preludeImage {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[text]
	if !ok {
		return nil
	}
	c.order.MoveToFront(el)
	return el.Value.(*preludeEntry).img
}

// put stores the image of text, evicting the least recently used entries
// beyond the bounds. An entry larger than the byte bound is not kept.
func (c *preludeCache) put(text string, img *preludeImage) {
	e := &preludeEntry{text: text, img: img}
	if e.cost() > c.maxBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[text]; ok {
		c.bytes -= el.Value.(*preludeEntry).cost()
		el.Value = e
		c.order.MoveToFront(el)
	} else {
		c.entries[text] = c.order.PushFront(e)
	}
	c.bytes += e.cost()
	for c.order.Len() > c.maxEntries || c.bytes > c.maxBytes {
		old := c.order.Back()
		oe := old.Value.(*preludeEntry)
		c.order.Remove(old)
		delete(c.entries, oe.text)
		c.bytes -= oe.cost()
	}
}

// len reports the number of entries and their total cost in bytes.
func (c *preludeCache) len() (entries, bytes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len(), c.bytes
}
