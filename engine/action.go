package engine

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ActionKind is what a rule does when its expression is true.
type ActionKind uint8

// Rule actions (SPEC 1, "Actions").
const (
	ActScore  ActionKind = iota // add Score to the message score
	ActBlock                    // refuse now with Code, Enhanced, Text
	ActHold                     // accept into the holding area
	ActAccept                   // allowlist: accept, no later rule acts
	ActList                     // put the value of fact Key on List, for TTL (0: for good)
)

func (k ActionKind) String() string {
	return [...]string{"score", "block", "hold", "accept", "list"}[k]
}

// Action is a parsed `then`.
type Action struct {
	Kind     ActionKind
	Score    float64
	Code     int
	Enhanced string
	Text     string
	// For list: the list, the fact whose value goes on it, how long.
	List   string
	KeyOf  string
	TTL    time.Duration
	keyOff int // where KeyOf is in the action's text, for errors
}

// Default reply texts, used when a block or hold gives none.
const (
	defaultTempText   = "Temporary policy failure, please try again later"
	defaultPermText   = "Message refused by policy"
	defaultHoldText   = "Message accepted and held for review"
	thresholdText     = "Spam message rejected"
	internalErrorText = "Temporary local problem, please try again later"
)

func (a Action) String() string {
	switch a.Kind {
	case ActScore:
		return formatScore(a.Score, true)
	case ActBlock:
		return fmt.Sprintf("block %d %s %s", a.Code, a.Enhanced, strconv.Quote(a.Text))
	case ActHold:
		return "hold " + strconv.Quote(a.Text)
	case ActList:
		out := "list " + a.List + " " + a.KeyOf
		if a.TTL > 0 {
			out += " for " + formatTTL(a.TTL)
		}
		if a.Text != "" {
			out += " " + strconv.Quote(a.Text)
		}
		return out
	default:
		return "accept"
	}
}

// formatScore prints a score the way an operator writes it.
func formatScore(s float64, signed bool) string {
	out := strconv.FormatFloat(roundScore(s), 'f', -1, 64)
	if signed && s >= 0 {
		out = "+" + out
	}
	return out
}

// roundScore cuts binary floating-point noise (0.1+0.2) so that a score equal
// to a threshold on paper is equal to it here too.
func roundScore(s float64) float64 {
	return math.Round(s*1e6) / 1e6
}

var (
	scoreRe    = regexp.MustCompile(`^[+-]?(\d+(\.\d*)?|\.\d+)$`)
	enhancedRe = regexp.MustCompile(`^[245]\.\d{1,3}\.\d{1,3}$`)
	actionVerb = []string{"block", "hold", "accept", "list"}
	listNameRe = regexp.MustCompile(`^[A-Za-z0-9_.:-]+$`)
)

// actionError is a problem with an action, at byte offset Off in its text.
type actionError struct {
	Off int
	Msg string
}

func (e *actionError) Error() string { return e.Msg }

// ParseAction reads an action as written after `=>` or in `then`.
func ParseAction(s string) (Action, error) {
	lead := len(s) - len(strings.TrimLeft(s, " \t"))
	a, err := parseAction(strings.TrimSpace(s))
	if ae, ok := err.(*actionError); ok {
		ae.Off += lead
	}
	a.keyOff += lead
	return a, err
}

func parseAction(s string) (Action, error) {
	if s == "" {
		return Action{}, &actionError{0, "missing action: want +N, -N, block CODE [X.Y.Z] [\"TEXT\"], hold [\"TEXT\"], accept or list NAME FACT [for DURATION]"}
	}
	if scoreRe.MatchString(s) {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsInf(f, 0) {
			return Action{}, &actionError{0, fmt.Sprintf("bad score %q", s)}
		}
		return Action{Kind: ActScore, Score: f}, nil
	}
	verb, rest, _ := strings.Cut(s, " ")
	restOff := len(verb) + 1
	rest = strings.TrimLeft(rest, " \t")
	restOff = len(s) - len(rest)
	switch strings.ToLower(verb) {
	case "accept":
		if rest != "" {
			return Action{}, &actionError{restOff, fmt.Sprintf("accept takes nothing after it, got %q", rest)}
		}
		return Action{Kind: ActAccept}, nil
	case "hold":
		text, err := parseText(rest, restOff)
		if err != nil {
			return Action{}, err
		}
		if text == "" {
			text = defaultHoldText
		}
		return Action{Kind: ActHold, Text: text}, nil
	case "block":
		return parseBlock(rest, restOff)
	case "list":
		return parseList(rest, restOff)
	}
	msg := fmt.Sprintf("unknown action %q: want +N, -N, block CODE [X.Y.Z] [\"TEXT\"], hold [\"TEXT\"] or accept", verb)
	switch strings.ToLower(verb) {
	case "reject", "deny", "refuse", "tempfail", "defer":
		msg += fmt.Sprintf(" (did you mean block? e.g. block %s)", map[bool]string{true: "451", false: "550"}[strings.ToLower(verb) == "tempfail" || strings.ToLower(verb) == "defer"])
	default:
		msg += didYouMean(strings.ToLower(verb), actionVerb)
	}
	return Action{}, &actionError{0, msg}
}

// parseList reads `list NAME FACT [for DURATION] ["REASON"]`: put the
// value of FACT on the dynamic list NAME, e.g. `list blocked smtp_user for
// 7d "sustained abuse"`. The relay applies it; it does not end evaluation.
func parseList(rest string, off int) (Action, error) {
	const usage = `list needs a list name and a fact, e.g. list blocked mail_from for 7d "abuse"`
	fields := strings.Fields(rest)
	if len(fields) < 2 || strings.HasPrefix(fields[1], `"`) {
		return Action{}, &actionError{off, usage}
	}
	a := Action{Kind: ActList, List: fields[0], KeyOf: fields[1]}
	if !listNameRe.MatchString(a.List) {
		return Action{}, &actionError{off, fmt.Sprintf("list name %q: letters, digits and _ . : - only", a.List)}
	}
	a.keyOff = off + strings.Index(rest, fields[1])
	tail := strings.TrimSpace(rest[strings.Index(rest, fields[1])+len(fields[1]):])
	tailOff := off + len(rest) - len(tail)
	if d, ok := strings.CutPrefix(tail, "for "); ok {
		d = strings.TrimLeft(d, " ")
		word, after, _ := strings.Cut(d, " ")
		ttl, err := parseTTL(word)
		if err != nil {
			return Action{}, &actionError{tailOff, err.Error()}
		}
		a.TTL = ttl
		tail = strings.TrimSpace(after)
		tailOff = off + len(rest) - len(tail)
	}
	if tail != "" {
		if tail[0] != '"' {
			return Action{}, &actionError{tailOff, fmt.Sprintf("unexpected %q: %s", tail, usage)}
		}
		text, err := parseText(tail, tailOff)
		if err != nil {
			return Action{}, err
		}
		a.Text = text
	}
	return a, nil
}

// parseTTL reads 30m, 12h, 7d.
func parseTTL(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseFloat(d, 64)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("duration %q: want e.g. 30m, 12h or 7d", s)
		}
		return time.Duration(n * float64(24*time.Hour)), nil
	}
	t, err := time.ParseDuration(s)
	if err != nil || t <= 0 {
		return 0, fmt.Errorf("duration %q: want e.g. 30m, 12h or 7d", s)
	}
	return t, nil
}

func formatTTL(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	}
	return d.String()
}

func parseBlock(rest string, off int) (Action, error) {
	codeStr, after, _ := strings.Cut(rest, " ")
	if codeStr == "" {
		return Action{}, &actionError{off, "block needs a reply code, e.g. block 550 5.7.1 \"Blocked\""}
	}
	code, err := strconv.Atoi(codeStr)
	if err != nil || len(codeStr) != 3 || code < 400 || code > 599 {
		return Action{}, &actionError{off, fmt.Sprintf("block code %q: want a 4xx (temporary) or 5xx (permanent) SMTP code", codeStr)}
	}
	a := Action{Kind: ActBlock, Code: code}
	trimmed := strings.TrimLeft(after, " \t")
	off += len(rest) - len(trimmed)
	after = trimmed
	if after != "" && after[0] != '"' {
		tok, tail, _ := strings.Cut(after, " ")
		if enhancedRe.MatchString(tok) {
			if tok[0] != codeStr[0] {
				return Action{}, &actionError{off, fmt.Sprintf("enhanced code %s does not match the class of %d (RFC 3463: it must start with %c)", tok, code, codeStr[0])}
			}
			a.Enhanced = tok
			t2 := strings.TrimLeft(tail, " \t")
			off += len(after) - len(t2)
			after = t2
		} else if strings.Count(tok, ".") == 2 && strings.IndexFunc(tok, func(r rune) bool { return (r < '0' || r > '9') && r != '.' }) < 0 {
			return Action{}, &actionError{off, fmt.Sprintf("enhanced code %q: want CLASS.SUBJECT.DETAIL with class 4 or 5 (RFC 3463)", tok)}
		}
	}
	if a.Enhanced == "" {
		a.Enhanced = fmt.Sprintf("%c.7.1", codeStr[0])
	}
	text, err := parseText(after, off)
	if err != nil {
		return Action{}, err
	}
	if text == "" {
		text = defaultPermText
		if code < 500 {
			text = defaultTempText
		}
	}
	a.Text = text
	return a, nil
}

// parseText reads an optional reply text: a double-quoted string, or the
// rest of the line as written.
func parseText(s string, off int) (string, error) {
	if s == "" {
		return "", nil
	}
	text := s
	if s[0] == '"' {
		end := -1
		for i := 1; i < len(s); i++ {
			if s[i] == '\\' {
				i++
				continue
			}
			if s[i] == '"' {
				end = i
				break
			}
		}
		if end < 0 {
			return "", &actionError{off, "reply text: missing closing quote"}
		}
		if tail := strings.TrimSpace(s[end+1:]); tail != "" {
			return "", &actionError{off + end + 1, fmt.Sprintf("unexpected %q after the reply text", tail)}
		}
		u, err := strconv.Unquote(s[:end+1])
		if err != nil {
			return "", &actionError{off, fmt.Sprintf("reply text: %v", err)}
		}
		text = u
	}
	for i, r := range text {
		// RFC 5321 4.2: a reply line is printable text; a CR or LF would
		// let a rule inject extra reply lines.
		if r < 0x20 || r == 0x7f {
			return "", &actionError{off + i, "reply text holds a control character"}
		}
	}
	if len(text) > 400 {
		return "", &actionError{off, "reply text is longer than 400 characters"}
	}
	return text, nil
}
