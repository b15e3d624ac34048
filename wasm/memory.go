package wasm

import (
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/tetratelabs/wazero/experimental"
)

// Memory is the linear memory of one guest module instance, with a hard cap.
//
// Its address space is reserved once, up to the ceiling given to NewMemory,
// and never moves; pages cost resident memory only once the guest touches
// them. Growing past the current limit fails the guest's memory.grow, which a
// C guest sees as malloc returning NULL. Because the backing array never
// moves, another goroutine may signal the running guest by writing into it
// atomically (see AtomicOr32).
//
// A Memory is safe for concurrent use.
type Memory struct {
	ceiling uint64 // bytes reserved, fixed

	mu       sync.Mutex
	region   []byte // reserved address space; nil until allocated, nil again after Free
	used     bool   // allocate was called once
	size     atomic.Uint64
	limit    atomic.Uint64
	peak     atomic.Uint64
	refusals atomic.Int64
}

var _ experimental.LinearMemory = (*Memory)(nil)

// NewMemory returns a Memory that can grow to at most ceiling bytes (rounded
// up to whole pages, at most MaxMemoryBytes), with its limit set to the
// ceiling. Nothing is reserved until a module instance allocates it.
func NewMemory(ceiling uint64) *Memory {
	if ceiling > MaxMemoryBytes {
		ceiling = MaxMemoryBytes
	}
	ceiling = (ceiling + PageSize - 1) / PageSize * PageSize
	m := &Memory{ceiling: ceiling}
	m.limit.Store(ceiling)
	return m
}

// SetLimit sets the largest size the memory may grow to from now on; it does
// not shrink memory already in use. A limit above the ceiling is the ceiling.
func (m *Memory) SetLimit(bytes uint64) {
	if bytes > m.ceiling {
		bytes = m.ceiling
	}
	m.limit.Store(bytes)
}

// Limit reports the current limit in bytes.
func (m *Memory) Limit() uint64 { return m.limit.Load() }

// Size reports the current size of the linear memory in bytes.
func (m *Memory) Size() uint64 { return m.size.Load() }

// Peak reports the largest size the memory has had. Linear memory never
// shrinks, so this is also the current size; it stays readable after Free.
func (m *Memory) Peak() uint64 { return m.peak.Load() }

// Refusals reports how many times the guest asked to grow past the limit.
func (m *Memory) Refusals() int64 { return m.refusals.Load() }

// allocate implements experimental.MemoryAllocator for WithMemory.
func (m *Memory) allocate(_, max uint64) experimental.LinearMemory {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.used {
		// One Memory backs one instance: a second instantiation gets a memory
		// that cannot hold its minimum, which fails that instantiation.
		return refusedMemory{}
	}
	m.used = true
	reserve := m.ceiling
	if max > 0 && max < reserve {
		reserve = max
	}
	region, err := reserveRegion(reserve)
	if err != nil {
		return refusedMemory{}
	}
	m.region = region
	return m
}

// Reallocate implements experimental.LinearMemory.
func (m *Memory) Reallocate(size uint64) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.region == nil || size > uint64(len(m.region)) || size > m.limit.Load() {
		m.refusals.Add(1)
		return nil
	}
	m.size.Store(size)
	if size > m.peak.Load() {
		m.peak.Store(size)
	}
	return m.region[:size:size]
}

// Free implements experimental.LinearMemory: it releases the reservation.
func (m *Memory) Free() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.region != nil {
		releaseRegion(m.region)
		m.region = nil
	}
	m.size.Store(0)
}

// AtomicOr32 sets bits in the little-endian 32-bit word at offset with an
// atomic read-modify-write, so that a guest running on another goroutine sees
// it. offset must be 4-byte aligned and inside the memory. It reports false
// when the memory was freed or the offset is out of range.
func (m *Memory) AtomicOr32(offset uint32, bits uint32) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.region == nil || offset%4 != 0 || uint64(offset)+4 > m.size.Load() {
		return false
	}
	atomic.OrUint32((*uint32)(unsafe.Pointer(&m.region[offset])), bits)
	return true
}

// AtomicLoad32 reads the little-endian 32-bit word at offset atomically; ok is
// false when the memory was freed or the offset is out of range.
func (m *Memory) AtomicLoad32(offset uint32) (v uint32, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.region == nil || offset%4 != 0 || uint64(offset)+4 > m.size.Load() {
		return 0, false
	}
	return atomic.LoadUint32((*uint32)(unsafe.Pointer(&m.region[offset]))), true
}

// Store32 writes the little-endian 32-bit word at offset atomically. It is
// meant for the host to set up guest state while the guest is not running.
func (m *Memory) Store32(offset uint32, v uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.region == nil || offset%4 != 0 || uint64(offset)+4 > m.size.Load() {
		return fmt.Errorf("store at %#x: out of range or unaligned", offset)
	}
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&m.region[offset])), v)
	return nil
}

// refusedMemory is handed out when a Memory cannot back an instance.
type refusedMemory struct{}

func (refusedMemory) Reallocate(uint64) []byte { return nil }
func (refusedMemory) Free()                    {}
