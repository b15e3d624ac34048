package gateway

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"time"

	"github.com/toolgate/toolgate/internal/config"
	"github.com/toolgate/toolgate/policy/audit"
)

// A reload builds the new, swaps it in and closes the old, and keeps the
// old on any failure: every project of the new configuration is prepared
// (upstreams whose connection settings did not change are kept, the
// others started), the result is checked as a whole, and then either
// every project commits or every new upstream is stopped. Keys that only
// a restart can apply refuse the reload.

// Reload validates and swaps in cfg: unchanged upstreams keep their
// sessions, changed ones are restarted, connected clients stay connected and
// see list_changed. On any error the running configuration stays as it was.
func (g *Gateway) Reload(ctx context.Context, cfg *config.Config) error {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	g.mu.RLock()
	old := g.cfg
	g.mu.RUnlock()
	err := checkReloadable(old, cfg)
	if err == nil {
		err = g.apply(ctx, cfg, false)
	}
	ev := &audit.Event{Type: audit.EventConfigReload, Changed: changedKeys(old, cfg), Outcome: "applied"}
	if err != nil {
		ev.Outcome, ev.Reason = "refused", err.Error()
	}
	_ = g.emit(ev)
	return err
}

// ReloadRefused records a reload that failed before the gateway saw a
// configuration (the file did not load).
func (g *Gateway) ReloadRefused(err error) {
	_ = g.emit(&audit.Event{Type: audit.EventConfigReload, Outcome: "refused", Reason: err.Error()})
}

// apply prepares every project of cfg, checks the result, and either
// commits all projects or rolls every one back.
func (g *Gateway) apply(ctx context.Context, cfg *config.Config, first bool) error {
	acc, err := compileAccess(cfg)
	if err != nil {
		return err
	}
	if acc.auth, err = g.compileAuth(ctx, cfg, g.accessPolicy()); err != nil {
		return err
	}
	if cfg.CodeMode.Enabled && g.engine == nil {
		return errors.New("codeMode.enabled: code mode is on but the gateway has no sandbox engine")
	}
	if acc.authRequired && g.auth == nil {
		return errors.New("auth.required: authentication is on but the gateway has no key store")
	}
	sealer, err := g.sealerFor(cfg)
	if err != nil {
		return err
	}
	g.mu.RLock()
	existing := maps.Clone(g.projects)
	g.mu.RUnlock()

	type prepared struct {
		p       *project
		s       setup
		started []*upstream
	}
	var all []prepared
	rollback := func() {
		for _, pr := range all {
			for _, u := range pr.started {
				u.stop()
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Projects)) {
		p := existing[name]
		if p == nil {
			p = newProject(g, name)
		}
		s, started, err := p.reg.prepare(cfg.Projects[name], p)
		all = append(all, prepared{p, s, started})
		if err != nil {
			rollback()
			return fmt.Errorf("projects.%s: %w", name, err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, cfg.StartupTimeout.D()+time.Second)
	for _, pr := range all {
		waitFirst(wctx, pr.started)
	}
	cancel()
	var problems []string
	for _, pr := range all {
		_, probs, _ := compute(pr.s)
		for _, pb := range probs {
			problems = append(problems, "project "+pr.p.name+": "+pb)
		}
	}
	if len(problems) > 0 {
		rollback()
		sort.Strings(problems)
		return &StartupError{Problems: problems}
	}
	if g.auth != nil {
		if err := g.auth.SetConfigKeys(configKeys(cfg)); err != nil {
			rollback()
			return fmt.Errorf("apiKeys: %w", err)
		}
	}
	g.acc.Store(acc)
	g.seal.Store(sealer)
	for _, pr := range all {
		pr.p.reg.commit(pr.s)
	}
	g.mu.Lock()
	g.cfg = cfg
	newProjects := map[string]*project{}
	for _, pr := range all {
		newProjects[pr.p.name] = pr.p
	}
	var gone []*project
	for name, p := range g.projects {
		if newProjects[name] == nil {
			gone = append(gone, p)
		}
	}
	g.projects = newProjects
	g.mu.Unlock()
	for _, p := range gone {
		p.stop()
	}
	if !first {
		g.log.Info("configuration reloaded", "path", cfg.Path, "projects", len(newProjects))
	}
	return nil
}

// changedKeys lists the top-level configuration keys whose values differ.
func changedKeys(old, cur *config.Config) []string {
	var keys []string
	ov, cv := reflect.ValueOf(*old), reflect.ValueOf(*cur)
	t := ov.Type()
	for i := range t.NumField() {
		tag := t.Field(i).Tag.Get("mapstructure")
		if tag == "" || tag == "-" {
			continue
		}
		if !reflect.DeepEqual(ov.Field(i).Interface(), cv.Field(i).Interface()) {
			keys = append(keys, tag)
		}
	}
	slices.Sort(keys)
	return keys
}

// restartOnly are configuration keys a reload cannot change.
var restartOnly = []string{"listen", "dataDir", "audit", "alerts", "metrics", "tls", "limits", "cluster"}

// checkReloadable refuses a reload that changes keys only a restart applies.
func checkReloadable(old, cur *config.Config) error {
	for _, k := range changedKeys(old, cur) {
		if slices.Contains(restartOnly, k) {
			return fmt.Errorf("%s: changing it needs a restart", k)
		}
	}
	return nil
}
