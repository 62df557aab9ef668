package classify

import (
	"mime"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/sluicemail/sluice/builtins"
)

// Token sources are told apart by a prefix, so that "free" in the subject
// and "free" in the text weigh apart, as SpamAssassin's Bayes does.
const (
	maxWordLen = 20 // longer words become a "skip:" token of their shape
)

// tokenConfig is how a message is cut into tokens.
type tokenConfig struct {
	max         int    // distinct tokens per message
	buckets     uint32 // hash buckets
	minLen      int    // shorter words are dropped
	bodyBigrams bool   // pairs of neighbouring words of the text
	subjBigrams bool   // pairs of neighbouring words of the subject
}

// tokenizer collects one message's tokens, each once, up to max.
type tokenizer struct {
	tokenConfig
	seen    map[uint32]int32 // bucket: index in out
	out     []token
	prev    string // the previous word, for bigrams
	prevIdx int32  // its token
}

// token is one distinct token of a message. A bigram knows the tokens of
// its two words, so that combining never counts one word's evidence twice
// (see combine).
type token struct {
	prefix string // where it comes from ("" for the text's words)
	word   string
	bucket uint32
	a, b   int32 // a bigram's words (indexes in the message's tokens), else -1
}

func newTokenizer(cfg tokenConfig) *tokenizer {
	return &tokenizer{tokenConfig: cfg, seen: make(map[uint32]int32, cfg.max)}
}

// fnv1a64 hashes s without allocating; the model stores only the hash, so
// it must never change.
func fnv1a64(prefix, s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(prefix); i++ {
		h ^= uint64(prefix[i])
		h *= 1099511628211
	}
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

func (t *tokenizer) full() bool { return len(t.out) >= t.max }

func (t *tokenizer) add(prefix, s string) int32 { return t.addPair(prefix, s, -1, -1) }

// addPair adds a token (a bigram of the tokens a and b when a >= 0) and
// returns its index, -1 when the message has too many.
func (t *tokenizer) addPair(prefix, s string, a, b int32) int32 {
	bk := uint32(fnv1a64(prefix, s) % uint64(t.buckets))
	if i, ok := t.seen[bk]; ok {
		return i
	}
	if t.full() {
		return -1
	}
	i := int32(len(t.out))
	t.seen[bk] = i
	t.out = append(t.out, token{prefix, s, bk, a, b})
	return i
}

// words splits text into lower-case words and adds them with the prefix,
// and, when bigrams, each pair of neighbouring words.
func (t *tokenizer) words(prefix, text string, bigrams bool) {
	t.prev = ""
	for len(text) > 0 && !t.full() {
		// skip separators
		i := 0
		for i < len(text) {
			r, n := utf8.DecodeRuneInString(text[i:])
			if isWordRune(r) {
				break
			}
			i += n
		}
		text = text[i:]
		j := 0
		for j < len(text) {
			r, n := utf8.DecodeRuneInString(text[j:])
			if !isWordRune(r) && !(isInnerRune(r) && j+n < len(text) && nextIsWord(text[j+n:])) {
				break
			}
			j += n
		}
		if j == 0 {
			break
		}
		w := text[:j]
		text = text[j:]
		t.word(prefix, w, bigrams)
	}
}

func nextIsWord(s string) bool {
	r, _ := utf8.DecodeRuneInString(s)
	return isWordRune(r)
}

func isWordRune(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) || r == '$' }

// isInnerRune: characters that belong to a word between word characters
// (don't, e-mail, 19.99, www.example.com, 100%).
func isInnerRune(r rune) bool {
	return r == '\'' || r == '-' || r == '.' || r == '_' || r == '@' || r == '%'
}

func (t *tokenizer) word(prefix, w string, bigrams bool) {
	n := utf8.RuneCountInString(w)
	if n < t.minLen {
		t.prev = ""
		return
	}
	lw := strings.ToLower(w)
	if n > maxWordLen {
		// long words are mostly encodings and hashes: their shape is the
		// evidence, not their text
		r, _ := utf8.DecodeRuneInString(lw)
		t.add(prefix+"skip:", string(r)+strconv.Itoa(n/10*10))
		t.prev = ""
		return
	}
	if digits(lw) >= 5 {
		// phone numbers, order numbers, dates: their shape recurs, their
		// digits rarely do
		lw = shape(lw, maxWordLen)
	}
	i := t.add(prefix, lw)
	if n >= 4 && w != lw && strings.ToUpper(w) == w && hasLetter(w) {
		t.add("caps:", prefix)
	}
	if bigrams && t.prev != "" && t.prevIdx >= 0 && i >= 0 {
		t.addPair(prefix, t.prev+" "+lw, t.prevIdx, i)
	}
	t.prev, t.prevIdx = lw, i
}

func hasLetter(s string) bool {
	for _, r := range s {
		if unicode.IsLetter(r) {
			return true
		}
	}
	return false
}

// domainOf is the domain of an address, lower case.
func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return strings.ToLower(strings.Trim(addr[i+1:], "<> "))
	}
	return ""
}

// lastLabels keeps the last n labels of a domain name.
func lastLabels(d string, n int) string {
	i := len(d)
	for ; n > 0 && i > 0; n-- {
		i = strings.LastIndexByte(d[:i], '.')
		if i < 0 {
			return d
		}
	}
	return d[i+1:]
}

// shape replaces digits by D and letters by a, for values whose form is
// the evidence (MIME boundaries, Message-IDs).
func shape(s string, max int) string {
	var sb strings.Builder
	for i, r := range s {
		if i >= max {
			break
		}
		switch {
		case r >= '0' && r <= '9':
			sb.WriteByte('D')
		case unicode.IsUpper(r):
			sb.WriteByte('A')
		case unicode.IsLower(r):
			sb.WriteByte('a')
		default:
			sb.WriteRune(r)
		}
	}
	return sb.String()
}

// presence headers: whether a message has them is evidence (mailing list
// software, mailers, priorities that bulk senders set).
var presence = []string{
	"X-Mailer", "User-Agent", "X-MSMail-Priority", "X-Priority", "X-MimeOLE", "MIME-Version",
	"List-Id", "List-Unsubscribe", "List-Post", "Precedence", "X-Mailing-List", "Organization",
	"In-Reply-To", "References", "X-Originating-IP", "Message-ID", "Date", "To", "Cc", "Reply-To",
	"Sender", "Errors-To", "X-Accept-Language", "Content-Type", "Mail-Followup-To", "X-Beenthere",
}

// tokens returns the tokens of a parsed message, at most max, each once.
func tokens(p *builtins.Parsed, cfg tokenConfig) []token {
	t := newTokenizer(cfg)
	if h := p.Header; h != nil {
		t.headers(h)
	}
	if b := p.Body; b != nil {
		t.body(b)
	}
	return t.out
}

func (t *tokenizer) headers(h *builtins.Header) {
	t.words("subj:", h.Subject(), t.subjBigrams)
	from := domainOf(h.From())
	if from != "" {
		t.add("from:", from)
		t.add("from:", lastLabels(from, 2))
		t.add("fromtld:", lastLabels(from, 1))
	} else {
		t.add("from:", "none")
	}
	if rt := h.Addresses("Reply-To"); len(rt) > 0 {
		d := domainOf(rt[0])
		t.add("replyto:", d)
		if d != from {
			t.add("replyto:", "other-domain")
		}
	}
	for _, name := range presence {
		if h.Has(name) {
			t.add("has:", name)
		} else {
			t.add("lacks:", name)
		}
	}
	for _, name := range []string{"X-Mailer", "User-Agent"} {
		if v := h.Get(name); v != "" {
			t.add("mailer:", strings.ToLower(trimVersion(v)))
		}
	}
	t.add("prio:", h.Get("X-Priority"))
	if v := h.Get("List-Id"); v != "" {
		t.add("listid:", strings.ToLower(v))
	}
	if v := h.Get("Content-Type"); v != "" {
		mt, params, err := mime.ParseMediaType(v)
		if err != nil {
			t.add("ct:", "bad")
		} else {
			t.add("ct:", mt)
			t.add("charset:", strings.ToLower(params["charset"]))
			if b := params["boundary"]; b != "" {
				t.add("boundary:", shape(b, 24))
			}
		}
	}
	if v := h.Get("Message-ID"); v != "" {
		if i := strings.LastIndexByte(v, '@'); i >= 0 {
			t.add("msgid:", shape(strings.Trim(v[:i], "<"), 24))
			t.add("msgid-dom:", lastLabels(strings.ToLower(strings.Trim(v[i+1:], "> ")), 2))
		}
	}
	rcvd := h.Values("Received")
	t.add("received:", strconv.Itoa(min(len(rcvd), 8)))
	for _, r := range rcvd {
		t.received(r)
	}
}

// trimVersion drops what follows the first digit: a mailer's name without
// its exact build.
func trimVersion(v string) string {
	if i := strings.IndexAny(v, "0123456789"); i > 0 {
		v = v[:i]
	}
	return strings.TrimSpace(v)
}

// received adds the hints of a Received field: the host names after from
// and by (their last two labels), the protocol after with.
func (t *tokenizer) received(v string) {
	f := strings.Fields(v)
	for i := 0; i+1 < len(f); i++ {
		switch strings.ToLower(f[i]) {
		case "from", "by":
			host := strings.ToLower(strings.Trim(f[i+1], "()[];"))
			if strings.Contains(host, ".") {
				t.add("rcvd:", lastLabels(host, 2))
			} else {
				t.add("rcvd-helo:", shape(host, 16))
			}
		case "with":
			t.add("rcvd-with:", strings.ToLower(strings.Trim(f[i+1], ";")))
		}
	}
}

func (t *tokenizer) body(b *builtins.Body) {
	for _, l := range b.Links {
		if h := linkHost(l); h != "" {
			t.add("url:", h)
			t.add("url:", lastLabels(h, 2))
		}
		// the words of the path: remove.cgi, unsubscribe, r.asp
		if i := strings.Index(l, "://"); i >= 0 {
			l = l[i+3:]
		}
		if i := strings.IndexAny(l, "/?"); i >= 0 {
			t.words("urlpath:", l[i:], false)
		}
	}
	for _, a := range b.Structure.Attachments {
		t.add("att:", a.Type)
		if i := strings.LastIndexByte(a.Name, '.'); i >= 0 {
			t.add("att-ext:", strings.ToLower(a.Name[i+1:]))
		}
	}
	st := &b.Structure
	switch {
	case st.HTMLParts > 0 && !st.PlainVisible:
		t.add("body:", "html-only")
	case st.HTMLParts > 0:
		t.add("body:", "html-and-text")
	default:
		t.add("body:", "text-only")
	}
	t.add("images:", strconv.Itoa(min(st.Images, 5)))
	t.add("links:", strconv.Itoa(min(len(b.Links), 10)))
	if st.InvisibleChars > 0 {
		t.add("body:", "invisible-text")
	}
	if st.Forms > 0 {
		t.add("body:", "form")
	}
	if st.Scripts > 0 {
		t.add("body:", "script")
	}
	if b.PhishingLinks > 0 {
		t.add("body:", "disguised-link")
	}
	t.words("", b.Text, t.bodyBigrams)
}

// linkHost is the host of a URL (scheme://host/... or www.host/...), lower
// case, without user or port.
func linkHost(l string) string {
	if i := strings.Index(l, "://"); i >= 0 {
		l = l[i+3:]
	}
	if i := strings.IndexAny(l, "/?#\\"); i >= 0 {
		l = l[:i]
	}
	if i := strings.LastIndexByte(l, '@'); i >= 0 {
		l = l[i+1:]
	}
	if i := strings.LastIndexByte(l, ':'); i >= 0 && !strings.Contains(l, "]") {
		l = l[:i]
	}
	return strings.ToLower(strings.TrimSuffix(l, "."))
}

func digits(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			n++
		}
	}
	return n
}

// String is the token as evidence shows it.
func (t token) String() string { return t.prefix + t.word }
