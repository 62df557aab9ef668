// Package canon brings a received message to the form the relay stores and
// sends: CRLF line ends, lines of at most 998 octets, and none of the
// client's header fields that would pass for the relay's own results.
package canon

import (
	"bytes"
	"strings"
)

// MaxLine is RFC 5322 2.1.1's limit on a line, without its CRLF.
const MaxLine = 998

// splitWindow is how far back from the limit a split looks for white space,
// so that a long HTML or text line breaks between words (a URL stays whole)
// when it can.
const splitWindow = 120

// Changes says what Message changed, for the log.
type Changes struct {
	BareCR, BareLF int      // line ends made CRLF
	Split          int      // lines split at MaxLine
	Removed        []string // header fields removed, by name
}

// Changed reports whether anything was changed.
func (c Changes) Changed() bool {
	return c.BareCR+c.BareLF+c.Split+len(c.Removed) > 0
}

// Message returns msg with:
//   - every bare CR and bare LF made CRLF (RFC 5321 2.3.8 forbids both in
//     content; a next hop would read them as line ends, or not);
//   - every line longer than MaxLine split: a header line folded before white
//     space (or with an inserted space where it has none), a body line after
//     white space near the limit (else at the limit), as Postfix does;
//   - the header fields removed that a client must not bring: an
//     Authentication-Results whose authserv-id is host (RFC 8601 5) and every
//     X-Spam-* field (the relay's filter verdict is its own to add).
//
// It costs one scan when nothing changes (msg is returned as is), and one
// more pass to rewrite when something does: linear in the message size.
// dst, if not nil, is reused for the rewritten message.
func Message(msg []byte, host string, dst []byte) ([]byte, Changes) {
	if clean(msg, host) {
		return msg, Changes{}
	}
	return rewrite(msg, host, dst[:0])
}

// clean is the fast check: no bare CR or LF, no long line, no field to
// remove.
func clean(msg []byte, host string) bool {
	inHeader := true
	for start := 0; start < len(msg); {
		n := bytes.IndexByte(msg[start:], '\n')
		if n < 0 {
			// The last line, without an end.
			rest := msg[start:]
			return len(rest) <= MaxLine && bytes.IndexByte(rest, '\r') < 0 && (!inHeader || !drop(rest, host))
		}
		if n == 0 || msg[start+n-1] != '\r' {
			return false // a bare LF
		}
		line := msg[start : start+n-1]
		if len(line) > MaxLine || bytes.IndexByte(line, '\r') >= 0 {
			return false
		}
		if inHeader {
			if len(line) == 0 {
				inHeader = false
			} else if drop(line, host) {
				return false
			}
		}
		start += n + 1
	}
	return true
}

// drop reports whether a header line starts a field to remove.
func drop(line []byte, host string) bool {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 || line[0] == ' ' || line[0] == '\t' {
		return false
	}
	name := bytes.TrimRight(line[:colon], " \t")
	if len(name) >= 7 && strings.EqualFold(string(name[:7]), "x-spam-") {
		return true
	}
	if !strings.EqualFold(string(name), "authentication-results") {
		return false
	}
	// RFC 8601 2.2: the value starts with the authserv-id, then an
	// optional version, then ';'.
	v := bytes.TrimLeft(line[colon+1:], " \t")
	if i := bytes.IndexAny(v, "; \t("); i >= 0 {
		v = v[:i]
	}
	return host != "" && strings.EqualFold(strings.TrimSuffix(string(v), "."), strings.TrimSuffix(host, "."))
}

func rewrite(msg []byte, host string, out []byte) ([]byte, Changes) {
	var ch Changes
	if cap(out) < len(msg)+len(msg)/64 {
		out = make([]byte, 0, len(msg)+len(msg)/64+64)
	}
	inHeader, dropping := true, false
	start := 0
	for start < len(msg) {
		// The next line: its content and where the one after it starts.
		end, next := len(msg), len(msg)
		ended := false
		for i := start; i < len(msg); i++ {
			if msg[i] == '\r' {
				end, ended = i, true
				if i+1 < len(msg) && msg[i+1] == '\n' {
					next = i + 2
				} else {
					next = i + 1
					ch.BareCR++
				}
				break
			}
			if msg[i] == '\n' {
				end, next, ended = i, i+1, true
				ch.BareLF++
				break
			}
		}
		line := msg[start:end]
		start = next
		if inHeader {
			if len(line) == 0 {
				inHeader, dropping = false, false
			} else if line[0] == ' ' || line[0] == '\t' {
				if dropping {
					continue // a continuation of a removed field
				}
			} else if dropping = drop(line, host); dropping {
				name, _, _ := bytes.Cut(line, []byte(":"))
				ch.Removed = append(ch.Removed, string(bytes.TrimSpace(name)))
				continue
			}
		}
		out = appendSplit(out, line, inHeader, &ch)
		if ended {
			out = append(out, '\r', '\n')
		}
	}
	return out, ch
}

// appendSplit appends line, split into lines of at most MaxLine octets.
func appendSplit(out, line []byte, header bool, ch *Changes) []byte {
	room := MaxLine // what the current output line may still take
	for len(line) > room {
		ch.Split++
		// A header folds before white space (it begins the continuation);
		// a body line breaks after it.
		cut, from := -1, room-1
		if header {
			from = room
		}
		for i := from; i > 0 && i > room-splitWindow; i-- {
			if line[i] == ' ' || line[i] == '\t' {
				cut = i
				break
			}
		}
		switch {
		case header && cut > 0:
			out = append(append(out, line[:cut]...), '\r', '\n')
			line, room = line[cut:], MaxLine
		case header:
			// No white space to fold at: insert one, which the
			// continuation's length counts.
			out = append(append(out, line[:room]...), '\r', '\n', ' ')
			line, room = line[room:], MaxLine-1
		case cut > 0:
			out = append(append(out, line[:cut+1]...), '\r', '\n')
			line, room = line[cut+1:], MaxLine
		default:
			out = append(append(out, line[:room]...), '\r', '\n')
			line, room = line[room:], MaxLine
		}
	}
	return append(out, line...)
}
