package benchcompare

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The generated data. Everything is derived from fixed lists and indexes,
// so two runs see the same files, graph and answers.
const (
	// searchTerm is what the search-files task looks for.
	searchTerm = "legacy_tls"
	// questionCity is the city the memory-graph question is about.
	questionCity = "Lyon"
	// filesPerService is how many files each service folder holds.
	filesPerService = 10
	// recordCount is how many order records the aggregate task reads.
	recordCount = 20
	// peoplePerCompany is the staff of each company in the graph.
	peoplePerCompany = 6
)

// serviceNames are the service folders of the tree: with filesPerService
// files each and recordCount records, the tree holds 200 files.
var serviceNames = []string{
	"accounts", "analytics", "billing", "catalog", "checkout", "gateway",
	"inventory", "ledger", "media", "notifications", "payments", "pricing",
	"profile", "recommendations", "reviews", "search", "shipping", "support",
}

// fixture is the generated data of one run and where it lives.
type fixture struct {
	root       string // the tree served by server-filesystem
	memoryFile string // server-memory's graph
	files      int    // files written under root
	matches    []string
	records    []order
	profiles   []profile
}

// newFixture writes the tree under work/tree and chooses the memory file.
func newFixture(work string) (*fixture, error) {
	fx := &fixture{root: filepath.Join(work, "tree"), memoryFile: filepath.Join(work, "memory.jsonl")}
	if err := os.RemoveAll(fx.root); err != nil {
		return nil, fmt.Errorf("clearing the old tree: %w", err)
	}
	for i, name := range serviceNames {
		files, matches := serviceFiles(i, name)
		for _, rel := range slices.Sorted(maps.Keys(files)) {
			if err := fx.write(rel, files[rel]); err != nil {
				return nil, err
			}
		}
		fx.matches = append(fx.matches, matches...)
	}
	for i := range recordCount {
		o := newOrder(i)
		b, err := json.MarshalIndent(o, "", "  ")
		if err != nil {
			return nil, err
		}
		if err := fx.write(fmt.Sprintf("records/order-%03d.json", i+1), string(b)+"\n"); err != nil {
			return nil, err
		}
		fx.records = append(fx.records, o)
	}
	fx.profiles = profiles()
	if err := fx.resetMemory(); err != nil {
		return nil, err
	}
	return fx, nil
}

func (fx *fixture) write(rel, content string) error {
	p := filepath.Join(fx.root, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("writing the tree: %w", err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		return fmt.Errorf("writing the tree: %w", err)
	}
	fx.files++
	return nil
}

// resetMemory empties server-memory's graph (the server reads its file
// on every call).
func (fx *fixture) resetMemory() error {
	if err := os.WriteFile(fx.memoryFile, nil, 0o644); err != nil {
		return fmt.Errorf("emptying the memory file: %w", err)
	}
	return nil
}

// settings describes the generated data for the report.
func (fx *fixture) settings() map[string]string {
	entities, relations := fx.graphSize()
	files := map[string]bool{}
	for _, m := range fx.matches {
		f, _, _ := strings.Cut(m, ":")
		files[f] = true
	}
	return map[string]string{
		"treeFiles":          itoa(fx.files),
		"treeRoot":           fx.root,
		"services":           itoa(len(serviceNames)),
		"searchTerm":         searchTerm,
		"configFiles":        itoa(len(serviceNames)),
		"filesWithTerm":      itoa(len(files)),
		"matchingLines":      itoa(len(fx.matches)),
		"records":            itoa(len(fx.records)),
		"companies":          itoa(len(fx.profiles)),
		"entities":           itoa(entities),
		"relations":          itoa(relations),
		"questionCity":       questionCity,
		"contextBytes":       "per tools/call result: text of text content + compact JSON of structuredContent (+ JSON of any other content block)",
		"approxTokens":       "contextBytes/4, rounded up",
		"roundTrips":         "MCP tools/call requests sent by the client",
		"directGraphBuild":   "one create_entities and one create_relations call per company profile",
		"directFileReads":    "one read_text_file call per candidate file",
		"codeModeToolCalls":  "made inside the script, not counted as round trips",
		"gatewayCodeMode":    "enabled, directTools: true",
		"upstreamTransports": "stdio (node)",
	}
}

// serviceFiles returns the files of service i (paths relative to the tree
// root) and the search-files matches they hold ("path:line: text").
func serviceFiles(i int, name string) (map[string]string, []string) {
	dir := "services/" + name + "/"
	cfg, matches := serviceConfig(i, name)
	for j, line := range matches {
		matches[j] = dir + "config.yaml:" + line
	}
	title := strings.ToUpper(name[:1]) + name[1:]
	files := map[string]string{
		dir + "config.yaml": cfg,
		dir + "README.md": fmt.Sprintf(`# %s service

The %s service is owned by the %s team. It listens on port %d and is
deployed with %d replicas behind the internal gateway.

## Running locally

    npm ci
    npm start

The service reads config.yaml from its working directory; every key can be
overridden with an environment variable of the same name in upper case.

## Operations

- Dashboards: https://grafana.example.com/d/%s
- Alerts page the %s on-call rotation.
- Database migrations run before each deploy (see docs/api.md).
`, title, name, team(i), 8000+i, 2+i%4, name, team(i)),
		dir + "CHANGELOG.md": fmt.Sprintf(`# Changelog

## 2.%d.0
- Retry failed upstream requests with exponential backoff.
- Expose request duration histograms on /metrics.

## 2.%d.0
- Move the configuration to config.yaml.
- Drop support for Node 16.

## 1.%d.0
- First release of the %s service.
`, i%7+2, i%7+1, i%5, name),
		dir + "Dockerfile": fmt.Sprintf(`FROM node:22-alpine
WORKDIR /srv/%s
COPY package.json package-lock.json ./
RUN npm ci --omit=dev
COPY src ./src
COPY config.yaml ./
USER node
EXPOSE %d
CMD ["node", "src/index.js"]
`, name, 8000+i),
		dir + "package.json": fmt.Sprintf(`{
  "name": "@example/%s",
  "version": "2.%d.0",
  "private": true,
  "main": "src/index.js",
  "scripts": { "start": "node src/index.js", "test": "node --test test/" },
  "dependencies": { "pg": "^8.11.0", "redis": "^4.6.0", "yaml": "^2.4.0" }
}
`, name, i%7+2),
		dir + "src/index.js": fmt.Sprintf(`import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import YAML from "yaml";
import { handle } from "./handler.js";

const config = YAML.parse(readFileSync("config.yaml", "utf8"));
const server = createServer((req, res) => handle(config, req, res));
server.listen(config.service.port, () => {
  console.log("%s listening on", config.service.port);
});
`, name),
		dir + "src/handler.js": fmt.Sprintf(`import { json, notFound } from "./util.js";

// handle routes one request of the %s service.
export async function handle(config, req, res) {
  const url = new URL(req.url, "http://localhost");
  if (req.method === "GET" && url.pathname === "/healthz") {
    return json(res, 200, { ok: true, service: config.service.name });
  }
  if (req.method === "GET" && url.pathname.startsWith("/v1/%s/")) {
    const id = url.pathname.slice("/v1/%s/".length);
    return json(res, 200, { id, replicas: config.service.replicas });
  }
  return notFound(res);
}
`, name, name, name),
		dir + "src/util.js": `export function json(res, status, body) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

export function notFound(res) {
  return json(res, 404, { error: "not found" });
}
`,
		dir + "test/handler.test.js": fmt.Sprintf(`import { test } from "node:test";
import assert from "node:assert/strict";
import { handle } from "../src/handler.js";

test("%s health check", async () => {
  let status, body;
  const res = { writeHead: (s) => { status = s; }, end: (b) => { body = JSON.parse(b); } };
  await handle({ service: { name: "%s", replicas: %d } }, { method: "GET", url: "/healthz" }, res);
  assert.equal(status, 200);
  assert.equal(body.service, "%s");
});
`, name, name, 2+i%4, name),
		dir + "docs/api.md": fmt.Sprintf(`# %s API

All endpoints are under /v1/%s and answer JSON.

| method | path | description |
|---|---|---|
| GET | /v1/%s/{id} | one item by id |
| GET | /healthz | liveness |

Errors are {"error": "..."} with a 4xx or 5xx status. Requests time out
after the http.read_timeout of config.yaml.
`, title, name, name),
	}
	if len(files) != filesPerService {
		panic("benchcompare: service file count out of step with filesPerService")
	}
	return files, matches
}

func team(i int) string {
	return []string{"platform", "commerce", "growth", "payments", "data", "core"}[i%6]
}

// serviceConfig returns the config.yaml of service i and its lines that
// mention searchTerm ("line: trimmed text"). One service in three still
// has the term; one in six also sets it for an upstream connection.
func serviceConfig(i int, name string) (string, []string) {
	var lines, matches []string
	add := func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		lines = append(lines, line)
		if strings.Contains(line, searchTerm) {
			matches = append(matches, fmt.Sprintf("%d: %s", len(lines), strings.TrimSpace(line)))
		}
	}
	add("# Configuration of the %s service.", name)
	add("service:")
	add("  name: %s", name)
	add("  team: %s", team(i))
	add("  port: %d", 8000+i)
	add("  replicas: %d", 2+i%4)
	add("  log_level: %s", []string{"info", "debug", "warn"}[i%3])
	add("http:")
	add("  read_timeout: %ds", 10+5*(i%3))
	add("  write_timeout: 30s")
	add("  max_body_bytes: %d", 1<<(20+i%3))
	add("  cors:")
	add("    allowed_origins:")
	add("      - https://app.example.com")
	add("      - https://admin.example.com")
	add("tls:")
	add("  enabled: true")
	add(`  min_version: "1.%d"`, 2+i%2)
	if i%3 == 0 {
		if i%2 == 0 {
			add("  %s: true   # still needed by old point-of-sale terminals", searchTerm)
		} else {
			add("  %s: false  # scheduled for removal", searchTerm)
		}
	}
	add("  cert_file: /etc/%s/tls/cert.pem", name)
	add("  key_file: /etc/%s/tls/key.pem", name)
	add("database:")
	add("  driver: postgres")
	add("  host: %s-db.internal", name)
	add("  port: 5432")
	add("  name: %s", name)
	add("  pool:")
	add("    max_open: %d", 10+i)
	add("    max_idle: 5")
	add("    conn_max_lifetime: 30m")
	add("cache:")
	add("  backend: redis")
	add("  address: redis.internal:6379")
	add("  ttl: %ds", 60*(i%5+1))
	add("features:")
	for f := range i%5 + 2 {
		add("  - name: %s_flag_%d", name, f+1)
		add("    enabled: %v", (i+f)%2 == 0)
	}
	add("upstreams:")
	for u, up := range []string{"accounts", "ledger"} {
		add("  - name: %s", up)
		add("    url: https://%s.internal:%d", up, 8000+u)
		add("    timeout: 5s")
		if i%6 == 0 && u == 1 {
			add("    %s: true", searchTerm)
		}
	}
	add("metrics:")
	add("  enabled: true")
	add("  path: /metrics")
	return strings.Join(lines, "\n") + "\n", matches
}

// order is one record of the aggregate task.
type order struct {
	ID        string      `json:"id"`
	CreatedAt string      `json:"createdAt"`
	Status    string      `json:"status"`
	Customer  customer    `json:"customer"`
	Currency  string      `json:"currency"`
	Lines     []orderLine `json:"lines"`
	Shipping  float64     `json:"shipping"`
	Total     float64     `json:"total"`
	Notes     string      `json:"notes"`
}

type customer struct {
	ID      string  `json:"id"`
	Name    string  `json:"name"`
	Email   string  `json:"email"`
	Address address `json:"address"`
}

type address struct {
	Street   string `json:"street"`
	City     string `json:"city"`
	Postcode string `json:"postcode"`
	Country  string `json:"country"`
}

type orderLine struct {
	SKU         string  `json:"sku"`
	Description string  `json:"description"`
	Quantity    int     `json:"quantity"`
	UnitPrice   float64 `json:"unitPrice"`
}

var products = []struct {
	sku, desc string
	cents     int
}{
	{"TEA-001", "Sencha green tea, 100 g", 1290},
	{"TEA-014", "Assam breakfast tea, 250 g", 1650},
	{"CUP-203", "Stoneware mug, 350 ml", 1490},
	{"POT-010", "Cast iron teapot, 0.8 l", 4900},
	{"KET-002", "Gooseneck kettle, 1 l", 6990},
	{"FIL-120", "Paper filters, pack of 100", 450},
	{"COF-031", "Ethiopia Yirgacheffe beans, 250 g", 1390},
	{"GRD-004", "Hand grinder, ceramic burr", 3950},
}

var customerNames = []string{
	"Ines Moreau", "Jonas Weber", "Lucia Ferreira", "Mads Nilsen", "Chloe Martin",
	"Felix Braun", "Ana Costa", "Ingrid Berg", "Hugo Laurent", "Lena Schmidt",
}

var customerCities = []address{
	{"12 rue Merciere", "Lyon", "69002", "FR"},
	{"Torstrasse 101", "Berlin", "10119", "DE"},
	{"Rua das Flores 45", "Porto", "4050-265", "PT"},
	{"Karl Johans gate 7", "Oslo", "0154", "NO"},
}

// newOrder returns record i; its total is the sum of its lines plus
// shipping, computed in cents.
func newOrder(i int) order {
	c := customerNames[i%len(customerNames)]
	a := customerCities[i%len(customerCities)]
	o := order{
		ID:        fmt.Sprintf("ORD-2026-%04d", 1001+i),
		CreatedAt: fmt.Sprintf("2026-03-%02dT%02d:%02d:00Z", 1+i, 8+i%10, (i*7)%60),
		Status:    []string{"paid", "shipped", "delivered", "shipped"}[i%4],
		Customer: customer{
			ID:      fmt.Sprintf("C-%04d", 2000+i%len(customerNames)),
			Name:    c,
			Email:   strings.ToLower(strings.ReplaceAll(c, " ", ".")) + "@example.com",
			Address: a,
		},
		Currency: "EUR",
		Notes:    []string{"Leave at the front desk.", "Gift wrap, no invoice in the parcel.", "", "Call before delivery."}[i%4],
	}
	cents := 0
	for l := range 2 + i%3 {
		p := products[(i*3+l*5)%len(products)]
		q := 1 + (i+l)%3
		o.Lines = append(o.Lines, orderLine{SKU: p.sku, Description: p.desc, Quantity: q, UnitPrice: float64(p.cents) / 100})
		cents += q * p.cents
	}
	ship := []int{490, 0, 690, 990}[i%4]
	o.Shipping = float64(ship) / 100
	o.Total = float64(cents+ship) / 100
	return o
}

// entity and relation are server-memory's shapes.
type entity struct {
	Name         string   `json:"name"`
	EntityType   string   `json:"entityType"`
	Observations []string `json:"observations"`
}

type relation struct {
	From         string `json:"from"`
	To           string `json:"to"`
	RelationType string `json:"relationType"`
}

// profile is what the agent records for one company: the entities not
// recorded before and the relations it states.
type profile struct {
	Company   string     `json:"company"`
	City      string     `json:"city"`
	Staff     []string   `json:"staff"`
	Entities  []entity   `json:"entities"`
	Relations []relation `json:"relations"`
}

var cities = []struct{ name, country string }{
	{"Lyon", "France"}, {"Berlin", "Germany"}, {"Porto", "Portugal"}, {"Oslo", "Norway"},
}

var companies = []struct {
	name, industry string
	city           int
	founded        int
}{
	{"Rhone Freight", "logistics", 0, 2009},
	{"Kestrel Robotics", "industrial robots", 1, 2015},
	{"Silkworks Studio", "textile design", 0, 2012},
	{"Douro Analytics", "data consulting", 2, 2018},
	{"Fjord Energy", "hydropower", 3, 2004},
	{"Spree Payments", "payments", 1, 2016},
	{"Canut Software", "software", 0, 2011},
	{"Ribeira Foods", "food distribution", 2, 2007},
}

var firstNames = []string{
	"Adele", "Bruno", "Camille", "Damien", "Elodie", "Fabien", "Gaelle", "Henri",
	"Isabel", "Jakob", "Katrin", "Lukas", "Marta", "Nils", "Olga", "Pedro",
	"Quentin", "Rita", "Sven", "Tiago", "Ulla", "Victor", "Wiebke", "Yann",
}

var lastNames = []string{"Arnaud", "Becker", "Carvalho", "Dahl", "Esteves", "Fischer"}

var roles = []string{"Chief executive", "Backend engineer", "Designer", "Sales lead", "Data analyst", "Operations manager"}

// profiles returns the company profiles in the order the agent records
// them. People work at one company; some live in another city than their
// employer's, so "mentions Lyon" is not the same as "works in Lyon".
func profiles() []profile {
	seen := map[string]bool{}
	var out []profile
	person := 0
	for ci, c := range companies {
		city := cities[c.city]
		p := profile{Company: c.name, City: city.name}
		addCity := func(i int) {
			if !seen[cities[i].name] {
				seen[cities[i].name] = true
				p.Entities = append(p.Entities, entity{cities[i].name, "city", []string{"Country: " + cities[i].country}})
			}
		}
		addCity(c.city)
		p.Entities = append(p.Entities, entity{c.name, "company", []string{
			"Industry: " + c.industry, fmt.Sprintf("Founded in %d", c.founded), fmt.Sprintf("Employees: %d", 40+ci*35),
		}})
		p.Relations = append(p.Relations, relation{c.name, city.name, "located_in"})
		for j := range peoplePerCompany {
			name := firstNames[person%len(firstNames)] + " " + lastNames[(person/len(firstNames)+j)%len(lastNames)]
			home := c.city
			if j == peoplePerCompany-1 {
				home = (c.city + 1) % len(cities) // commutes from elsewhere
			}
			addCity(home)
			p.Staff = append(p.Staff, name)
			p.Entities = append(p.Entities, entity{name, "person", []string{
				"Role: " + roles[j%len(roles)], fmt.Sprintf("Joined %s in %d", c.name, 2016+(person%9)), "Lives in " + cities[home].name,
			}})
			p.Relations = append(p.Relations, relation{name, c.name, "works_at"}, relation{name, cities[home].name, "lives_in"})
			person++
		}
		out = append(out, p)
	}
	return out
}

// graphSize counts the graph's entities and relations.
func (fx *fixture) graphSize() (entities, relations int) {
	for _, p := range fx.profiles {
		entities += len(p.Entities)
		relations += len(p.Relations)
	}
	return entities, relations
}
