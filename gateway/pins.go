package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/toolgate/toolgate/policy/audit"
)

// PinsFile is the name of the file in dataDir that remembers the hash of
// every upstream tool definition as first seen (or last approved).
const PinsFile = "tool-pins.json"

// Pin is the remembered definition hash of one tool.
type Pin struct {
	Hash      string    `json:"hash"`
	FirstSeen time.Time `json:"firstSeen"`
	Approved  time.Time `json:"approved,omitzero"`
}

// Change is a tool whose definition differs from its pin.
type Change struct {
	Hash string    `json:"hash"`
	Seen time.Time `json:"seen"`
}

// Pins is the content of the pins file. Keys are "project/server/tool",
// with the tool's name at the upstream.
type Pins struct {
	Pins    map[string]Pin    `json:"pins"`
	Pending map[string]Change `json:"pending"`
}

// PinKey names a tool in the pins file.
func PinKey(project, server, tool string) string { return project + "/" + server + "/" + tool }

// DefinitionHash is the SHA-256 of what a client relies on in a tool's
// definition: its name, description and input and output schemas.
func DefinitionHash(t *mcp.Tool) string {
	b, _ := json.Marshal(struct {
		Name         string `json:"name"`
		Description  string `json:"description"`
		InputSchema  any    `json:"inputSchema"`
		OutputSchema any    `json:"outputSchema"`
	}{t.Name, t.Description, t.InputSchema, t.OutputSchema})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// ReadPins reads a pins file; a missing file is empty.
func ReadPins(path string) (*Pins, error) {
	p := &Pins{Pins: map[string]Pin{}, Pending: map[string]Change{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, p); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if p.Pins == nil {
		p.Pins = map[string]Pin{}
	}
	if p.Pending == nil {
		p.Pending = map[string]Change{}
	}
	return p, nil
}

// WritePins replaces the pins file atomically.
func WritePins(path string, p *Pins) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tool-pins-*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(append(b, '\n'))
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Approve accepts the pending definitions of the given keys (all pending
// ones when keys is empty) and returns the keys approved.
func (p *Pins) Approve(keys []string, now time.Time) ([]string, error) {
	if len(keys) == 0 {
		for k := range p.Pending {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		c, ok := p.Pending[k]
		if !ok {
			return nil, fmt.Errorf("no changed definition is waiting for approval under %q", k)
		}
		pin := p.Pins[k]
		pin.Hash, pin.Approved = c.Hash, now
		if pin.FirstSeen.IsZero() {
			pin.FirstSeen = now
		}
		p.Pins[k] = pin
		delete(p.Pending, k)
	}
	return keys, nil
}

// PinStore keeps the pins: the hash of every upstream tool definition as
// first seen (or last approved) and the changed definitions waiting for
// approval. The pins file in dataDir is one ([OpenPinsFile]); a
// PostgreSQL table shared by replicas is another ([OpenPostgresPins]).
// Implementations are safe for concurrent use, also by several processes
// at once (the command line and the gateways).
type PinStore interface {
	// Check compares a tool's definition hash with its pin (key is
	// [PinKey]), pinning a tool seen for the first time and recording a
	// changed one as pending; it returns the pinned hash.
	Check(ctx context.Context, key, hash string, now time.Time) (PinResult, string, error)
	// Refresh reports whether the pins changed elsewhere (an approval)
	// since the last call.
	Refresh(ctx context.Context) bool
	// Load returns every pin and pending change.
	Load(ctx context.Context) (*Pins, error)
	// Approve accepts the pending definitions of keys (all of them when
	// keys is empty) and returns the keys approved.
	Approve(ctx context.Context, keys []string, now time.Time) ([]string, error)
	// String names the store for logs.
	String() string
}

var _ PinStore = (*pinStore)(nil)

// OpenPinsFile opens the pins file at path (dataDir/[PinsFile]).
func OpenPinsFile(path string) (PinStore, error) { return openPinStore(path) }

// pinStore is the gateway's view of the pins file: it pins tools on first
// sight, notices changed definitions, and sees approvals made by
// `toolgate tools approve` in another process.
type pinStore struct {
	path string

	mu      sync.Mutex
	pins    *Pins
	modTime time.Time
}

func openPinStore(path string) (*pinStore, error) {
	s := &pinStore{path: path}
	if err := s.reloadLocked(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *pinStore) reloadLocked() error {
	p, err := ReadPins(s.path)
	if err != nil {
		return err
	}
	s.pins = p
	if st, err := os.Stat(s.path); err == nil {
		s.modTime = st.ModTime()
	}
	return nil
}

// String implements [PinStore].
func (s *pinStore) String() string { return s.path }

// Load implements [PinStore]: it reads the file.
func (s *pinStore) Load(context.Context) (*Pins, error) { return ReadPins(s.path) }

// Approve implements [PinStore]: it reads the file, approves, and
// replaces the file.
func (s *pinStore) Approve(_ context.Context, keys []string, now time.Time) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pins, err := ReadPins(s.path)
	if err != nil {
		return nil, err
	}
	approved, err := pins.Approve(keys, now)
	if err != nil {
		return nil, err
	}
	if err := WritePins(s.path, pins); err != nil {
		return nil, err
	}
	return approved, s.reloadLocked()
}

// Refresh implements [PinStore]: it rereads the file when it changed on
// disk and reports whether it did.
func (s *pinStore) Refresh(context.Context) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := os.Stat(s.path)
	if err != nil || st.ModTime().Equal(s.modTime) {
		return false
	}
	return s.reloadLocked() == nil
}

// PinResult says how a tool's definition compares with its pin.
type PinResult int

// The results of [PinStore.Check].
const (
	PinSame    PinResult = iota
	PinNew               // first sight: pinned now
	PinChanged           // differs from the pin, newly noticed
	PinPending           // differs from the pin, noticed before
)

// Check implements [PinStore].
func (s *pinStore) Check(_ context.Context, key, hash string, now time.Time) (PinResult, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pin, ok := s.pins.Pins[key]
	switch {
	case !ok:
		s.pins.Pins[key] = Pin{Hash: hash, FirstSeen: now}
		return PinNew, "", s.saveLocked()
	case pin.Hash == hash:
		if _, pending := s.pins.Pending[key]; pending {
			delete(s.pins.Pending, key) // changed back
			return PinSame, pin.Hash, s.saveLocked()
		}
		return PinSame, pin.Hash, nil
	}
	if c, ok := s.pins.Pending[key]; ok && c.Hash == hash {
		return PinPending, pin.Hash, nil
	}
	s.pins.Pending[key] = Change{Hash: hash, Seen: now}
	return PinChanged, pin.Hash, s.saveLocked()
}

func (s *pinStore) saveLocked() error {
	if err := WritePins(s.path, s.pins); err != nil {
		return err
	}
	if st, err := os.Stat(s.path); err == nil {
		s.modTime = st.ModTime()
	}
	return nil
}

// pinInterval is how often the gateway looks for approvals made by
// `toolgate tools approve`.
var pinInterval = 2 * time.Second

// checkPins compares the definitions of the tools in reg with their pins.
// A changed definition raises tools.changed once; with
// quarantineChangedTools the tool is taken out of reg until approved, and
// a problem line says so.
func (g *Gateway) checkPins(project string, rs routes) []string {
	if g.pins == nil {
		return nil
	}
	quarantine := g.Config().QuarantineChangedTools
	now := time.Now().UTC()
	var problems []string
	for name, r := range rs.tools {
		def := *r.def.(*mcp.Tool)
		def.Name = r.upstream
		key := PinKey(project, r.up.cfg.Name, r.upstream)
		hash := DefinitionHash(&def)
		res, old, err := g.pins.Check(context.Background(), key, hash, now)
		if err != nil {
			g.log.Error("cannot record tool definition hashes", "store", g.pins.String(), "error", err)
		}
		if res == PinChanged {
			g.log.Warn("tool definition changed", "project", project, "server", r.up.cfg.Name, "tool", r.upstream, "quarantined", quarantine)
			ev := &audit.Event{Type: audit.EventToolsChanged, Project: project, Server: r.up.cfg.Name, Tool: name, OldHash: old, NewHash: hash, Decision: "allow"}
			if quarantine {
				ev.Decision = "quarantine"
			}
			_ = g.emit(ev)
		}
		if quarantine && (res == PinChanged || res == PinPending) {
			delete(rs.tools, name)
			problems = append(problems, fmt.Sprintf("tool %s is quarantined: its definition changed; review it and run `toolgate tools approve %s`", name, key))
		}
	}
	sort.Strings(problems)
	return problems
}

// watchPins rebuilds every project when the pins file changes on disk
// (an approval), until stop is closed.
func (g *Gateway) watchPins(stop <-chan struct{}) {
	t := time.NewTicker(pinInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if !g.pins.Refresh(context.Background()) {
				continue
			}
			g.mu.RLock()
			ps := slices.Collect(maps.Values(g.projects))
			g.mu.RUnlock()
			for _, p := range ps {
				p.reg.rebuild()
			}
		}
	}
}
