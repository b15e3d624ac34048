package bindings

import "testing"

func BenchmarkDeclarations(b *testing.B) {
	tools := loadTools(b, "everything", "everything")
	b.ReportAllocs()
	for b.Loop() {
		Declarations(tools)
	}
}

func BenchmarkDeclarationsNPM(b *testing.B) {
	var tools []Tool
	for _, s := range npmServers {
		tools = append(tools, loadTools(b, s.name, s.name)...)
	}
	b.ReportAllocs()
	for b.Loop() {
		Declarations(tools)
	}
}

func BenchmarkPrelude(b *testing.B) {
	tools := loadTools(b, "everything", "everything")
	b.ReportAllocs()
	for b.Loop() {
		Prelude(tools, "__toolgate_call")
	}
}
