//go:build !unix

package wasm

// reserveRegion falls back to the Go heap where mmap is not available; the
// runtime maps large allocations lazily, so untouched pages stay cheap.
func reserveRegion(size uint64) ([]byte, error) { return make([]byte, size), nil }

func releaseRegion([]byte) {}
