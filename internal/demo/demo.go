// Package demo is the built-in upstream MCP server that `toolgate serve` runs
// in process when there is no configuration file, so that a newcomer sees the
// gateway work at once.
//
// It serves a few small, deterministic tools (text, arithmetic, a fixed table
// of 50 records, a large generated export of it and a fixed set of notes),
// one resource and one prompt. It
// has no side effects and reaches nothing outside the process; the same
// request always gets the same answer, which also makes it a stable upstream
// for tests and benchmarks.
package demo

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

const (
	serverName    = "toolgate-demo"
	serverVersion = "0.1.0"
	readmeURI     = "demo://readme"

	defaultLimit = 10
	maxLimit     = 20

	defaultExportRows = 1000
	maxExportRows     = 5000
)

// NewServer returns a new demo server. Each call builds an independent
// server over the same fixed data; connect it to a transport with
// [mcp.Server.Connect] or [mcp.Server.Run].
func NewServer() *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{
		Name:    serverName,
		Title:   "toolgate demo",
		Version: serverVersion,
	}, &mcp.ServerOptions{
		Instructions: "A demo server with deterministic sample data: text tools, " +
			"a table of 50 records (list_records, get_record) and 20 notes (search_notes). " +
			"Read " + readmeURI + " for details.",
	})

	mcp.AddTool(s, &mcp.Tool{
		Name:        "echo",
		Title:       "Echo",
		Description: "Return the given text unchanged, as text content. Useful to check that calls get through.",
		Annotations: readOnly("Echo"),
	}, echo)

	mcp.AddTool(s, &mcp.Tool{
		Name:        "add",
		Title:       "Add two numbers",
		Description: "Add two numbers and return {sum}.",
		Annotations: readOnly("Add two numbers"),
	}, add)

	mcp.AddTool(s, &mcp.Tool{
		Name:  "word_count",
		Title: "Count words",
		Description: "Count the words (runs of non-space characters), lines and characters " +
			"(Unicode code points) of a text. A final newline does not start a new line.",
		Annotations: readOnly("Count words"),
	}, wordCount)

	mcp.AddTool(s, &mcp.Tool{
		Name:  "list_records",
		Title: "List records",
		Description: fmt.Sprintf("List the demo records (%d in all, ordered by id), one page at a time. "+
			"Each record has id, name, city, amount (whole euros) and tags. "+
			"Returns {records, total, offset, limit, nextOffset}; nextOffset is absent on the last page. "+
			"limit is 1 to %d (default %d).", len(records), maxLimit, defaultLimit),
		// No "default" keywords: go-sdk v1.8.0 panics applying defaults to
		// "arguments": null, so the handler fills them in instead.
		InputSchema: inputSchema[listRecordsIn](func(p map[string]*jsonschema.Schema) {
			p["limit"].Minimum, p["limit"].Maximum = ptr(1.0), ptr(float64(maxLimit))
			p["offset"].Minimum = ptr(0.0)
		}),
		Annotations: readOnly("List records"),
	}, listRecords)

	mcp.AddTool(s, &mcp.Tool{
		Name:        "get_record",
		Title:       "Get a record",
		Description: fmt.Sprintf("Get one demo record by id (1 to %d): {id, name, city, amount, tags}.", len(records)),
		InputSchema: inputSchema[getRecordIn](func(p map[string]*jsonschema.Schema) {
			p["id"].Minimum = ptr(1.0)
		}),
		Annotations: readOnly("Get a record"),
	}, getRecord)

	mcp.AddTool(s, &mcp.Tool{
		Name:  "export_records",
		Title: "Export records",
		Description: fmt.Sprintf("Export a large generated table in one result: rows copies of the %d demo records "+
			"cycled in id order, row i (from 1) being record ((i-1) mod %d)+1 with id i and its amount raised by "+
			"(i-1) div %d. Returns {rows, count}; rows is 1 to %d (default %d, about 100 KB of JSON). "+
			"Meant for trying large results, for example transforming them in Code Mode.",
			len(records), len(records), len(records), maxExportRows, defaultExportRows),
		InputSchema: inputSchema[exportRecordsIn](func(p map[string]*jsonschema.Schema) {
			p["rows"].Minimum, p["rows"].Maximum = ptr(1.0), ptr(float64(maxExportRows))
		}),
		Annotations: readOnly("Export records"),
	}, exportRecords)

	mcp.AddTool(s, &mcp.Tool{
		Name:  "search_notes",
		Title: "Search notes",
		Description: fmt.Sprintf("Search the %d demo notes line by line. A line matches when it contains every word "+
			"of the query, ignoring case. Returns the ids of the matching notes and each matching line "+
			"with its note id, title and 1-based line number.", len(notes)),
		InputSchema: inputSchema[searchNotesIn](func(p map[string]*jsonschema.Schema) {
			p["query"].MinLength = ptr(1)
		}),
		Annotations: readOnly("Search notes"),
	}, searchNotes)

	s.AddResource(&mcp.Resource{
		URI:         readmeURI,
		Name:        "readme",
		Title:       "About the toolgate demo",
		Description: "What the demo server offers and how to try it.",
		MIMEType:    "text/markdown",
		Size:        int64(len(readme)),
	}, func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{
			URI:      readmeURI,
			MIMEType: "text/markdown",
			Text:     readme,
		}}}, nil
	})

	s.AddPrompt(&mcp.Prompt{
		Name:        "summarize_records",
		Title:       "Summarize the records of a city",
		Description: "Ask for a summary of the demo records of one city: count, total and average amount, largest records, common tags.",
		Arguments: []*mcp.PromptArgument{{
			Name:        "city",
			Title:       "City",
			Description: "One of " + strings.Join(cities(), ", ") + " (any case).",
			Required:    true,
		}},
	}, summarizeRecords)

	return s
}

func readOnly(title string) *mcp.ToolAnnotations {
	return &mcp.ToolAnnotations{
		Title:          title,
		ReadOnlyHint:   true,
		IdempotentHint: true,
		OpenWorldHint:  ptr(false),
	}
}

func ptr[T any](v T) *T { return &v }

// inputSchema infers the schema of T and lets adjust add what struct tags
// cannot say (bounds, defaults) to its properties.
func inputSchema[T any](adjust func(props map[string]*jsonschema.Schema)) *jsonschema.Schema {
	s, err := jsonschema.For[T](nil)
	if err != nil {
		panic(fmt.Sprintf("demo: input schema for %T: %v", *new(T), err))
	}
	adjust(s.Properties)
	return s
}

type echoIn struct {
	Text string `json:"text" jsonschema:"the text to return"`
}

func echo(_ context.Context, _ *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
}

type addIn struct {
	A float64 `json:"a" jsonschema:"the first number"`
	B float64 `json:"b" jsonschema:"the second number"`
}

type addOut struct {
	Sum float64 `json:"sum" jsonschema:"a + b"`
}

func add(_ context.Context, _ *mcp.CallToolRequest, in addIn) (*mcp.CallToolResult, addOut, error) {
	sum := in.A + in.B
	if math.IsInf(sum, 0) {
		return nil, addOut{}, fmt.Errorf("the sum of %g and %g is too large to represent", in.A, in.B)
	}
	return nil, addOut{Sum: sum}, nil
}

type wordCountIn struct {
	Text string `json:"text" jsonschema:"the text to measure"`
}

type wordCountOut struct {
	Words      int `json:"words" jsonschema:"number of runs of non-space characters"`
	Lines      int `json:"lines" jsonschema:"number of lines; 0 for an empty text"`
	Characters int `json:"characters" jsonschema:"number of Unicode code points"`
}

func wordCount(_ context.Context, _ *mcp.CallToolRequest, in wordCountIn) (*mcp.CallToolResult, wordCountOut, error) {
	return nil, countWords(in.Text), nil
}

func countWords(text string) wordCountOut {
	out := wordCountOut{
		Words:      len(strings.Fields(text)),
		Characters: utf8.RuneCountInString(text),
	}
	if text != "" {
		out.Lines = strings.Count(strings.TrimSuffix(text, "\n"), "\n") + 1
	}
	return out
}

// record is one row of the demo table.
type record struct {
	ID     int      `json:"id" jsonschema:"the record id, from 1"`
	Name   string   `json:"name" jsonschema:"the customer's name"`
	City   string   `json:"city" jsonschema:"the customer's city"`
	Amount int      `json:"amount" jsonschema:"the amount in whole euros"`
	Tags   []string `json:"tags" jsonschema:"labels, sorted"`
}

type listRecordsIn struct {
	Limit  int `json:"limit,omitempty" jsonschema:"how many records to return (default 10)"`
	Offset int `json:"offset,omitempty" jsonschema:"how many records to skip (default 0)"`
}

type listRecordsOut struct {
	Records    []record `json:"records" jsonschema:"the records of this page, ordered by id"`
	Total      int      `json:"total" jsonschema:"the number of records in the table"`
	Offset     int      `json:"offset" jsonschema:"the offset of this page"`
	Limit      int      `json:"limit" jsonschema:"the page size used"`
	NextOffset *int     `json:"nextOffset,omitempty" jsonschema:"the offset of the next page; absent on the last page"`
}

func listRecords(_ context.Context, _ *mcp.CallToolRequest, in listRecordsIn) (*mcp.CallToolResult, listRecordsOut, error) {
	// The input schema enforces the bounds; these checks keep the handler
	// safe on its own. An absent limit decodes as 0.
	if in.Limit == 0 {
		in.Limit = defaultLimit
	}
	if in.Limit < 1 || in.Limit > maxLimit {
		return nil, listRecordsOut{}, fmt.Errorf("limit must be between 1 and %d, got %d", maxLimit, in.Limit)
	}
	if in.Offset < 0 {
		return nil, listRecordsOut{}, fmt.Errorf("offset must not be negative, got %d", in.Offset)
	}
	out := listRecordsOut{Records: []record{}, Total: len(records), Offset: in.Offset, Limit: in.Limit}
	if in.Offset < len(records) {
		end := min(in.Offset+in.Limit, len(records))
		for _, r := range records[in.Offset:end] {
			out.Records = append(out.Records, r.clone())
		}
		if end < len(records) {
			out.NextOffset = &end
		}
	}
	return nil, out, nil
}

type exportRecordsIn struct {
	Rows int `json:"rows,omitempty" jsonschema:"how many rows to export (default 1000)"`
}

type exportRecordsOut struct {
	Rows  []record `json:"rows" jsonschema:"the generated rows, ordered by id"`
	Count int      `json:"count" jsonschema:"the number of rows"`
}

func exportRecords(_ context.Context, _ *mcp.CallToolRequest, in exportRecordsIn) (*mcp.CallToolResult, exportRecordsOut, error) {
	if in.Rows == 0 { // absent
		in.Rows = defaultExportRows
	}
	if in.Rows < 1 || in.Rows > maxExportRows {
		return nil, exportRecordsOut{}, fmt.Errorf("rows must be between 1 and %d, got %d", maxExportRows, in.Rows)
	}
	out := exportRecordsOut{Rows: make([]record, in.Rows), Count: in.Rows}
	for i := range out.Rows {
		r := records[i%len(records)].clone()
		r.ID = i + 1
		r.Amount += i / len(records)
		out.Rows[i] = r
	}
	return nil, out, nil
}

type getRecordIn struct {
	ID int `json:"id" jsonschema:"the record id"`
}

func getRecord(_ context.Context, _ *mcp.CallToolRequest, in getRecordIn) (*mcp.CallToolResult, record, error) {
	if in.ID < 1 || in.ID > len(records) {
		return nil, record{}, fmt.Errorf("no record with id %d: ids run from 1 to %d", in.ID, len(records))
	}
	return nil, records[in.ID-1].clone(), nil
}

func (r record) clone() record {
	r.Tags = slices.Clone(r.Tags)
	return r
}

// cities returns the distinct cities of the records, sorted.
func cities() []string {
	var cs []string
	for _, r := range records {
		cs = append(cs, r.City)
	}
	slices.Sort(cs)
	return slices.Compact(cs)
}

type searchNotesIn struct {
	Query string `json:"query" jsonschema:"words that must all occur in a line, ignoring case"`
}

type noteMatch struct {
	NoteID string `json:"noteId" jsonschema:"the id of the note"`
	Title  string `json:"title" jsonschema:"the note's title"`
	Line   int    `json:"line" jsonschema:"the 1-based line number within the note"`
	Text   string `json:"text" jsonschema:"the matching line"`
}

type searchNotesOut struct {
	Query   string      `json:"query" jsonschema:"the query as given"`
	NoteIDs []string    `json:"noteIds" jsonschema:"the ids of the notes with at least one matching line, in order"`
	Matches []noteMatch `json:"matches" jsonschema:"every matching line, in note and line order"`
}

func searchNotes(_ context.Context, _ *mcp.CallToolRequest, in searchNotesIn) (*mcp.CallToolResult, searchNotesOut, error) {
	terms := strings.Fields(strings.ToLower(in.Query))
	if len(terms) == 0 {
		return nil, searchNotesOut{}, fmt.Errorf("query must contain at least one word")
	}
	out := searchNotesOut{Query: in.Query, NoteIDs: []string{}, Matches: []noteMatch{}}
	for _, n := range notes {
		found := false
		for i, line := range n.Lines {
			if containsAll(strings.ToLower(line), terms) {
				out.Matches = append(out.Matches, noteMatch{NoteID: n.ID, Title: n.Title, Line: i + 1, Text: line})
				found = true
			}
		}
		if found {
			out.NoteIDs = append(out.NoteIDs, n.ID)
		}
	}
	return nil, out, nil
}

func containsAll(s string, terms []string) bool {
	for _, t := range terms {
		if !strings.Contains(s, t) {
			return false
		}
	}
	return true
}

func summarizeRecords(_ context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
	arg := strings.TrimSpace(req.Params.Arguments["city"])
	if arg == "" {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: `missing required argument "city"`}
	}
	i := slices.IndexFunc(cities(), func(c string) bool { return strings.EqualFold(c, arg) })
	if i < 0 {
		return nil, &jsonrpc.Error{
			Code:    jsonrpc.CodeInvalidParams,
			Message: fmt.Sprintf("unknown city %q: choose one of %s", arg, strings.Join(cities(), ", ")),
		}
	}
	city := cities()[i]
	text := fmt.Sprintf("Summarize the demo records of %[1]s.\n\n"+
		"Fetch every record with the list_records tool (page with limit and offset until nextOffset is absent; "+
		"in Code Mode one script can do the paging), keep those whose city is %[1]s, and report:\n"+
		"- how many records there are;\n"+
		"- their total and average amount (in euros);\n"+
		"- the three largest records by amount, with id and name;\n"+
		"- the tags that occur most often.\n"+
		"Base every number on the tool results, not on guesses.", city)
	return &mcp.GetPromptResult{
		Description: "Summary of the demo records of " + city,
		Messages:    []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: text}}},
	}, nil
}

// records is the demo table: 50 fixed rows, ordered by id, record i at
// index i-1.
var records = []record{
	{ID: 1, Name: "Ada Almeida", City: "Lisbon", Amount: 1962, Tags: []string{"new", "returning"}},
	{ID: 2, Name: "Bruno Haddad", City: "Lisbon", Amount: 1923, Tags: []string{"refund", "retail", "wholesale"}},
	{ID: 3, Name: "Chiara Okafor", City: "Nairobi", Amount: 474, Tags: []string{"new", "returning"}},
	{ID: 4, Name: "Dmitri Weber", City: "Lisbon", Amount: 1129, Tags: []string{"priority"}},
	{ID: 5, Name: "Elif Dubois", City: "Berlin", Amount: 788, Tags: []string{"new"}},
	{ID: 6, Name: "Farah Kamau", City: "Toronto", Amount: 437, Tags: []string{"priority", "wholesale"}},
	{ID: 7, Name: "Gustavo Santos", City: "Lisbon", Amount: 80, Tags: []string{"new"}},
	{ID: 8, Name: "Hana Mwangi", City: "Nairobi", Amount: 2210, Tags: []string{"retail"}},
	{ID: 9, Name: "Ines Garcia", City: "Osaka", Amount: 926, Tags: []string{"retail"}},
	{ID: 10, Name: "Jonas Novak", City: "Lisbon", Amount: 1787, Tags: []string{"refund", "retail", "returning"}},
	{ID: 11, Name: "Kwame Vargas", City: "Lisbon", Amount: 1056, Tags: []string{"returning"}},
	{ID: 12, Name: "Lena Costa", City: "Osaka", Amount: 893, Tags: []string{"online", "priority"}},
	{ID: 13, Name: "Mateo Jansen", City: "Osaka", Amount: 2247, Tags: []string{"new"}},
	{ID: 14, Name: "Nadia Rossi", City: "Osaka", Amount: 1656, Tags: []string{"priority", "wholesale"}},
	{ID: 15, Name: "Oskar Zhang", City: "Lisbon", Amount: 2374, Tags: []string{"online"}},
	{ID: 16, Name: "Priya Fischer", City: "Toronto", Amount: 1932, Tags: []string{"returning", "wholesale"}},
	{ID: 17, Name: "Quentin Moreau", City: "Nairobi", Amount: 1089, Tags: []string{"returning"}},
	{ID: 18, Name: "Rosa Umarov", City: "Nairobi", Amount: 2212, Tags: []string{"new", "online", "refund"}},
	{ID: 19, Name: "Sami Becker", City: "Nairobi", Amount: 169, Tags: []string{"online", "priority", "retail"}},
	{ID: 20, Name: "Tomas Ito", City: "Berlin", Amount: 904, Tags: []string{"new", "refund"}},
	{ID: 21, Name: "Uma Petrov", City: "Berlin", Amount: 681, Tags: []string{"online", "refund"}},
	{ID: 22, Name: "Viktor Yilmaz", City: "Lisbon", Amount: 1029, Tags: []string{"new", "online", "wholesale"}},
	{ID: 23, Name: "Wanjiru Eriksen", City: "Nairobi", Amount: 1965, Tags: []string{"online", "priority", "refund"}},
	{ID: 24, Name: "Yusuf Lindqvist", City: "Berlin", Amount: 781, Tags: []string{"priority"}},
	{ID: 25, Name: "Zofia Tanaka", City: "Nairobi", Amount: 826, Tags: []string{"online", "priority", "retail"}},
	{ID: 26, Name: "Ada Becker", City: "Toronto", Amount: 2084, Tags: []string{"retail"}},
	{ID: 27, Name: "Bruno Ito", City: "Lisbon", Amount: 1128, Tags: []string{"wholesale"}},
	{ID: 28, Name: "Chiara Petrov", City: "Nairobi", Amount: 953, Tags: []string{"new", "refund", "returning"}},
	{ID: 29, Name: "Dmitri Yilmaz", City: "Toronto", Amount: 665, Tags: []string{"online"}},
	{ID: 30, Name: "Elif Eriksen", City: "Toronto", Amount: 1474, Tags: []string{"refund", "wholesale"}},
	{ID: 31, Name: "Farah Lindqvist", City: "Lisbon", Amount: 740, Tags: []string{"priority", "wholesale"}},
	{ID: 32, Name: "Gustavo Tanaka", City: "Nairobi", Amount: 1944, Tags: []string{"online", "priority"}},
	{ID: 33, Name: "Hana Almeida", City: "Berlin", Amount: 1089, Tags: []string{"priority", "returning", "wholesale"}},
	{ID: 34, Name: "Ines Haddad", City: "Osaka", Amount: 2220, Tags: []string{"priority"}},
	{ID: 35, Name: "Jonas Okafor", City: "Toronto", Amount: 1247, Tags: []string{"new", "retail"}},
	{ID: 36, Name: "Kwame Weber", City: "Nairobi", Amount: 1483, Tags: []string{"new", "wholesale"}},
	{ID: 37, Name: "Lena Dubois", City: "Berlin", Amount: 42, Tags: []string{"online", "priority"}},
	{ID: 38, Name: "Mateo Kamau", City: "Nairobi", Amount: 531, Tags: []string{"online", "refund", "retail"}},
	{ID: 39, Name: "Nadia Santos", City: "Osaka", Amount: 2142, Tags: []string{"online"}},
	{ID: 40, Name: "Oskar Mwangi", City: "Nairobi", Amount: 875, Tags: []string{"wholesale"}},
	{ID: 41, Name: "Priya Garcia", City: "Osaka", Amount: 979, Tags: []string{"new", "refund"}},
	{ID: 42, Name: "Quentin Novak", City: "Berlin", Amount: 2225, Tags: []string{"new", "online", "returning"}},
	{ID: 43, Name: "Rosa Vargas", City: "Toronto", Amount: 1784, Tags: []string{"refund"}},
	{ID: 44, Name: "Sami Costa", City: "Toronto", Amount: 1405, Tags: []string{"priority", "refund", "retail"}},
	{ID: 45, Name: "Tomas Jansen", City: "Osaka", Amount: 1832, Tags: []string{"new", "priority", "wholesale"}},
	{ID: 46, Name: "Uma Rossi", City: "Lisbon", Amount: 702, Tags: []string{"wholesale"}},
	{ID: 47, Name: "Viktor Zhang", City: "Osaka", Amount: 1056, Tags: []string{"returning"}},
	{ID: 48, Name: "Wanjiru Fischer", City: "Nairobi", Amount: 1453, Tags: []string{"new", "returning", "wholesale"}},
	{ID: 49, Name: "Yusuf Moreau", City: "Toronto", Amount: 1263, Tags: []string{"online"}},
	{ID: 50, Name: "Zofia Umarov", City: "Toronto", Amount: 337, Tags: []string{"new", "returning", "wholesale"}},
}

// note is one of the demo notes searched by search_notes.
type note struct {
	ID    string
	Title string
	Lines []string
}

// notes are short, fixed notes of a made-up small company, some of which
// refer to the records so that an agent can combine the two.
var notes = []note{
	{"n01", "Welcome", []string{
		"These notes belong to a small made-up trading company.",
		"They are fixed demo data: search them with search_notes.",
	}},
	{"n02", "Lisbon office", []string{
		"The Lisbon office handles more wholesale orders than any other.",
		"Ask for Bruno Haddad about refunds on wholesale orders.",
	}},
	{"n03", "Refund policy", []string{
		"Refunds are approved within 14 days of the order.",
		"Orders tagged refund need a second review above 1500 euros.",
		"Priority customers get their refunds first.",
	}},
	{"n04", "Nairobi launch", []string{
		"Nairobi became our largest city by number of records this year.",
		"Online orders from Nairobi doubled after the mobile launch.",
	}},
	{"n05", "Osaka shipping", []string{
		"Shipping to Osaka takes five working days by sea.",
		"Priority orders to Osaka go by air.",
	}},
	{"n06", "Toronto retail", []string{
		"Toronto retail customers prefer pickup in store.",
		"Rosa Vargas asked for a refund on her last order.",
	}},
	{"n07", "Berlin team", []string{
		"The Berlin team is the smallest, seven customers so far.",
		"Quentin Novak is our largest Berlin customer.",
	}},
	{"n08", "Tag meanings", []string{
		"new: first order this year.",
		"returning: ordered before this year.",
		"priority: served first by support and shipping.",
		"wholesale: buys in bulk at list price minus 12 percent.",
	}},
	{"n09", "Amounts", []string{
		"Record amounts are whole euros, taxes included.",
		"Use list_records and add them up; do not estimate.",
	}},
	{"n10", "Quarterly review", []string{
		"Compare the total amount per city every quarter.",
		"Flag any city whose average amount drops below 800 euros.",
	}},
	{"n11", "Support hours", []string{
		"Support answers from 08:00 to 18:00 in each office's time zone.",
		"Priority customers may call the on-call line at any hour.",
	}},
	{"n12", "Online shop", []string{
		"The online shop moved to a new payment provider in March.",
		"Orders tagged online are paid in advance.",
	}},
	{"n13", "Wholesale terms", []string{
		"Wholesale orders are invoiced at 30 days.",
		"A wholesale order below 500 euros is charged a handling fee.",
	}},
	{"n14", "Data hygiene", []string{
		"Every record has exactly one city and at least one tag.",
		"Ids are stable: record 1 is always Ada Almeida.",
	}},
	{"n15", "Onboarding new customers", []string{
		"Tag first orders as new and send the welcome pack.",
		"A new customer becomes returning after the second order.",
	}},
	{"n16", "Agents and tools", []string{
		"Agents reach these notes and the records only through toolgate.",
		"Every tool call is checked by the gateway and written to the audit log.",
	}},
	{"n17", "Code Mode tip", []string{
		"In Code Mode one script can page through list_records and aggregate.",
		"That is one round trip for the agent instead of one call per page.",
	}},
	{"n18", "Holidays", []string{
		"The Osaka office closes for Golden Week in early May.",
		"The Toronto office closes on Canada Day.",
	}},
	{"n19", "Largest orders", []string{
		"Orders above 2000 euros need a manager's approval.",
		"Oskar Zhang in Lisbon placed the largest order of the year.",
	}},
	{"n20", "Glossary", []string{
		"Record: one customer with a city, an amount and tags.",
		"Note: a short text like this one, searchable by word.",
	}},
}

// readme is the text of the demo://readme resource.
const readme = `# toolgate demo

This is the built-in demo upstream of toolgate. ` + "`toolgate serve`" + ` runs it in
process when there is no configuration file, so that you can try the gateway
at once. All of its data is fixed: the same call always returns the same
result, and nothing outside the process is touched.

## Tools

| tool | arguments | returns |
|---|---|---|
| ` + "`echo`" + ` | ` + "`text`" + ` | the text, unchanged |
| ` + "`add`" + ` | ` + "`a`, `b`" + ` (numbers) | ` + "`{sum}`" + ` |
| ` + "`word_count`" + ` | ` + "`text`" + ` | ` + "`{words, lines, characters}`" + ` |
| ` + "`list_records`" + ` | ` + "`limit?` (1-20, default 10), `offset?`" + ` | ` + "`{records, total, offset, limit, nextOffset?}`" + ` |
| ` + "`get_record`" + ` | ` + "`id`" + ` (1-50) | ` + "`{id, name, city, amount, tags}`" + ` |
| ` + "`export_records`" + ` | ` + "`rows?`" + ` (1-5000, default 1000) | ` + "`{rows, count}`" + `: the records cycled into a large table |
| ` + "`search_notes`" + ` | ` + "`query`" + ` | ` + "`{query, noteIds, matches: [{noteId, title, line, text}]}`" + ` |

The records are 50 customers in Berlin, Lisbon, Nairobi, Osaka and Toronto,
each with an amount in whole euros and a few tags (new, online, priority,
refund, retail, returning, wholesale). The 20 notes are short texts about the
same made-up company.

## Resource and prompt

- ` + "`demo://readme`" + `: this text.
- ` + "`summarize_records`" + ` (argument ` + "`city`" + `): asks for a summary of the
  records of one city.

## Things to try

- Ask for the total amount per city. With tool calls that is several
  ` + "`list_records`" + ` pages; with Code Mode it is one script:

` + "```js" + `
let all = [], offset = 0;
for (;;) {
  const page = await callTool("<server>__list_records", { limit: 20, offset });
  all = all.concat(page.records);
  if (page.nextOffset == null) break;
  offset = page.nextOffset;
}
const perCity = {};
for (const r of all) perCity[r.city] = (perCity[r.city] ?? 0) + r.amount;
return perCity;
` + "```" + `

  Replace ` + "`<server>`" + ` with the name this server has in the gateway.
- Search the notes for "refund" and cross-check with the records tagged refund.
- Ask for record 99 to see how a tool error looks.
`
