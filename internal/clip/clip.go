// Package clip shortens text that an untrusted party chose (a tool name, an
// error message) before the host records, logs or echoes it, so that what
// the host holds and writes on that party's behalf stays bounded.
package clip

import (
	"strconv"
	"unicode/utf8"
)

// Text returns s when it is at most n bytes long; otherwise its first bytes
// (cut at a character boundary) followed by "…[N bytes]", N being the
// length of s, all in at most n bytes when n is at least 24.
func Text(s string, n int) string {
	if len(s) <= n {
		return s
	}
	tail := "…[" + strconv.Itoa(len(s)) + " bytes]"
	return Prefix(s, n-len(tail)) + tail
}

// Prefix returns the longest prefix of s of at most n bytes that ends at a
// character boundary.
func Prefix(s string, n int) string {
	if n >= len(s) {
		return s
	}
	if n <= 0 {
		return ""
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// JSONLen is an upper bound of the length of s encoded as a JSON string,
// quotes included, by any common encoder: escapes for quotes, backslashes
// and control characters, and the \u escapes of HTML-safe encoders for <,
// >, &, U+2028, U+2029 and invalid bytes.
func JSONLen(s string) int {
	n := 2
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				n += 2
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1, r == '\u2028', r == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
}

// JSONPrefix returns the longest prefix of s, cut at a character boundary,
// whose JSONLen is at most n.
func JSONPrefix(s string, n int) string {
	used := 2
	for i := 0; i < len(s); {
		_, size := utf8.DecodeRuneInString(s[i:])
		if used += JSONLen(s[i:i+size]) - 2; used > n {
			return s[:i]
		}
		i += size
	}
	return s
}

// JSON returns s when JSONLen(s) is at most n; otherwise its longest prefix,
// cut at a character boundary, followed by "…[N bytes]" (N the length of s),
// whose JSONLen is at most n when n is at least 24. It bounds a string by
// the room it takes in a JSON document, escapes included.
func JSON(s string, n int) string {
	if len(s) <= n-2 && JSONLen(s) <= n {
		return s
	}
	tail := "…[" + strconv.Itoa(len(s)) + " bytes]"
	return JSONPrefix(s, n-len(tail)) + tail
}
