package bench

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/toolgate/toolgate/internal/benchcompare"
)

// Files written by WriteDir.
const (
	ReportFile          = "report.md"
	LatencyChart        = "latency.svg"
	ProxyLatencyChart   = "proxy-latency.svg"
	ProxyThroughputFile = "proxy-throughput.svg"
	CompareBytesChart   = "compare-bytes.svg"
)

// report is what every report shows, rendered for a terminal (aligned
// text) or as Markdown (report.md): a title, the machine and the
// settings, one table of results, facts (label: value) and notes.
type report struct {
	title    string
	machine  Machine
	settings map[string]string
	header   []string
	// left are the columns aligned left in Markdown (the text form aligns
	// every column right, as it always has).
	left  map[int]bool
	rows  [][]string
	facts [][2]string
	notes []string
}

func (r *report) row(cells ...string) { r.rows = append(r.rows, cells) }

func (r *report) fact(label, format string, args ...any) {
	r.facts = append(r.facts, [2]string{label, fmt.Sprintf(format, args...)})
}

func (r *report) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

func (m Machine) describe() string {
	cpu := m.CPUModel
	if cpu == "" {
		cpu = "CPU model unknown"
	}
	return fmt.Sprintf("%d cores, %s, %s/%s, %s, toolgate %s", m.Cores, cpu, m.OS, m.Arch, m.GoVersion, m.ToolgateVersion)
}

// text prints the report for a terminal.
func (r *report) text(w io.Writer) {
	fmt.Fprintf(w, "%s\n", r.title)
	fmt.Fprintf(w, "machine:  %s\n", r.machine.describe())
	fmt.Fprintf(w, "settings:\n")
	width := 0
	for k := range r.settings {
		width = max(width, len(k))
	}
	for _, k := range sortedKeys(r.settings) {
		fmt.Fprintf(w, "  %-*s  %s\n", width, k, r.settings[k])
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	for _, cells := range append([][]string{r.header}, r.rows...) {
		fmt.Fprintf(tw, "%s\t\n", strings.Join(cells, "\t"))
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, f := range r.facts {
		fmt.Fprintf(w, "%-18s%s\n", f[0]+":", f[1])
	}
	for _, n := range r.notes {
		fmt.Fprintln(w, n)
	}
}

// markdown prints the report as Markdown: the settings and the results
// as tables, the facts and notes as lists.
func (r *report) markdown(w io.Writer) {
	fmt.Fprintf(w, "# %s\n\n", mdText(r.title))
	fmt.Fprintf(w, "Machine: %s\n\n", mdText(r.machine.describe()))
	fmt.Fprintf(w, "## Settings\n\n| setting | value |\n| --- | --- |\n")
	for _, k := range sortedKeys(r.settings) {
		fmt.Fprintf(w, "| %s | %s |\n", mdText(k), mdText(r.settings[k]))
	}
	fmt.Fprintf(w, "\n## Results\n\n")
	cells := make([]string, len(r.header))
	for i, h := range r.header {
		cells[i] = mdText(h)
	}
	fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	for i := range cells {
		cells[i] = "---:"
		if r.left[i] {
			cells[i] = "---"
		}
	}
	fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	for _, row := range r.rows {
		cells := make([]string, len(row))
		for i, c := range row {
			cells[i] = mdText(c)
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
	if len(r.facts) > 0 || len(r.notes) > 0 {
		fmt.Fprintln(w)
	}
	for _, f := range r.facts {
		fmt.Fprintf(w, "- **%s:** %s\n", mdText(f[0]), mdText(f[1]))
	}
	for _, n := range r.notes {
		fmt.Fprintf(w, "- %s\n", mdText(n))
	}
}

// mdText escapes the characters that Markdown would read as markup in
// running text (settings and errors hold paths, globs and code).
var mdEscaper = strings.NewReplacer(`\`, `\\`, "`", "\\`", "*", `\*`, "_", `\_`, "[", `\[`, "]", `\]`,
	"<", "&lt;", ">", "&gt;", "#", `\#`, "|", `\|`, "\n", " ")

func mdText(s string) string { return mdEscaper.Replace(s) }

// mdCell is mdText for a table cell; an empty cell stays empty.

func ms(v float64) string { return formatNumber(v) }

func optMs(s *Summary, pick func(Summary) float64) string {
	if s == nil {
		return "n/a"
	}
	return ms(pick(*s))
}

func pct(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.1f%%", *v*100)
}

func mib(b int64) string { return fmt.Sprintf("%.2f MiB", float64(b)/(1<<20)) }

// execReport is an exec report as a report.
func execReport(r *ExecReport) *report {
	rep := &report{title: "toolgate bench exec", machine: r.Machine, settings: r.Settings,
		header: []string{"ms", "p50", "p90", "p99", "max", "mean"}, left: map[int]bool{0: true}}
	row := func(name string, s *Summary) {
		if s == nil {
			rep.row(name, "n/a", "n/a", "n/a", "n/a", "n/a")
			return
		}
		rep.row(name, ms(s.P50), ms(s.P90), ms(s.P99), ms(s.Max), ms(s.Mean))
	}
	row("wall (caller)", &r.Wall)
	row("execution (sandbox)", r.Duration)
	row("instance start", r.Start)
	row("run", r.Run)
	if r.ToolCalls.Total > 0 {
		row("each tool call", &r.ToolCalls.CallMs)
	}
	rep.fact("executions", "%d (%d ok, %d failed) in %.2f s, %.1f exec/s at concurrency %d",
		r.Executions, r.Succeeded, r.Failed, r.ElapsedSec, r.ExecPerSec, r.Concurrency)
	if r.CPUPerExecMs != nil {
		rep.fact("CPU per exec", "%s ms (process user+system, gateway and in-process upstream included)", ms(*r.CPUPerExecMs))
	} else {
		rep.fact("CPU per exec", "n/a (the executions ran in another process)")
	}
	if r.PeakMemory != nil {
		rep.fact("peak memory", "p50 %s, max %s per execution (interpreter linear memory)", mib(r.PeakMemory.P50), mib(r.PeakMemory.Max))
	} else {
		rep.fact("peak memory", "n/a")
	}
	rep.fact("start share", "%s of execution time", pct(r.StartShare))
	rep.fact("tool calls", "%d (%d failed), %.1f per execution, awaiting tools %s of execution time",
		r.ToolCalls.Total, r.ToolCalls.Failed, r.ToolCalls.PerExecution, pct(r.ToolCalls.Share))
	rep.fact("limits hit", "%s", counts(r.LimitsHit))
	rep.fact("other failures", "%s", counts(r.Errors))
	return rep
}

// WriteExecText prints an exec report as a table.
func WriteExecText(w io.Writer, r *ExecReport) { execReport(r).text(w) }

func counts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// proxyReport is a proxy report as a report.
func proxyReport(r *ProxyReport) *report {
	rep := &report{title: "toolgate bench proxy", machine: r.Machine, settings: r.Settings,
		header: []string{"concurrency", "target", "p50 ms", "p90 ms", "p99 ms", "max ms", "calls/s", "errors"}, left: map[int]bool{1: true}}
	for _, l := range r.Levels {
		for _, name := range sortedKeys(l.Targets) {
			t := l.Targets[name]
			rep.row(strconv.Itoa(l.Concurrency), name, ms(t.LatencyMs.P50), ms(t.LatencyMs.P90), ms(t.LatencyMs.P99), ms(t.LatencyMs.Max),
				fmt.Sprintf("%.0f", t.CallsPerSec), strconv.Itoa(t.Errors))
		}
	}
	for _, l := range r.Levels {
		if l.P50Ratio != nil {
			rep.note("concurrency %d: gateway p50 is %.2fx direct, throughput %.2fx direct", l.Concurrency, *l.P50Ratio, *l.ThroughputRatio)
		}
		for _, name := range sortedKeys(l.Targets) {
			if e := l.Targets[name].FirstError; e != "" {
				rep.note("concurrency %d, %s: first error: %s", l.Concurrency, name, e)
			}
		}
	}
	return rep
}

// WriteProxyText prints a proxy report as a table.
func WriteProxyText(w io.Writer, r *ProxyReport) { proxyReport(r).text(w) }

// CompareReport is a benchcompare report with the machine it ran on.
type CompareReport struct {
	Machine  Machine           `json:"machine"`
	Settings map[string]string `json:"settings"`
	*benchcompare.Report
}

// ByteRatio is Code Mode bytes / direct bytes of a task (0 when direct
// put nothing into the context).
func ByteRatio(t benchcompare.TaskResult) float64 {
	if t.Direct.ContextBytes == 0 {
		return 0
	}
	return float64(t.CodeMode.ContextBytes) / float64(t.Direct.ContextBytes)
}

// compareReport is a compare report as a report.
func compareReport(r *CompareReport) *report {
	rep := &report{title: "toolgate bench compare", machine: r.Machine, settings: r.Settings,
		header: []string{"task", "mode", "round trips", "context bytes", "~tokens", "wall ms", "bytes ratio"}, left: map[int]bool{0: true, 1: true}}
	for _, t := range r.Tasks {
		rep.row(t.Name, "direct", strconv.Itoa(t.Direct.RoundTrips), strconv.FormatInt(t.Direct.ContextBytes, 10),
			strconv.FormatInt(t.Direct.ApproxTokens, 10), ms(float64(t.Direct.Wall.Microseconds())/1000), "")
		rep.row("", "code mode", strconv.Itoa(t.CodeMode.RoundTrips), strconv.FormatInt(t.CodeMode.ContextBytes, 10),
			strconv.FormatInt(t.CodeMode.ApproxTokens, 10), ms(float64(t.CodeMode.Wall.Microseconds())/1000), fmt.Sprintf("%.1f%%", ByteRatio(t)*100))
	}
	for _, t := range r.Tasks {
		if t.Direct.Answer != t.CodeMode.Answer {
			rep.note("%s: the answers differ: direct %q, code mode %q", t.Name, t.Direct.Answer, t.CodeMode.Answer)
		}
	}
	return rep
}

// WriteCompareText prints a compare report as a table.
func WriteCompareText(w io.Writer, r *CompareReport) { compareReport(r).text(w) }

// WriteExecDir writes report.md and the latency chart into dir.
func WriteExecDir(dir string, r *ExecReport) error {
	labels, counts := histogram(r.wall, 20)
	chart := barChart(fmt.Sprintf("Wall time per execution: p50 %s ms, p90 %s ms, p99 %s ms, max %s ms", ms(r.Wall.P50), ms(r.Wall.P90), ms(r.Wall.P99), ms(r.Wall.Max)),
		"wall time in ms (start of each bin)", "executions", labels, []series{{name: "executions", color: colorGateway, values: counts}})
	var md bytes.Buffer
	execReport(r).markdown(&md)
	fmt.Fprintf(&md, "\n## Latency distribution\n\nWall time per execution in ms (bins from the fastest to p99; the last bin holds the rest).\n\n![latency distribution](%s)\n", LatencyChart)
	return writeFiles(dir, map[string][]byte{ReportFile: md.Bytes(), LatencyChart: chart})
}

// WriteProxyDir writes report.md and the latency and throughput charts
// into dir.
func WriteProxyDir(dir string, r *ProxyReport) error {
	var cats []string
	names := map[string]bool{}
	for _, l := range r.Levels {
		cats = append(cats, fmt.Sprintf("c=%d", l.Concurrency))
		for n := range l.Targets {
			names[n] = true
		}
	}
	var lat, tput []series
	for _, n := range sortedKeys(names) {
		color := colorGateway
		if n == "direct" {
			color = colorDirect
		}
		l, t := series{name: n + " p50", color: color}, series{name: n, color: color}
		for _, lv := range r.Levels {
			l.values = append(l.values, lv.Targets[n].LatencyMs.P50)
			t.values = append(t.values, lv.Targets[n].CallsPerSec)
		}
		lat, tput = append(lat, l), append(tput, t)
	}
	var md bytes.Buffer
	proxyReport(r).markdown(&md)
	fmt.Fprintf(&md, "\n## Latency\n\n![p50 latency](%s)\n\n## Throughput\n\n![calls per second](%s)\n", ProxyLatencyChart, ProxyThroughputFile)
	return writeFiles(dir, map[string][]byte{
		ReportFile:          md.Bytes(),
		ProxyLatencyChart:   barChart("p50 latency of one tool call, direct and through the gateway", "concurrency", "ms", cats, lat),
		ProxyThroughputFile: barChart("Tool calls per second, direct and through the gateway", "concurrency", "calls/s", cats, tput),
	})
}

// WriteCompareDir writes report.md and the bytes chart into dir.
func WriteCompareDir(dir string, r *CompareReport) error {
	var cats []string
	direct := series{name: "direct tool calls", color: colorDirect}
	code := series{name: "Code Mode", color: colorCodeMode}
	for _, t := range r.Tasks {
		cats = append(cats, t.Name)
		direct.values = append(direct.values, float64(t.Direct.ContextBytes))
		code.values = append(code.values, float64(t.CodeMode.ContextBytes))
	}
	var md bytes.Buffer
	compareReport(r).markdown(&md)
	fmt.Fprintf(&md, "\n## Tasks\n\n")
	for _, t := range r.Tasks {
		fmt.Fprintf(&md, "- **%s**: %s\n", mdText(t.Name), mdText(t.Description))
	}
	fmt.Fprintf(&md, "\n## Bytes of tool output entering the model's context\n\n![Code Mode vs direct bytes](%s)\n", CompareBytesChart)
	return writeFiles(dir, map[string][]byte{
		ReportFile:        md.Bytes(),
		CompareBytesChart: barChart("Bytes of tool output in the model's context, per task", "task", "bytes", cats, []series{direct, code}),
	})
}

func writeFiles(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	for _, name := range sortedKeys(files) {
		if err := os.WriteFile(filepath.Join(dir, name), files[name], 0o644); err != nil {
			return fmt.Errorf("--out: %w", err)
		}
	}
	return nil
}
