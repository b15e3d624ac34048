package bench

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Progress draws a progress bar on a terminal, at most ten times a second.
type Progress struct {
	w    io.Writer
	mu   sync.Mutex
	last time.Time
	line bool
}

// NewProgress returns a bar drawing on w, or nil when w is not a terminal
// (a nil *Progress draws nothing).
func NewProgress(w io.Writer, terminal bool) *Progress {
	if !terminal {
		return nil
	}
	return &Progress{w: w}
}

// Update shows done of total for what.
func (p *Progress) Update(what string, done, total int) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if done < total && time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	const width = 30
	fill := 0
	if total > 0 {
		fill = done * width / total
	}
	fmt.Fprintf(p.w, "\r%-28.28s [%s%s] %d/%d", what, strings.Repeat("#", fill), strings.Repeat(" ", width-fill), done, total)
	p.line = true
}

// Status shows a line of text in place of the bar, for work whose total
// is not known.
func (p *Progress) Status(text string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "\r%-79.79s", text)
	p.line = true
}

// Done clears the bar.
func (p *Progress) Done() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.line {
		fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", 80))
		p.line = false
	}
}
