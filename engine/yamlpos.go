package engine

import (
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// source is one rules file as read from disk.
type source struct {
	name  string
	lines []string
	// blanked are lines removed to recover from YAML syntax errors; items
	// overlapping them were reported already and are skipped.
	blanked map[int]bool
}

// overlapsBlanked reports whether lines from..to (inclusive) hold a line
// removed for error recovery.
func (s *source) overlapsBlanked(from, to int) bool {
	for l := range s.blanked {
		if l >= from && l <= to {
			return true
		}
	}
	return false
}

func newSource(name string, src []byte) *source {
	// YAML 1.2 5.4: CRLF, CR and LF all break lines.
	text := strings.ReplaceAll(strings.ReplaceAll(string(src), "\r\n", "\n"), "\r", "\n")
	return &source{name: name, lines: strings.Split(text, "\n")}
}

func (s *source) line(n int) string {
	if n < 1 || n > len(s.lines) {
		return ""
	}
	return s.lines[n-1]
}

// commentHint explains an error in a plain (unquoted) scalar that YAML cut
// short at " #", which starts a comment: expr's # (the element in any(),
// all(), filter()) must be quoted. It returns "" when that is not the case.
func (s *source) commentHint(n *yaml.Node) string {
	if n.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		return ""
	}
	raw := s.line(n.Line)
	from := min(max(n.Column-1, 0), len(raw))
	i := strings.Index(raw[from:], " #")
	if i < 0 {
		return ""
	}
	cut := strings.TrimSpace(raw[from+i:])
	// A real trailing comment reads as prose; a cut expression leaves
	// code behind: a closing parenthesis, a quote or the rule's arrow.
	if !strings.ContainsAny(cut, ")\"'") && !strings.Contains(cut, "=>") {
		return ""
	}
	return "; YAML took \"" + cut + "\" as a comment and cut the value there: quote the whole value (expr's # must be quoted)"
}

// at reports a problem at a 1-based line and column.
func (s *source) at(line, col int, msg string) Problem {
	return Problem{File: s.name, Line: line, Col: col, Msg: msg}
}

func (s *source) atNode(n *yaml.Node, msg string) Problem {
	return s.at(n.Line, n.Column, msg)
}

// scalarPos maps a byte offset in the decoded value of scalar node n to the
// line and column (1-based, in characters) of the character in the file that
// produced it, so that an error inside an expression points into the YAML
// file and not into the expression alone.
func (s *source) scalarPos(n *yaml.Node, off int) (int, int) {
	switch n.Style {
	case yaml.LiteralStyle, yaml.FoldedStyle:
		return s.blockPos(n, off)
	}
	line, col := n.Line, n.Column // col is 1-based, in characters
	raw := s.line(line)
	i := byteIndexOfCol(raw, col)
	quote := byte(0)
	if n.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle) != 0 && i < len(raw) && (raw[i] == '\'' || raw[i] == '"') {
		quote = raw[i]
		i++
	}
	decoded := 0
	for decoded < off {
		if i >= len(raw) {
			// The scalar goes on on the next line: YAML folds the line
			// break and the next line's indentation into one space.
			if line >= len(s.lines) {
				break
			}
			line++
			raw = s.line(line)
			i = len(raw) - len(strings.TrimLeft(raw, " \t"))
			decoded++
			continue
		}
		c := raw[i]
		switch {
		case quote == '\'' && c == '\'' && i+1 < len(raw) && raw[i+1] == '\'':
			i += 2
			decoded++
		case quote == '"' && c == '\\' && i+1 < len(raw):
			w, produced := escapeWidth(raw[i+1:])
			i += 1 + w
			decoded += produced
		default:
			_, w := utf8.DecodeRuneInString(raw[i:])
			i += w
			decoded += w
		}
	}
	return line, utf8.RuneCountInString(raw[:min(i, len(raw))]) + 1
}

// escapeWidth returns how many raw bytes follow the backslash of a YAML
// double-quoted escape and how many decoded bytes it yields.
func escapeWidth(s string) (int, int) {
	switch s[0] {
	case 'x':
		return 3, 1
	case 'u':
		return 5, 3
	case 'U':
		return 9, 4
	}
	return 1, 1
}

// blockPos maps an offset in a literal (|) or folded (>) block scalar.
func (s *source) blockPos(n *yaml.Node, off int) (int, int) {
	first := n.Line + 1
	indent := -1
	for l := first; l <= len(s.lines); l++ {
		t := s.line(l)
		if strings.TrimSpace(t) == "" {
			continue
		}
		indent = len(t) - len(strings.TrimLeft(t, " "))
		break
	}
	if indent < 0 {
		return n.Line, n.Column
	}
	// Both styles give one decoded byte per raw line end, so counting line
	// breaks in the decoded value's prefix finds the line.
	val := n.Value
	if off > len(val) {
		off = len(val)
	}
	pre := val[:off]
	nl := strings.Count(pre, "\n")
	if n.Style == yaml.FoldedStyle {
		nl = 0
		l := first
		consumed := 0
		for l <= len(s.lines) {
			t := s.line(l)
			content := ""
			if len(t) > indent {
				content = t[indent:]
			}
			if consumed+len(content) >= off {
				return l, indent + utf8.RuneCountInString(content[:off-consumed]) + 1
			}
			consumed += len(content) + 1
			l++
		}
		return l - 1, indent + 1
	}
	lastNL := strings.LastIndexByte(pre, '\n')
	return first + nl, indent + utf8.RuneCountInString(pre[lastNL+1:]) + 1
}

func byteIndexOfCol(line string, col int) int {
	i := 0
	for c := 1; c < col && i < len(line); c++ {
		_, w := utf8.DecodeRuneInString(line[i:])
		i += w
	}
	return i
}

var yamlErrRe = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlProblem turns a yaml.v3 syntax error, which carries a line but no
// column, into a Problem with the column an operator would look at.
func (s *source) yamlProblem(err error) Problem {
	msg := err.Error()
	line, col := 1, 1
	if m := yamlErrRe.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	raw := s.line(line)
	col = len(raw) - len(strings.TrimLeft(raw, " \t")) + 1
	if strings.Contains(msg, "mapping values are not allowed") {
		// The offending ": " is the one after the first key on the line.
		idx := colonSpaces(raw)
		if len(idx) >= 2 {
			col = utf8.RuneCountInString(raw[:idx[1]]) + 1
		} else if len(idx) == 1 {
			col = utf8.RuneCountInString(raw[:idx[0]]) + 1
		}
	}
	if strings.Contains(msg, "found character that cannot start any token") {
		if i := strings.IndexAny(raw, "\t`@%"); i >= 0 {
			col = utf8.RuneCountInString(raw[:i]) + 1
		}
	}
	msg = "YAML: " + msg
	if t := strings.TrimLeft(raw, " -"); (strings.HasPrefix(t, "then:") || strings.HasPrefix(t, "when:")) && strings.Contains(msg, "mapping values") {
		msg += "; YAML reads \": \" inside an unquoted value as a new key: quote the whole value, as in\n    " + quotedForm(raw)
	} else if strings.Contains(raw, "=>") {
		msg += "; this line holds a rule, and YAML reads \": \" inside an unquoted value as a new key: quote the whole rule, as in\n    " + quotedForm(raw)
	}
	return s.at(line, col, msg)
}

// colonSpaces returns the byte offsets of each ": " (or ":" at the end of
// the line) outside quotes.
func colonSpaces(raw string) []int {
	var out []int
	var q byte
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case q != 0:
			if c == q {
				q = 0
			}
		case (c == '"' || c == '\'') && startsValue(raw[:i]):
			q = c
		case c == '#' && (i == 0 || raw[i-1] == ' '):
			return out
		case c == ':' && (i+1 == len(raw) || raw[i+1] == ' '):
			out = append(out, i)
		}
	}
	return out
}

// quotedForm rewrites a rules-file line holding an unquoted rule into the
// single-quoted form YAML reads as one string.
func quotedForm(raw string) string {
	indent := raw[:len(raw)-len(strings.TrimLeft(raw, " "))]
	body := strings.TrimLeft(raw, " ")
	prefix := ""
	if strings.HasPrefix(body, "- ") {
		prefix, body = "- ", strings.TrimLeft(body[2:], " ")
	}
	// A named one-liner keeps its name outside the quotes.
	if i := strings.Index(body, ": "); i > 0 && !strings.Contains(body[:i], "=>") && !strings.ContainsAny(body[:i], " \"'") {
		prefix += body[:i+2]
		body = strings.TrimLeft(body[i+2:], " ")
	}
	if len(body) >= 2 && (body[0] == '\'' || body[0] == '"') && body[len(body)-1] == body[0] {
		return indent + prefix + body
	}
	return indent + prefix + "'" + strings.ReplaceAll(body, "'", "''") + "'"
}

// startsValue reports whether a quote after prefix opens a quoted scalar:
// YAML quotes only at the start of a value, not inside a plain one.
func startsValue(prefix string) bool {
	t := strings.TrimRight(prefix, " ")
	return t == "" || strings.HasSuffix(t, ":") || strings.HasSuffix(t, "-") || strings.HasSuffix(t, "[") || strings.HasSuffix(t, ",") || strings.HasSuffix(t, "{")
}
