package bench

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
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

// writeHeader prints the machine and the settings.
func writeHeader(w io.Writer, title string, m Machine, settings map[string]string) {
	fmt.Fprintf(w, "%s\n", title)
	cpu := m.CPUModel
	if cpu == "" {
		cpu = "CPU model unknown"
	}
	fmt.Fprintf(w, "machine:  %d cores, %s, %s/%s, %s, toolgate %s\n", m.Cores, cpu, m.OS, m.Arch, m.GoVersion, m.ToolgateVersion)
	fmt.Fprintf(w, "settings:\n")
	width := 0
	for k := range settings {
		width = max(width, len(k))
	}
	for _, k := range sortedKeys(settings) {
		fmt.Fprintf(w, "  %-*s  %s\n", width, k, settings[k])
	}
	fmt.Fprintln(w)
}

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

// WriteExecText prints an exec report as a table.
func WriteExecText(w io.Writer, r *ExecReport) {
	writeHeader(w, "toolgate bench exec", r.Machine, r.Settings)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "ms\tp50\tp90\tp99\tmax\tmean\t")
	row := func(name string, s *Summary) {
		if s == nil {
			fmt.Fprintf(tw, "%s\tn/a\tn/a\tn/a\tn/a\tn/a\t\n", name)
			return
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", name, ms(s.P50), ms(s.P90), ms(s.P99), ms(s.Max), ms(s.Mean))
	}
	row("wall (caller)", &r.Wall)
	row("execution (sandbox)", r.Duration)
	row("instance start", r.Start)
	row("run", r.Run)
	if r.ToolCalls.Total > 0 {
		row("each tool call", &r.ToolCalls.CallMs)
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintf(w, "executions:       %d (%d ok, %d failed) in %.2f s, %.1f exec/s at concurrency %d\n",
		r.Executions, r.Succeeded, r.Failed, r.ElapsedSec, r.ExecPerSec, r.Concurrency)
	if r.CPUPerExecMs != nil {
		fmt.Fprintf(w, "CPU per exec:     %s ms (process user+system, gateway and in-process upstream included)\n", ms(*r.CPUPerExecMs))
	} else {
		fmt.Fprintf(w, "CPU per exec:     n/a (the executions ran in another process)\n")
	}
	if r.PeakMemory != nil {
		fmt.Fprintf(w, "peak memory:      p50 %s, max %s per execution (interpreter linear memory)\n", mib(r.PeakMemory.P50), mib(r.PeakMemory.Max))
	} else {
		fmt.Fprintf(w, "peak memory:      n/a\n")
	}
	fmt.Fprintf(w, "start share:      %s of execution time\n", pct(r.StartShare))
	fmt.Fprintf(w, "tool calls:       %d (%d failed), %.1f per execution, awaiting tools %s of execution time\n",
		r.ToolCalls.Total, r.ToolCalls.Failed, r.ToolCalls.PerExecution, pct(r.ToolCalls.Share))
	fmt.Fprintf(w, "limits hit:       %s\n", counts(r.LimitsHit))
	fmt.Fprintf(w, "other failures:   %s\n", counts(r.Errors))
}

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

// WriteProxyText prints a proxy report as a table.
func WriteProxyText(w io.Writer, r *ProxyReport) {
	writeHeader(w, "toolgate bench proxy", r.Machine, r.Settings)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "concurrency\ttarget\tp50 ms\tp90 ms\tp99 ms\tmax ms\tcalls/s\terrors\t")
	for _, l := range r.Levels {
		for _, name := range sortedKeys(l.Targets) {
			t := l.Targets[name]
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%.0f\t%d\t\n", l.Concurrency, name,
				ms(t.LatencyMs.P50), ms(t.LatencyMs.P90), ms(t.LatencyMs.P99), ms(t.LatencyMs.Max), t.CallsPerSec, t.Errors)
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, l := range r.Levels {
		if l.P50Ratio != nil {
			fmt.Fprintf(w, "concurrency %d: gateway p50 is %.2fx direct, throughput %.2fx direct\n", l.Concurrency, *l.P50Ratio, *l.ThroughputRatio)
		}
		for _, name := range sortedKeys(l.Targets) {
			if e := l.Targets[name].FirstError; e != "" {
				fmt.Fprintf(w, "concurrency %d, %s: first error: %s\n", l.Concurrency, name, e)
			}
		}
	}
}

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

// WriteCompareText prints a compare report as a table.
func WriteCompareText(w io.Writer, r *CompareReport) {
	writeHeader(w, "toolgate bench compare", r.Machine, r.Settings)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "task\tmode\tround trips\tcontext bytes\t~tokens\twall ms\tbytes ratio\t")
	for _, t := range r.Tasks {
		fmt.Fprintf(tw, "%s\tdirect\t%d\t%d\t%d\t%s\t\t\n", t.Name, t.Direct.RoundTrips, t.Direct.ContextBytes, t.Direct.ApproxTokens, ms(float64(t.Direct.Wall.Microseconds())/1000))
		fmt.Fprintf(tw, "\tcode mode\t%d\t%d\t%d\t%s\t%.1f%%\t\n", t.CodeMode.RoundTrips, t.CodeMode.ContextBytes, t.CodeMode.ApproxTokens, ms(float64(t.CodeMode.Wall.Microseconds())/1000), ByteRatio(t)*100)
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, t := range r.Tasks {
		if t.Direct.Answer != t.CodeMode.Answer {
			fmt.Fprintf(w, "%s: the answers differ: direct %q, code mode %q\n", t.Name, t.Direct.Answer, t.CodeMode.Answer)
		}
	}
}

// WriteExecDir writes report.md and the latency chart into dir.
func WriteExecDir(dir string, r *ExecReport) error {
	labels, counts := histogram(r.wall, 20)
	chart := barChart(fmt.Sprintf("Wall time per execution: p50 %s ms, p90 %s ms, p99 %s ms, max %s ms", ms(r.Wall.P50), ms(r.Wall.P90), ms(r.Wall.P99), ms(r.Wall.Max)),
		"wall time in ms (start of each bin)", "executions", labels, []series{{name: "executions", color: colorGateway, values: counts}})
	var md bytes.Buffer
	fmt.Fprintf(&md, "# toolgate bench exec\n\n```\n")
	WriteExecText(&md, r)
	fmt.Fprintf(&md, "```\n\n## Latency distribution\n\nWall time per execution in ms (bins from the fastest to p99; the last bin holds the rest).\n\n![latency distribution](%s)\n", LatencyChart)
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
	fmt.Fprintf(&md, "# toolgate bench proxy\n\n```\n")
	WriteProxyText(&md, r)
	fmt.Fprintf(&md, "```\n\n## Latency\n\n![p50 latency](%s)\n\n## Throughput\n\n![calls per second](%s)\n", ProxyLatencyChart, ProxyThroughputFile)
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
	fmt.Fprintf(&md, "# toolgate bench compare\n\n```\n")
	WriteCompareText(&md, r)
	fmt.Fprintf(&md, "```\n\n## Tasks\n\n")
	for _, t := range r.Tasks {
		fmt.Fprintf(&md, "- **%s**: %s\n", t.Name, t.Description)
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
