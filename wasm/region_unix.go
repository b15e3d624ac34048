//go:build unix

package wasm

import "syscall"

// reserveRegion maps size bytes of anonymous, private, zeroed memory without
// reserving swap: pages become resident only when the guest writes them.
func reserveRegion(size uint64) ([]byte, error) {
	if size == 0 {
		return []byte{}, nil
	}
	return syscall.Mmap(-1, 0, int(size), syscall.PROT_READ|syscall.PROT_WRITE,
		syscall.MAP_PRIVATE|syscall.MAP_ANON|mapNoReserve)
}

func releaseRegion(b []byte) {
	if len(b) > 0 {
		_ = syscall.Munmap(b)
	}
}
