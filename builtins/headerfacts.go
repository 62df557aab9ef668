package builtins

import (
	"net/mail"
	"net/netip"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// ListValues is what a StaticLists may also offer: every value of a list,
// for functions that search a text for the list's entries (phrases).
type ListValues interface {
	Values(name string) (values []string, found bool)
}

// headerState holds what several header facts share, computed on first use
// and forgotten with the message.
type headerState struct {
	receiptDone bool
	receipt     time.Time // Input.ReceivedAt, else ReceiptTime

	lowered     string // subject and text, lower case, for phrases
	loweredDone bool
	phrases     map[string]int
}

func headerFacts() []Fact {
	return []Fact{
		{Name: "date_missing", Type: Bool, Phase: Data, Doc: "the message has no Date field (RFC 5322 3.6 requires one)",
			Compute: func(m *Message) (any, error) { return !m.Header().Has("Date"), nil }},
		{Name: "date_invalid", Type: Bool, Phase: Data, Doc: "the Date field is present but does not parse, or names a time zone no place has (beyond -12:00..+14:00, minutes 60 or more)",
			Compute: func(m *Message) (any, error) {
				if !m.Header().Has("Date") {
					return false, nil
				}
				_, ok := headerDate(m.Header().Get("Date"))
				return !ok, nil
			}},
		{Name: "date_skew_hours", Type: Float, Phase: Data, Doc: "hours from the receipt time to the Date field, positive when Date is in the future, 0 when Date is missing or invalid; the receipt time is the relay's clock when DATA ended, and in scan, explain and test a fixture's received_at, else the newest Received field's time, else now",
			Compute: func(m *Message) (any, error) {
				d, ok := headerDate(m.Header().Get("Date"))
				if !ok {
					return 0.0, nil
				}
				return d.Sub(m.receiptTime()).Hours(), nil
			}},
		{Name: "message_id_missing", Type: Bool, Phase: Data, Doc: "the message has no Message-ID field",
			Compute: func(m *Message) (any, error) { return !m.Header().Has("Message-ID"), nil }},
		{Name: "message_id_malformed", Type: Bool, Phase: Data, Doc: "the Message-ID is not <left@right> with both sides non-empty and no white space (RFC 5322 3.6.4)",
			Compute: func(m *Message) (any, error) {
				v, ok := m.Header().raw("Message-ID")
				return ok && !wellFormedMsgID(v), nil
			}},
		{Name: "message_id_ratware", Type: Bool, Phase: Data, Doc: "the Message-ID imitates Outlook's hex$hex$hex@host shape with segment lengths Outlook never writes (it writes 12$8$8): the shape of bulk-mailing programs",
			Compute: func(m *Message) (any, error) {
				v, _ := m.Header().raw("Message-ID")
				return ratwareMsgID(v), nil
			}},
		{Name: "received_count", Type: Int, Phase: Data, Doc: "number of Received fields (hops the message went through)",
			Compute: func(m *Message) (any, error) { return len(m.Header().Values("Received")), nil }},
		{Name: "received_bad_hops", Type: Int, Phase: Data, Doc: "Received fields that cannot be true: an address literal that is not an IP address (an octet above 255), or a time later than that of the hop added after it by more than a day",
			Compute: func(m *Message) (any, error) { return badHops(m.Header().Values("Received")), nil }},
		{Name: "mailer", Type: String, Phase: Data, Doc: `the program the sender claims: X-Mailer, else User-Agent; "" if neither`,
			Compute: func(m *Message) (any, error) { return mailerOf(m.Header()), nil }},
		{Name: "mailer_contradiction", Type: Bool, Phase: Data, Doc: "the Message-ID has Outlook's exact hex$hex$hex@host shape but the mailer claims another program or none",
			Compute: func(m *Message) (any, error) {
				v, _ := m.Header().raw("Message-ID")
				return outlookMsgID(v) && !strings.HasPrefix(mailerOf(m.Header()), "Microsoft Outlook"), nil
			}},
		{Name: "mailer_random", Type: Bool, Phase: Data, Doc: "the mailer claim is one token of 10 or more letters and digits in mixed case with no version or punctuation: a random string, not a program name",
			Compute: func(m *Message) (any, error) { return randomToken(mailerOf(m.Header())), nil }},
		{Name: "subject_encoded_abuse", Type: Bool, Phase: Data, Doc: "the Subject uses RFC 2047 encoded words although its decoded text is plain ASCII: encoding to hide words from filters",
			Compute: func(m *Message) (any, error) {
				raw, _ := m.Header().raw("Subject")
				if !strings.Contains(raw, "=?") {
					return false, nil
				}
				dec := m.Header().Subject()
				return dec != raw && isASCII(dec) && !strings.Contains(dec, "=?"), nil
			}},
		{Name: "subject_mixed_scripts", Type: Bool, Phase: Data, Doc: "a word of the Subject mixes letters of the Latin, Cyrillic and Greek scripts (look-alike letters)",
			Compute: func(m *Message) (any, error) { return mixedScripts(m.Header().Subject()), nil }},
		{Name: "subject_punctuation", Type: Int, Phase: Data, Doc: "'!' and '$' in the Subject, plus 1 for each run of 3 or more '?', '*' or '%'",
			Compute: func(m *Message) (any, error) { return punctuation(m.Header().Subject()), nil }},
	}
}

func headerFuncs() []Func {
	return []Func{
		{Name: "phrases", Signature: "phrases(name) int", Phase: Data,
			Doc:    `how many distinct phrases of the static list "phrases_NAME" occur in the subject and text, as whole words, ignoring case`,
			Params: []Type{String}, Result: Int,
			Call: func(m *Message, a []any) any { s, _ := a[0].(string); return m.phraseCount(s) }},
	}
}

// receiptTime is the time the Date facts measure against: the input's
// ReceivedAt, else ReceiptTime of the header at the current time.
func (m *Message) receiptTime() time.Time {
	if !m.hs.receiptDone {
		m.hs.receiptDone = true
		m.hs.receipt = m.in.ReceivedAt
		if m.hs.receipt.IsZero() {
			m.hs.receipt = ReceiptTime(m.Header(), time.Now())
		}
	}
	return m.hs.receipt
}

// ReceiptTime is when a message whose header is h was received, for the
// facts about its Date when the caller did not see it arrive (SPEC 7): the
// time of its newest Received field, the topmost one that carries a valid
// date (RFC 5321 4.4: each hop prepends its own), else now.
func ReceiptTime(h *Header, now time.Time) time.Time {
	if h != nil {
		for _, v := range h.Values("Received") {
			if t, ok := receivedTime(v); ok {
				return t
			}
		}
	}
	return now
}

func (m *Message) phraseCount(name string) int {
	if n, ok := m.hs.phrases[name]; ok {
		return n
	}
	lv, ok := m.static.(ListValues)
	if !ok {
		return 0
	}
	list, _ := lv.Values("phrases_" + name)
	if !m.hs.loweredDone {
		m.hs.lowered = strings.ToLower(m.Header().Subject()) + "\n" + strings.ToLower(m.Body().Text)
		m.hs.loweredDone = true
	}
	n := 0
	for _, p := range list {
		if p != "" && containsWord(m.hs.lowered, p) {
			n++
		}
	}
	if m.hs.phrases == nil {
		m.hs.phrases = map[string]int{}
	}
	m.hs.phrases[name] = n
	return n
}

// containsWord reports whether p occurs in s with no letter or digit
// directly before or after it.
func containsWord(s, p string) bool {
	for off := 0; ; {
		i := strings.Index(s[off:], p)
		if i < 0 {
			return false
		}
		i += off
		end := i + len(p)
		before, _ := utf8.DecodeLastRuneInString(s[:i])
		after, _ := utf8.DecodeRuneInString(s[end:])
		if (i == 0 || !isWordRune(before)) && (end == len(s) || !isWordRune(after)) {
			return true
		}
		off = i + 1
	}
}

func isWordRune(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }

// headerDate parses a Date value and checks that its zone exists.
func headerDate(v string) (time.Time, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, false
	}
	t, err := mail.ParseDate(v)
	if err != nil {
		return time.Time{}, false
	}
	// RFC 5322 3.3: the zone is +hhmm; real zones run from -12:00 to +14:00.
	_, off := t.Zone()
	if off < -12*3600 || off > 14*3600 {
		return time.Time{}, false
	}
	if i := strings.LastIndexAny(v, "+-"); i >= 0 && i+5 <= len(v) {
		if z := v[i+1 : i+5]; isDigits(z) && z[2] >= '6' {
			return time.Time{}, false // minutes 60..99
		}
	}
	return t, true
}

func receivedTime(v string) (time.Time, bool) {
	i := strings.LastIndexByte(v, ';')
	if i < 0 {
		return time.Time{}, false
	}
	return headerDate(v[i+1:])
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i] | 0x20
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return s != ""
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func msgIDParts(v string) (left, right string, ok bool) {
	v = strings.TrimSpace(v)
	if !strings.HasPrefix(v, "<") || !strings.HasSuffix(v, ">") {
		return "", "", false
	}
	v = v[1 : len(v)-1]
	i := strings.LastIndexByte(v, '@')
	if i < 0 {
		return "", "", false
	}
	return v[:i], v[i+1:], true
}

func wellFormedMsgID(v string) bool {
	l, r, ok := msgIDParts(v)
	return ok && l != "" && r != "" && !strings.ContainsAny(l+r, " \t<>") && strings.Count(l, "@") == 0
}

// outlookMsgID: Outlook and Outlook Express write 12$8$8 hex digits.
func outlookMsgID(v string) bool {
	l, _, ok := msgIDParts(v)
	if !ok {
		return false
	}
	p := strings.Split(l, "$")
	return len(p) == 3 && len(p[0]) == 12 && len(p[1]) == 8 && len(p[2]) == 8 && isHex(p[0]) && isHex(p[1]) && isHex(p[2])
}

func ratwareMsgID(v string) bool {
	l, r, ok := msgIDParts(v)
	if !ok {
		return false
	}
	p := strings.Split(l, "$")
	return len(p) == 3 && isHex(p[0]) && isHex(p[1]) && isHex(p[2]) && !outlookMsgID(v) && r != ""
}

func mailerOf(h *Header) string {
	if v := strings.TrimSpace(h.Get("X-Mailer")); v != "" {
		return v
	}
	return strings.TrimSpace(h.Get("User-Agent"))
}

func randomToken(s string) bool {
	if len(s) < 10 {
		return false
	}
	var up, low, digit bool
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'A' && c <= 'Z':
			up = true
		case c >= 'a' && c <= 'z':
			low = true
		case c >= '0' && c <= '9':
			digit = true
		default:
			return false
		}
	}
	return up && low && digit
}

// badHops counts Received fields that no server would write.
func badHops(hops []string) int {
	n := 0
	var newer time.Time // time of the hop added after this one
	for _, h := range hops {
		t, ok := receivedTime(h)
		bad := false // an unparsable time is common in real relays' fields (ctime, "-08:00")
		for rest := h; ; {
			i := strings.IndexByte(rest, '[')
			if i < 0 {
				break
			}
			j := strings.IndexByte(rest[i:], ']')
			if j < 0 {
				break
			}
			lit := strings.TrimPrefix(rest[i+1:i+j], "IPv6:")
			if looksNumeric(lit) {
				if _, err := netip.ParseAddr(lit); err != nil {
					bad = true
				}
			}
			rest = rest[i+j:]
		}
		// Hops are listed newest first: a hop that claims to be a day later
		// than the one that received from it was written by the sender.
		if ok && !newer.IsZero() && t.Sub(newer) > 24*time.Hour {
			bad = true
		}
		if ok {
			newer = t
		}
		if bad {
			n++
		}
	}
	return n
}

func looksNumeric(s string) bool {
	colon := strings.Contains(s, ":")
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && c != '.' && !(colon && (c == ':' || isHex(s[i:i+1]))) {
			return false
		}
	}
	return strings.ContainsAny(s, ".:")
}

// mixedScripts reports a word that mixes Latin, Cyrillic and Greek letters,
// the look-alikes used to spell a word past a filter.
func mixedScripts(s string) bool {
	var seen uint8
	flush := func() bool { r := seen&(seen-1) != 0; seen = 0; return r }
	for _, r := range s {
		switch {
		case !unicode.IsLetter(r):
			if flush() {
				return true
			}
		case unicode.Is(unicode.Latin, r):
			seen |= 1
		case unicode.Is(unicode.Cyrillic, r):
			seen |= 2
		case unicode.Is(unicode.Greek, r):
			seen |= 4
		}
	}
	return flush()
}

func punctuation(s string) int {
	n := 0
	run, prev := 0, rune(0)
	for _, r := range s {
		switch r {
		case '!', '$':
			n++
		}
		if r == prev {
			run++
		} else {
			run = 1
		}
		if run == 3 && (r == '?' || r == '*' || r == '%') {
			n++
		}
		prev = r
	}
	return n
}
