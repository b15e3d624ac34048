package bindings

import (
	"fmt"
	"strings"
)

// checkTS checks the lexical shape of generated TypeScript: every block
// comment and string literal ends (strings on their line), line comments
// end at a newline, and brackets outside them balance.
func checkTS(src string) error {
	var stack []byte
	pairs := map[byte]byte{')': '(', ']': '[', '}': '{', '>': '<'}
	line := 1
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch {
		case c == '\n':
			line++
		case strings.HasPrefix(src[i:], "/*"):
			end := strings.Index(src[i+2:], "*/")
			if end < 0 {
				return fmt.Errorf("line %d: unterminated comment", line)
			}
			line += strings.Count(src[i:i+2+end], "\n")
			i += end + 3
		case strings.HasPrefix(src[i:], "//"):
			end := strings.IndexByte(src[i:], '\n')
			if end < 0 {
				return fmt.Errorf("line %d: line comment at the end without newline", line)
			}
			i += end - 1
		case c == '"':
			j := i + 1
			for ; j < len(src) && src[j] != '"'; j++ {
				if src[j] == '\\' {
					j++
				} else if src[j] == '\n' {
					return fmt.Errorf("line %d: newline in string", line)
				}
			}
			if j >= len(src) {
				return fmt.Errorf("line %d: unterminated string", line)
			}
			i = j
		case c == '(' || c == '[' || c == '{' || c == '<':
			stack = append(stack, c)
		case c == ')' || c == ']' || c == '}' || c == '>':
			if c == '>' && i > 0 && src[i-1] == '=' { // =>
				continue
			}
			if len(stack) == 0 || stack[len(stack)-1] != pairs[c] {
				return fmt.Errorf("line %d: unbalanced %q", line, c)
			}
			stack = stack[:len(stack)-1]
		}
	}
	if len(stack) > 0 {
		return fmt.Errorf("unclosed %q", stack)
	}
	return nil
}
