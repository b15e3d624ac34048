package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ReadReport tells what [Read] read.
type ReadReport struct {
	// Files are the files read, oldest first.
	Files []string
	// Lines is the number of events handed to fn.
	Lines int
	// Torn lists, as "file:line", the torn last lines (without a newline)
	// that were skipped: what a crash of the machine, or a write still
	// under way, leaves.
	Torn []string
}

// Read reads the audit log at path, its rotated files (path.N, the
// highest N first) and then path itself, and hands fn each event in
// order. It stops at the first error of fn, which it returns. A torn last
// line is skipped and reported; a malformed line (not a JSON object) is
// an error naming its file and line. A log with no file at all is an error
// that wraps [fs.ErrNotExist].
//
// Read does not check the chain: that is [Verify]'s job.
func Read(path string, fn func(*Event) error) (ReadReport, error) {
	var rep ReadReport
	err := scanAudit(path, &rep.Files, func(file string, n int, line []byte, complete bool) error {
		if !complete {
			rep.Torn = append(rep.Torn, file+":"+strconv.Itoa(n))
			return nil
		}
		ev := new(Event)
		if err := decodeLine(line, ev); err != nil {
			return fmt.Errorf("%s:%d: malformed audit line: %w", file, n, err)
		}
		rep.Lines++
		return fn(ev)
	})
	return rep, err
}

// decodeLine decodes one line, which must be a JSON object, into v.
func decodeLine(line []byte, v any) error {
	if len(line) == 0 || line[0] != '{' {
		return errors.New("not a JSON object")
	}
	return json.Unmarshal(line, v)
}

// VerifyReport is the result of [Verify].
type VerifyReport struct {
	// Files are the files read, oldest first.
	Files []string
	// Lines is the number of complete lines whose link was checked and
	// found good (all of them when the chain is whole).
	Lines int
	// Torn lists the torn last lines skipped, as in [ReadReport].
	Torn []string
	// Start is the prev of the first line: [Genesis] when the log
	// holds everything since its beginning; otherwise the lines before
	// were rotated away (or removed, which the chain alone cannot tell).
	Start string
	// Head is the hex SHA-256 of the last complete line. Kept elsewhere,
	// it lets a later check notice lines removed from the end, which the
	// chain alone cannot show.
	Head string
	// Broken is the first broken link, or nil when the chain is whole.
	Broken *BrokenLink
}

// OK reports whether the chain is whole.
func (r *VerifyReport) OK() bool { return r.Broken == nil }

// BrokenLink is a line whose prev is not the SHA-256 of the line before
// it: a line before it was changed or removed, lines were reordered, or
// the line itself was made up.
type BrokenLink struct {
	File string `json:"file"`
	Line int    `json:"line"` // 1-based, within File
	// Expected is the hex SHA-256 of the complete line before ("" when
	// the line is the first); Got is the line's prev ("" when it has
	// none).
	Expected string `json:"expected"`
	Got      string `json:"got"`
	// Reason says what is wrong, for people.
	Reason string `json:"reason"`
}

// String says where the chain breaks and why: "file:line: reason".
func (b *BrokenLink) String() string {
	return fmt.Sprintf("%s:%d: %s", b.File, b.Line, b.Reason)
}

// Verify checks the hash chain of the audit log at path across its
// rotated files, oldest first, and reports the first broken link. A
// broken chain is not an error: see [VerifyReport].Broken. Errors are
// for logs that cannot be read; a log with no file at all is one that
// wraps [fs.ErrNotExist].
func Verify(path string) (VerifyReport, error) {
	var rep VerifyReport
	var (
		prev     [64]byte
		havePrev bool
		link     struct {
			Prev *string `json:"prev"`
		}
	)
	errStop := errors.New("stop")
	err := scanAudit(path, &rep.Files, func(file string, n int, line []byte, complete bool) error {
		if !complete {
			rep.Torn = append(rep.Torn, file+":"+strconv.Itoa(n))
			return nil
		}
		broken := func(got, reason string) error {
			rep.Broken = &BrokenLink{File: file, Line: n, Got: got, Reason: reason}
			if havePrev {
				rep.Broken.Expected = string(prev[:])
			}
			return errStop
		}
		link.Prev = nil
		if err := decodeLine(line, &link); err != nil {
			return broken("", "not a JSON object: "+err.Error())
		}
		switch {
		case link.Prev == nil:
			return broken("", "no prev field")
		case !havePrev:
			rep.Start = *link.Prev
		case *link.Prev != string(prev[:]):
			return broken(*link.Prev, "prev is not the SHA-256 of the line before: a line before it was changed, removed or moved, or this one was")
		}
		sum := sha256.Sum256(line)
		hex.Encode(prev[:], sum[:])
		havePrev = true
		rep.Lines++
		return nil
	})
	if havePrev {
		rep.Head = string(prev[:])
	}
	if errors.Is(err, errStop) {
		err = nil
	}
	return rep, err
}

// scanAudit calls fn with every line of the audit log at path, oldest
// first; complete is false for a torn last line. The files are opened
// before reading, newest first, so that a rotation meanwhile does not
// make a file vanish under the reader; a rotation can still hide the
// newest lines, or the oldest file, from this read.
func scanAudit(path string, files *[]string, fn func(file string, n int, line []byte, complete bool) error) error {
	names, _, err := rotatedFiles(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read audit log: %w", err)
	}
	names = append(names, path)
	type open struct {
		name string
		f    *os.File
		fi   os.FileInfo
	}
	var opened []open
	defer func() {
		for _, o := range opened {
			o.f.Close()
		}
	}()
	for _, name := range slices.Backward(names) {
		f, err := os.Open(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read audit log: %w", err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return fmt.Errorf("read audit log: %w", err)
		}
		if fi.IsDir() {
			f.Close()
			return fmt.Errorf("read audit log: %s is a directory", name)
		}
		if slices.ContainsFunc(opened, func(o open) bool { return os.SameFile(o.fi, fi) }) {
			f.Close() // renamed by a rotation since the listing
			continue
		}
		opened = append(opened, open{name, f, fi})
	}
	if len(opened) == 0 {
		return fmt.Errorf("read audit log: %w", &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist})
	}
	slices.Reverse(opened)
	br := bufio.NewReaderSize(nil, 64<<10)
	var buf []byte
	for _, o := range opened {
		*files = append(*files, o.name)
		br.Reset(o.f)
		for n := 1; ; n++ {
			line, complete, err := readLine(br, &buf)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("read audit log: %s:%d: %w", o.name, n, err)
			}
			if err := fn(o.name, n, line, complete); err != nil {
				return err
			}
			if !complete {
				break
			}
		}
	}
	return nil
}

// readLine reads one line of br, without its newline. complete is false
// for a last line without a newline. At the end it returns io.EOF. The
// line is valid until the next call; buf is scratch space.
func readLine(br *bufio.Reader, buf *[]byte) (line []byte, complete bool, err error) {
	chunk, err := br.ReadSlice('\n')
	if err == nil {
		return chunk[:len(chunk)-1], true, nil
	}
	*buf = append((*buf)[:0], chunk...)
	for errors.Is(err, bufio.ErrBufferFull) {
		if len(*buf) > MaxLineBytes {
			return nil, false, fmt.Errorf("line longer than %d bytes", MaxLineBytes)
		}
		chunk, err = br.ReadSlice('\n')
		*buf = append(*buf, chunk...)
	}
	switch {
	case err == nil:
		if len(*buf) > MaxLineBytes+1 {
			return nil, false, fmt.Errorf("line longer than %d bytes", MaxLineBytes)
		}
		return (*buf)[:len(*buf)-1], true, nil
	case errors.Is(err, io.EOF) && len(*buf) > 0:
		return *buf, false, nil
	default:
		return nil, false, err
	}
}

// RecordedKeyChanges returns the key changes (key.created, key.rotated,
// key.revoked) the audit log at path records since a time, as "type
// keyId" (a key is created, rotated and revoked at most once each, so
// that names one change). It reads backwards from the newest line and
// stops at the first line dated before since, so it reads no more than
// the lines written since then. A log with no file records none.
func RecordedKeyChanges(path string, since time.Time) (map[string]bool, error) {
	found := map[string]bool{}
	names, _, err := rotatedFiles(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	names = append(names, path) // oldest first
	var line struct {
		Time  time.Time `json:"time"`
		Type  string    `json:"type"`
		KeyID string    `json:"keyId"`
	}
	errStop := errors.New("stop")
	for _, name := range slices.Backward(names) {
		err := scanBackward(name, func(b []byte) error {
			line.Time, line.Type, line.KeyID = time.Time{}, "", ""
			if decodeLine(b, &line) != nil {
				return nil // a torn or broken line: Verify's business
			}
			if strings.HasPrefix(line.Type, "key.") {
				found[line.Type+" "+line.KeyID] = true
			}
			if line.Time.Before(since) {
				return errStop
			}
			return nil
		})
		if errors.Is(err, errStop) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read audit log: %w", err)
		}
	}
	return found, nil
}

// scanBackward calls fn with each line of the file at path (without its
// newline), the last first. A missing file has no lines. It stops at the
// first error of fn.
func scanBackward(path string, fn func(line []byte) error) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	const chunk = 64 << 10
	var tail []byte // the start of the file's part after end, up to its first newline
	for end := fi.Size(); end > 0; {
		start := max(0, end-chunk)
		buf := make([]byte, end-start, int(end-start)+len(tail))
		if _, err := f.ReadAt(buf, start); err != nil {
			return err
		}
		buf = append(buf, tail...)
		for {
			i := bytes.LastIndexByte(buf, '\n')
			if i < 0 {
				break
			}
			if line := buf[i+1:]; len(line) > 0 {
				if err := fn(line); err != nil {
					return err
				}
			}
			buf = buf[:i]
		}
		if len(buf) > MaxLineBytes {
			return fmt.Errorf("%s: line longer than %d bytes", path, MaxLineBytes)
		}
		tail = buf
		end = start
	}
	if len(tail) > 0 {
		return fn(tail)
	}
	return nil
}
