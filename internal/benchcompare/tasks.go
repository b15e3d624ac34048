package benchcompare

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// task is one job done both ways. direct plays an agent calling tools one
// by one and reasoning over what it reads; script is the Code Mode program
// doing the same calls, and answer turns the value it returns into the
// answer; want is the answer the generated data implies.
type task struct {
	name        string
	description string
	reset       func(fx *fixture) error // before each run; may be nil
	direct      func(ctx context.Context, a *agent, fx *fixture) (string, error)
	script      func(fx *fixture) string
	answer      func(result json.RawMessage) (string, error)
	want        func(fx *fixture) string
}

// allTasks are the built-in tasks, in their default order.
var allTasks = []*task{searchFiles, memoryGraph, aggregateRecords}

// jsLit renders v as a JavaScript literal (JSON is one).
func jsLit(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only our own plain data is rendered
	}
	return string(b)
}

// lines splits a tool's text into its non-empty lines.
func lines(s string) []string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if l = strings.TrimRight(l, "\r"); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// stringList decodes a script's result that is an array of strings.
func stringList(result json.RawMessage) ([]string, error) {
	var out []string
	if err := json.Unmarshal(result, &out); err != nil {
		return nil, fmt.Errorf("want an array of strings: %w", err)
	}
	return out, nil
}

// searchFiles: server-filesystem has no content search, only file-name
// globs, so an agent looking for a setting finds the configuration files
// by name and reads each one.
var searchFiles = &task{
	name: "search-files",
	description: "Find every line mentioning " + searchTerm + " in the services' config.yaml files of a tree of 200 files: " +
		"search_files for the config files, then read each candidate and keep the matching lines.",
	direct: func(ctx context.Context, a *agent, fx *fixture) (string, error) {
		found, err := a.text(ctx, "filesystem__search_files", map[string]any{"path": fx.root, "pattern": "**/config.yaml"})
		if err != nil {
			return "", err
		}
		var paths []string
		for _, p := range lines(found) {
			if strings.HasPrefix(p, fx.root+string(filepath.Separator)) {
				paths = append(paths, p)
			}
		}
		slices.Sort(paths)
		var matches []string
		for _, p := range paths {
			body, err := a.text(ctx, "filesystem__read_text_file", map[string]any{"path": p})
			if err != nil {
				return "", err
			}
			rel := filepath.ToSlash(p[len(fx.root)+1:])
			for n, line := range strings.Split(body, "\n") {
				if strings.Contains(line, searchTerm) {
					matches = append(matches, fmt.Sprintf("%s:%d: %s", rel, n+1, strings.TrimSpace(line)))
				}
			}
		}
		return strings.Join(matches, "\n"), nil
	},
	script: func(fx *fixture) string {
		return `const root = ` + jsLit(fx.root) + `, term = ` + jsLit(searchTerm) + `;
const found = await tools.filesystem.search_files({ path: root, pattern: "**/config.yaml" });
const paths = found.content.split("\n").filter((p) => p.startsWith(root + "/")).sort();
const files = await Promise.all(paths.map((path) => tools.filesystem.read_text_file({ path })));
const matches = [];
paths.forEach((p, i) => {
  files[i].content.split("\n").forEach((line, n) => {
    if (line.includes(term)) matches.push(p.slice(root.length + 1) + ":" + (n + 1) + ": " + line.trim());
  });
});
return matches;
`
	},
	answer: func(result json.RawMessage) (string, error) {
		l, err := stringList(result)
		return strings.Join(l, "\n"), err
	},
	want: func(fx *fixture) string { return strings.Join(fx.matches, "\n") },
}

// memoryGraph: the agent records company profiles in server-memory as it
// reads them, then follows relations to answer a question.
var memoryGraph = &task{
	name: "memory-graph",
	description: "Record " + itoa(len(companies)) + " company profiles (company, city, staff) in server-memory, one create_entities and one create_relations call per profile, " +
		"then answer: who works at a company located in " + questionCity + "? (open_nodes on the city, then on its companies)",
	reset: func(fx *fixture) error { return fx.resetMemory() },
	direct: func(ctx context.Context, a *agent, fx *fixture) (string, error) {
		for _, p := range fx.profiles {
			if _, err := a.call(ctx, "memory__create_entities", map[string]any{"entities": p.Entities}); err != nil {
				return "", err
			}
			if _, err := a.call(ctx, "memory__create_relations", map[string]any{"relations": p.Relations}); err != nil {
				return "", err
			}
		}
		around, err := openNodes(ctx, a, []string{questionCity})
		if err != nil {
			return "", err
		}
		var located []string
		for _, r := range around.Relations {
			if r.RelationType == "located_in" && r.To == questionCity && !slices.Contains(located, r.From) {
				located = append(located, r.From)
			}
		}
		if len(located) == 0 {
			return "", nil
		}
		slices.Sort(located)
		staff, err := openNodes(ctx, a, located)
		if err != nil {
			return "", err
		}
		var people []string
		for _, r := range staff.Relations {
			if r.RelationType == "works_at" && slices.Contains(located, r.To) && !slices.Contains(people, r.From) {
				people = append(people, r.From)
			}
		}
		slices.Sort(people)
		return strings.Join(people, ", "), nil
	},
	script: func(fx *fixture) string {
		type rec struct {
			Entities  []entity   `json:"entities"`
			Relations []relation `json:"relations"`
		}
		var ps []rec
		for _, p := range fx.profiles {
			ps = append(ps, rec{p.Entities, p.Relations})
		}
		return `const profiles = ` + jsLit(ps) + `;
for (const p of profiles) {
  await tools.memory.create_entities({ entities: p.entities });
  await tools.memory.create_relations({ relations: p.relations });
}
const city = ` + jsLit(questionCity) + `;
const around = await tools.memory.open_nodes({ names: [city] });
const companies = [...new Set(around.relations
  .filter((r) => r.relationType === "located_in" && r.to === city).map((r) => r.from))].sort();
if (companies.length === 0) return [];
const staff = await tools.memory.open_nodes({ names: companies });
return [...new Set(staff.relations
  .filter((r) => r.relationType === "works_at" && companies.includes(r.to)).map((r) => r.from))].sort();
`
	},
	answer: func(result json.RawMessage) (string, error) {
		l, err := stringList(result)
		return strings.Join(l, ", "), err
	},
	want: func(fx *fixture) string {
		var people []string
		for _, p := range fx.profiles {
			if p.City == questionCity {
				people = append(people, p.Staff...)
			}
		}
		slices.Sort(people)
		return strings.Join(people, ", ")
	},
}

// graph is the shape of server-memory's open_nodes answer.
type graph struct {
	Entities  []entity   `json:"entities"`
	Relations []relation `json:"relations"`
}

// openNodes calls open_nodes and decodes the JSON text the model reads.
func openNodes(ctx context.Context, a *agent, names []string) (*graph, error) {
	text, err := a.text(ctx, "memory__open_nodes", map[string]any{"names": names})
	if err != nil {
		return nil, err
	}
	var g graph
	if err := json.Unmarshal([]byte(text), &g); err != nil {
		return nil, fmt.Errorf("open_nodes answered something other than a graph: %w", err)
	}
	return &g, nil
}

// aggregateRecords: list the records folder, read each record, total and
// average a field.
var aggregateRecords = &task{
	name: "aggregate-records",
	description: "Read the " + itoa(recordCount) + " order records (JSON files) of the tree, one read_text_file per record after list_directory, " +
		"and report their count, total and average order value.",
	direct: func(ctx context.Context, a *agent, fx *fixture) (string, error) {
		dir := filepath.Join(fx.root, "records")
		listing, err := a.text(ctx, "filesystem__list_directory", map[string]any{"path": dir})
		if err != nil {
			return "", err
		}
		var names []string
		for _, l := range lines(listing) {
			if n, ok := strings.CutPrefix(l, "[FILE] "); ok && strings.HasSuffix(n, ".json") {
				names = append(names, n)
			}
		}
		slices.Sort(names)
		var total float64
		var currencies []string
		for _, n := range names {
			body, err := a.text(ctx, "filesystem__read_text_file", map[string]any{"path": dir + "/" + n})
			if err != nil {
				return "", err
			}
			var o struct {
				Total    *float64 `json:"total"`
				Currency string   `json:"currency"`
			}
			if err := json.Unmarshal([]byte(body), &o); err != nil {
				return "", fmt.Errorf("record %s: %w", n, err)
			}
			if o.Total == nil {
				return "", fmt.Errorf("record %s has no total", n)
			}
			total += *o.Total
			if !slices.Contains(currencies, o.Currency) {
				currencies = append(currencies, o.Currency)
			}
		}
		slices.Sort(currencies)
		return aggregateAnswer(len(names), total, strings.Join(currencies, ",")), nil
	},
	script: func(fx *fixture) string {
		return `const dir = ` + jsLit(filepath.Join(fx.root, "records")) + `;
const listing = await tools.filesystem.list_directory({ path: dir });
const names = listing.content.split("\n")
  .filter((l) => l.startsWith("[FILE] ") && l.endsWith(".json")).map((l) => l.slice(7)).sort();
const records = await Promise.all(names.map((n) => tools.filesystem.read_text_file({ path: dir + "/" + n })));
let total = 0;
const currencies = new Set();
for (const r of records) {
  const o = JSON.parse(r.content);
  total += o.total;
  currencies.add(o.currency);
}
return { count: names.length, total, currency: [...currencies].sort().join(",") };
`
	},
	answer: func(result json.RawMessage) (string, error) {
		var r struct {
			Count    *int     `json:"count"`
			Total    *float64 `json:"total"`
			Currency string   `json:"currency"`
		}
		if err := json.Unmarshal(result, &r); err != nil {
			return "", err
		}
		if r.Count == nil || r.Total == nil {
			return "", errors.New("want {count, total, currency}")
		}
		return aggregateAnswer(*r.Count, *r.Total, r.Currency), nil
	},
	want: func(fx *fixture) string {
		var total float64
		for _, o := range fx.records {
			total += o.Total
		}
		return aggregateAnswer(len(fx.records), total, "EUR")
	},
}

// aggregateAnswer formats the aggregate task's answer; the average is
// derived here, the same way for both runs.
func aggregateAnswer(count int, total float64, currency string) string {
	avg := 0.0
	if count > 0 {
		avg = total / float64(count)
	}
	return fmt.Sprintf("%d records, total %s %s, average %s %s", count,
		strconv.FormatFloat(total, 'f', 2, 64), currency, strconv.FormatFloat(avg, 'f', 2, 64), currency)
}
