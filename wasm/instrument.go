package wasm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Instrumented is a module rewritten by Instrument.
type Instrumented struct {
	// Module is the rewritten binary.
	Module []byte
	// CheckFunc is the index, in the module's function index space, of the
	// function the inserted checks call every Interval steps. Hook it with
	// WithCallHook: the hook runs in Go on the guest's goroutine and ends
	// the guest by panicking.
	CheckFunc uint32
	// Loops and Entries count the checks inserted at loop headers and at
	// function entries.
	Loops, Entries int
}

// InstrumentOptions configure Instrument; nil means defaults.
type InstrumentOptions struct {
	// Interval is how many checked steps (loop iterations and entries of
	// recursive functions) run between two calls of the check function;
	// default 10,000.
	Interval uint32
}

const defaultInterval = 10000

// Instrument returns a copy of module in which the guest can be stopped in
// the middle of any computation, the way wasmtime's epoch interruption
// works: every loop header, and the entry of every function that can take
// part in a recursion (a cycle of the call graph, indirect calls assumed
// to reach every function of their type), decrements a counter held in a
// new mutable global. When the counter reaches zero the guest calls a new
// function (CheckFunc), which resets it to Interval; a host hook on that
// function looks at the clock and panics to stop the guest.
//
// A computation that runs long must iterate a loop or recurse, so none can
// run more than Interval steps without reaching the host. The hook also
// gives the Go runtime a safe point: compiled guest code cannot be
// preempted, so without it a long native loop would hold up a garbage
// collection (and every goroutine waiting for it).
//
// Each step costs a load, an add, a store and a branch; nothing else in the
// module changes: the function, global and type indices that exist keep
// their meaning (the new function, global and, if needed, type are
// appended), and a module whose hook never panics computes exactly what
// the original did. DWARF sections (.debug_*) are dropped, since code
// offsets move. Modules using instructions outside WebAssembly 2.0 without
// SIMD (threads, SIMD, exceptions, tail calls, typed function references)
// are refused with an error naming the instruction.
func Instrument(module []byte, opts *InstrumentOptions) (*Instrumented, error) {
	interval := uint32(defaultInterval)
	if opts != nil && opts.Interval > 0 {
		interval = opts.Interval
	}
	if interval > 1<<30 {
		return nil, fmt.Errorf("instrument: interval %d is too large", interval)
	}
	m, err := parseModule(module)
	if err != nil {
		return nil, fmt.Errorf("instrument: %w", err)
	}
	return m.instrument(int32(interval))
}

// section is one section of a module, kept as its raw contents.
type section struct {
	id   byte
	body []byte
}

type module struct {
	sections []section

	types       []string // encodings of the function types, by index
	funcImports []uint32 // type index of each imported function
	globImports int
	funcs       []uint32 // type index of each defined function
	globals     int      // defined globals
	bodies      [][]byte // code of each defined function, locals included
}

const (
	secCustom   = 0
	secType     = 1
	secImport   = 2
	secFunction = 3
	secTable    = 4
	secMemory   = 5
	secGlobal   = 6
	secExport   = 7
	secStart    = 8
	secElement  = 9
	secCode     = 10
	secData     = 11
	secDataCnt  = 12
	secTag      = 13
)

// sectionOrder is the position of each known section in a module.
var sectionOrder = map[byte]int{
	secType: 1, secImport: 2, secFunction: 3, secTable: 4, secMemory: 5, secTag: 6,
	secGlobal: 7, secExport: 8, secStart: 9, secElement: 10, secDataCnt: 11, secCode: 12, secData: 13,
}

var wasmHeader = []byte{0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00}

func parseModule(b []byte) (*module, error) {
	if len(b) < 8 || !bytes.Equal(b[:8], wasmHeader) {
		return nil, errors.New("not a WebAssembly 1.0 binary module")
	}
	m := &module{}
	r := &reader{b: b, pos: 8}
	last := 0
	seen := map[byte]bool{}
	for !r.done() {
		id := r.byte()
		size := r.u32()
		body := r.bytes(int(size))
		if r.err != nil {
			return nil, r.err
		}
		if id != secCustom {
			order, ok := sectionOrder[id]
			if !ok {
				return nil, fmt.Errorf("unknown section id %d", id)
			}
			if order <= last || seen[id] {
				return nil, fmt.Errorf("section %d out of order", id)
			}
			last = order
			seen[id] = true
		}
		m.sections = append(m.sections, section{id: id, body: body})
		var err error
		switch id {
		case secType:
			err = m.parseTypes(body)
		case secImport:
			err = m.parseImports(body)
		case secFunction:
			err = m.parseFunctions(body)
		case secGlobal:
			err = m.parseGlobals(body)
		case secCode:
			err = m.parseCode(body)
		case secDataCnt:
			// One count, nothing else (wazero reads past an empty one).
			r := &reader{b: body}
			r.u32()
			if r.end() != nil {
				err = errors.New("malformed data count section")
			}
		}
		if err != nil {
			return nil, fmt.Errorf("section %d: %w", id, err)
		}
	}
	if len(m.funcs) != len(m.bodies) {
		return nil, fmt.Errorf("%d functions declared but %d bodies", len(m.funcs), len(m.bodies))
	}
	for _, t := range append(append([]uint32(nil), m.funcImports...), m.funcs...) {
		if int(t) >= len(m.types) {
			return nil, fmt.Errorf("type index %d out of range", t)
		}
	}
	return m, nil
}

func (m *module) parseTypes(b []byte) error {
	r := &reader{b: b}
	n := r.u32()
	for i := uint32(0); i < n && r.err == nil; i++ {
		start := r.pos
		if r.byte() != 0x60 {
			return fmt.Errorf("type %d is not a function type", i)
		}
		for k := 0; k < 2; k++ { // params, results
			c := r.u32()
			for j := uint32(0); j < c && r.err == nil; j++ {
				r.valType()
			}
		}
		m.types = append(m.types, string(r.b[start:r.pos]))
	}
	return r.end()
}

func (m *module) parseImports(b []byte) error {
	r := &reader{b: b}
	n := r.u32()
	for i := uint32(0); i < n && r.err == nil; i++ {
		r.name()
		r.name()
		switch kind := r.byte(); kind {
		case 0x00:
			m.funcImports = append(m.funcImports, r.u32())
		case 0x01:
			r.refType()
			r.limits()
		case 0x02:
			r.limits()
		case 0x03:
			r.valType()
			r.byte()
			m.globImports++
		default:
			return fmt.Errorf("unsupported import kind %d", kind)
		}
	}
	return r.end()
}

func (m *module) parseFunctions(b []byte) error {
	r := &reader{b: b}
	n := r.u32()
	for i := uint32(0); i < n && r.err == nil; i++ {
		m.funcs = append(m.funcs, r.u32())
	}
	return r.end()
}

func (m *module) parseGlobals(b []byte) error {
	r := &reader{b: b}
	n := r.u32()
	for i := uint32(0); i < n && r.err == nil; i++ {
		r.valType()
		r.byte()
		// A constant expression: instructions up to the final end. Only
		// constant instructions may appear, all without nested blocks.
		for r.err == nil {
			op := r.byte()
			if op == 0x0b {
				break
			}
			if err := skipImmediates(r, op); err != nil {
				return err
			}
		}
		m.globals++
	}
	return r.end()
}

func (m *module) parseCode(b []byte) error {
	r := &reader{b: b}
	n := r.u32()
	for i := uint32(0); i < n && r.err == nil; i++ {
		size := r.u32()
		m.bodies = append(m.bodies, r.bytes(int(size)))
	}
	return r.end()
}

// function is what the pass learns of one body.
type function struct {
	code  int      // offset of the first instruction (after the locals)
	loops []int    // offsets right after each loop's block type
	calls []uint32 // direct callees
	// indirect holds the type encodings that call_indirect uses.
	indirect []string
}

func (m *module) scan(body []byte) (*function, error) {
	r := &reader{b: body}
	f := &function{}
	n := r.u32()
	var total uint64
	for i := uint32(0); i < n && r.err == nil; i++ {
		total += uint64(r.u32())
		r.valType()
	}
	if total > 50000 {
		return nil, fmt.Errorf("%d locals", total)
	}
	f.code = r.pos
	depth := 1
	for depth > 0 {
		if r.err != nil {
			return nil, r.err
		}
		if r.done() {
			return nil, errors.New("function body ends without end")
		}
		at := r.pos
		op := r.byte()
		switch op {
		case 0x02, 0x04: // block, if
			r.blockType()
			depth++
		case 0x03: // loop
			r.blockType()
			depth++
			f.loops = append(f.loops, r.pos)
		case 0x0b: // end
			depth--
		case 0x10: // call
			f.calls = append(f.calls, r.u32())
		case 0x11: // call_indirect
			t := r.u32()
			r.u32()
			if int(t) >= len(m.types) {
				return nil, fmt.Errorf("call_indirect of type %d out of range", t)
			}
			f.indirect = append(f.indirect, m.types[t])
		default:
			if err := skipImmediates(r, op); err != nil {
				return nil, fmt.Errorf("at byte %d of the body: %w", at, err)
			}
		}
	}
	if !r.done() {
		return nil, errors.New("bytes after the function's final end")
	}
	return f, r.err
}

// skipImmediates reads the immediates of op, an instruction other than a
// block, loop, if, end or call.
func skipImmediates(r *reader, op byte) error {
	switch {
	case op == 0x00 || op == 0x01 || op == 0x05 || op == 0x0f || op == 0x1a || op == 0x1b:
		// unreachable, nop, else, return, drop, select
	case op == 0x0c || op == 0x0d: // br, br_if
		r.u32()
	case op == 0x0e: // br_table
		n := r.u32()
		for i := uint32(0); i <= n && r.err == nil; i++ {
			r.u32()
		}
	case op == 0x1c: // select with types
		n := r.u32()
		for i := uint32(0); i < n && r.err == nil; i++ {
			r.valType()
		}
	case op >= 0x20 && op <= 0x26: // local.*, global.*, table.get/set
		r.u32()
	case op >= 0x28 && op <= 0x3e: // loads and stores
		align := r.u32()
		if align&0x40 != 0 { // multi-memory: a memory index follows
			r.u32()
		}
		r.u32()
	case op == 0x3f || op == 0x40: // memory.size, memory.grow
		r.u32()
	case op == 0x41:
		r.s64(32)
	case op == 0x42:
		r.s64(64)
	case op == 0x43:
		r.bytes(4)
	case op == 0x44:
		r.bytes(8)
	case op >= 0x45 && op <= 0xc4: // numeric, sign extension
	case op == 0xd0: // ref.null
		r.refType()
	case op == 0xd1: // ref.is_null
	case op == 0xd2: // ref.func
		r.u32()
	case op == 0xfc:
		switch sub := r.u32(); {
		case sub <= 7: // saturating truncation
		case sub == 8: // memory.init
			r.u32()
			r.u32()
		case sub == 9, sub == 11, sub == 13, sub == 15, sub == 16, sub == 17:
			r.u32()
		case sub == 10, sub == 12, sub == 14:
			r.u32()
			r.u32()
		default:
			return fmt.Errorf("unsupported instruction 0xfc %d", sub)
		}
	default:
		return fmt.Errorf("unsupported instruction %#x", op)
	}
	return r.err
}

// recursive reports, for every defined function, whether it lies on a
// cycle of the call graph. An indirect call may reach any function of its
// type, imported functions call nothing back.
func (m *module) recursive(fs []*function) []bool {
	nImp := len(m.funcImports)
	byType := map[string][]int{}
	for i, t := range m.funcs {
		byType[m.types[t]] = append(byType[m.types[t]], i)
	}
	edges := make([][]int, len(fs))
	for i, f := range fs {
		seen := map[int]bool{}
		add := func(j int) {
			if !seen[j] {
				seen[j] = true
				edges[i] = append(edges[i], j)
			}
		}
		for _, c := range f.calls {
			if int(c) >= nImp && int(c)-nImp < len(fs) {
				add(int(c) - nImp)
			}
		}
		done := map[string]bool{}
		for _, t := range f.indirect {
			if done[t] {
				continue
			}
			done[t] = true
			for _, j := range byType[t] {
				add(j)
			}
		}
	}
	// Tarjan's strongly connected components, iteratively.
	n := len(fs)
	index := make([]int, n)
	low := make([]int, n)
	onStack := make([]bool, n)
	for i := range index {
		index[i] = -1
	}
	out := make([]bool, n)
	var stack []int
	next := 0
	type frame struct{ v, e int }
	for root := 0; root < n; root++ {
		if index[root] >= 0 {
			continue
		}
		work := []frame{{root, 0}}
		index[root], low[root] = next, next
		next++
		stack = append(stack, root)
		onStack[root] = true
		for len(work) > 0 {
			top := &work[len(work)-1]
			v := top.v
			if top.e < len(edges[v]) {
				w := edges[v][top.e]
				top.e++
				if w == v {
					out[v] = true
				}
				if index[w] < 0 {
					index[w], low[w] = next, next
					next++
					stack = append(stack, w)
					onStack[w] = true
					work = append(work, frame{w, 0})
				} else if onStack[w] {
					low[v] = min(low[v], index[w])
				}
				continue
			}
			work = work[:len(work)-1]
			if len(work) > 0 {
				p := work[len(work)-1].v
				low[p] = min(low[p], low[v])
			}
			if low[v] == index[v] {
				var comp []int
				for {
					w := stack[len(stack)-1]
					stack = stack[:len(stack)-1]
					onStack[w] = false
					comp = append(comp, w)
					if w == v {
						break
					}
				}
				if len(comp) > 1 {
					for _, w := range comp {
						out[w] = true
					}
				}
			}
		}
	}
	return out
}

func (m *module) instrument(interval int32) (*Instrumented, error) {
	fs := make([]*function, len(m.bodies))
	for i, b := range m.bodies {
		f, err := m.scan(b)
		if err != nil {
			return nil, fmt.Errorf("instrument: function %d: %w", len(m.funcImports)+i, err)
		}
		fs[i] = f
	}
	rec := m.recursive(fs)

	res := &Instrumented{CheckFunc: uint32(len(m.funcImports) + len(m.funcs))}
	counter := uint32(m.globImports + m.globals)
	// The check: counter -= 1; if counter == 0 { call check }.
	var check []byte
	check = append(check, 0x23)
	check = appendU32(check, counter)
	check = append(check, 0x41, 0x7f, 0x6a, 0x24) // i32.const -1, i32.add, global.set
	check = appendU32(check, counter)
	check = append(check, 0x23)
	check = appendU32(check, counter)
	check = append(check, 0x45, 0x04, 0x40, 0x10) // i32.eqz, if (empty), call
	check = appendU32(check, res.CheckFunc)
	check = append(check, 0x0b) // end

	// Type () -> () for the check function.
	voidType := -1
	for i, t := range m.types {
		if t == "\x60\x00\x00" {
			voidType = i
			break
		}
	}
	newType := voidType < 0
	if newType {
		voidType = len(m.types)
	}

	bodies := make([][]byte, 0, len(m.bodies)+1)
	for i, b := range m.bodies {
		f := fs[i]
		out := make([]byte, 0, len(b)+len(check)*(len(f.loops)+1))
		out = append(out, b[:f.code]...)
		if rec[i] {
			out = append(out, check...)
			res.Entries++
		}
		prev := f.code
		for _, at := range f.loops {
			out = append(out, b[prev:at]...)
			out = append(out, check...)
			prev = at
		}
		out = append(out, b[prev:]...)
		res.Loops += len(f.loops)
		bodies = append(bodies, out)
	}
	// The check function: counter = interval.
	var body []byte
	body = append(body, 0x00, 0x41) // no locals, i32.const
	body = appendS32(body, interval)
	body = append(body, 0x24)
	body = appendU32(body, counter)
	body = append(body, 0x0b)
	bodies = append(bodies, body)

	// Rebuild the sections.
	typeSec := func() []byte {
		out := appendU32(nil, uint32(len(m.types)+1))
		for _, t := range m.types {
			out = append(out, t...)
		}
		return append(out, 0x60, 0x00, 0x00)
	}
	funcSec := func() []byte {
		out := appendU32(nil, uint32(len(m.funcs)+1))
		for _, t := range m.funcs {
			out = appendU32(out, t)
		}
		return appendU32(out, uint32(voidType))
	}
	global := []byte{0x7f, 0x01, 0x41} // mut i32 = interval
	global = appendS32(global, interval)
	global = append(global, 0x0b)
	codeSec := func() []byte {
		out := appendU32(nil, uint32(len(bodies)))
		for _, b := range bodies {
			out = appendU32(out, uint32(len(b)))
			out = append(out, b...)
		}
		return out
	}

	var secs []section
	add := func(id byte, body []byte) { secs = append(secs, section{id, body}) }
	have := map[byte]bool{}
	for _, s := range m.sections {
		have[s.id] = true
	}
	// insertMissing adds the sections the module lacks that must come
	// before a section of order o.
	insertMissing := func(o int) {
		if !have[secType] && newType && sectionOrder[secType] < o {
			add(secType, typeSec())
			have[secType] = true
		}
		if !have[secFunction] && sectionOrder[secFunction] < o {
			add(secFunction, funcSec())
			have[secFunction] = true
		}
		if !have[secGlobal] && sectionOrder[secGlobal] < o {
			add(secGlobal, append([]byte{1}, global...))
			have[secGlobal] = true
		}
		if !have[secCode] && sectionOrder[secCode] < o {
			add(secCode, codeSec())
			have[secCode] = true
		}
	}
	for _, s := range m.sections {
		if s.id == secCustom {
			if name, ok := customName(s.body); ok && strings.HasPrefix(name, ".debug_") {
				continue
			}
			add(s.id, s.body)
			continue
		}
		insertMissing(sectionOrder[s.id])
		switch s.id {
		case secType:
			if newType {
				add(secType, typeSec())
			} else {
				add(secType, s.body)
			}
		case secFunction:
			add(secFunction, funcSec())
		case secGlobal:
			r := &reader{b: s.body}
			n := r.u32()
			out := appendU32(nil, n+1)
			out = append(out, s.body[r.pos:]...)
			add(secGlobal, append(out, global...))
		case secCode:
			add(secCode, codeSec())
		default:
			add(s.id, s.body)
		}
	}
	insertMissing(1 << 30)

	out := append([]byte(nil), wasmHeader...)
	for _, s := range secs {
		out = append(out, s.id)
		out = appendU32(out, uint32(len(s.body)))
		out = append(out, s.body...)
	}
	res.Module = out
	return res, nil
}

func customName(b []byte) (string, bool) {
	r := &reader{b: b}
	s := r.name()
	return s, r.err == nil
}

// reader decodes the binary format; the first error sticks and later reads
// return zero values.
type reader struct {
	b   []byte
	pos int
	err error
}

func (r *reader) done() bool { return r.pos >= len(r.b) }

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, args...)
	}
}

func (r *reader) end() error {
	if r.err == nil && !r.done() {
		r.fail("%d unexpected bytes at the end", len(r.b)-r.pos)
	}
	return r.err
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if r.pos >= len(r.b) {
		r.fail("unexpected end")
		return 0
	}
	c := r.b[r.pos]
	r.pos++
	return c
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b)-r.pos {
		r.fail("unexpected end")
		return nil
	}
	s := r.b[r.pos : r.pos+n]
	r.pos += n
	return s
}

func (r *reader) u32() uint32 {
	var v uint64
	for shift := 0; ; shift += 7 {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		if shift == 28 && c&0x70 != 0 {
			r.fail("integer too large")
			return 0
		}
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			return uint32(v)
		}
		if shift >= 28 {
			r.fail("integer too long")
			return 0
		}
	}
}

// s64 reads a signed LEB128 of at most bits bits.
func (r *reader) s64(bits int) int64 {
	var v int64
	max := (bits + 6) / 7
	for i := 0; ; i++ {
		if i >= max {
			r.fail("integer too long")
			return 0
		}
		c := r.byte()
		if r.err != nil {
			return 0
		}
		v |= int64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			if shift := 7 * (i + 1); shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			return v
		}
	}
}

func (r *reader) name() string {
	n := r.u32()
	return string(r.bytes(int(n)))
}

func (r *reader) valType() {
	switch c := r.byte(); c {
	case 0x7f, 0x7e, 0x7d, 0x7c, 0x7b, 0x70, 0x6f:
	default:
		r.fail("unsupported value type %#x", c)
	}
}

func (r *reader) refType() {
	switch c := r.byte(); c {
	case 0x70, 0x6f:
	default:
		r.fail("unsupported reference type %#x", c)
	}
}

func (r *reader) limits() {
	switch flag := r.byte(); flag {
	case 0x00:
		r.u32()
	case 0x01:
		r.u32()
		r.u32()
	default:
		r.fail("unsupported limits flag %#x", flag)
	}
}

func (r *reader) blockType() {
	if r.pos < len(r.b) {
		switch r.b[r.pos] {
		case 0x40, 0x7f, 0x7e, 0x7d, 0x7c, 0x7b, 0x70, 0x6f:
			r.pos++
			return
		}
	}
	if v := r.s64(33); v < 0 && r.err == nil {
		r.fail("bad block type")
	}
}

func appendU32(b []byte, v uint32) []byte {
	return binary.AppendUvarint(b, uint64(v))
}

func appendS32(b []byte, v int32) []byte {
	x := int64(v)
	for {
		c := byte(x & 0x7f)
		x >>= 7
		if (x == 0 && c&0x40 == 0) || (x == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}
