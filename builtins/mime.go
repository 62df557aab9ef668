package builtins

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/mail"
	"slices"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/charset"
	"github.com/emersion/go-message/textproto"
	"golang.org/x/text/encoding/charmap"
)

// Limits bound the work and memory spent on one message's body, whatever
// the sender put in it.
type Limits struct {
	MaxDepth int // multipart / message/rfc822 nesting
	MaxParts int // MIME parts walked in all
	MaxText  int // bytes of decoded text kept for the text fact
	MaxLinks int // distinct links kept
}

// DefaultLimits are generous for real mail and small enough that a hostile
// message costs little.
func DefaultLimits() Limits {
	return Limits{MaxDepth: 16, MaxParts: 500, MaxText: 1 << 20, MaxLinks: 1000}
}

func (l Limits) orDefault() Limits {
	d := DefaultLimits()
	if l.MaxDepth <= 0 {
		l.MaxDepth = d.MaxDepth
	}
	if l.MaxParts <= 0 {
		l.MaxParts = d.MaxParts
	}
	if l.MaxText <= 0 {
		l.MaxText = d.MaxText
	}
	if l.MaxLinks <= 0 {
		l.MaxLinks = d.MaxLinks
	}
	return l
}

// Header is a message's top-level header, read leniently: what can be
// understood is kept, what cannot is reported by ParseHeader's error.
type Header struct {
	fields []headerField
	off    int // where the body starts in the raw message
}

type headerField struct {
	key, value string // value unfolded, surrounding white space trimmed
}

// ErrMalformedHeader is wrapped by ParseHeader's error when a line of the
// header could not be read as a field.
var ErrMalformedHeader = errors.New("malformed header")

// ParseHeader reads the header of raw up to the first empty line. It never
// returns a nil Header. Like Postfix, it takes a line that is neither a
// field nor a continuation as the start of the body, and says so in the
// error; a leading mbox "From " line is skipped.
func ParseHeader(raw []byte) (*Header, error) {
	h := &Header{off: len(raw)}
	var err error
	cur := -1
	// A folded field grows in f.val and becomes a string once complete:
	// appending each continuation line to a string would copy the whole
	// value per line, quadratic in a field folded over 100,000s of lines.
	var f folding
	for off, n := 0, 0; off < len(raw); n++ {
		line, next := raw[off:], len(raw)
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			line, next = line[:i], off+i+1
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		switch {
		case len(line) == 0:
			h.off = next
			f.flush(h, cur)
			h.trim()
			return h, err
		case line[0] == ' ' || line[0] == '\t':
			if cur >= 0 {
				f.add(h, cur, line)
			} else if err == nil {
				err = fmt.Errorf("%w: line %d: continuation line before any field", ErrMalformedHeader, n+1)
			}
		default:
			colon := bytes.IndexByte(line, ':')
			if colon <= 0 || !validKey(line[:colon]) {
				if n == 0 && bytes.HasPrefix(line, []byte("From ")) {
					break // mbox separator
				}
				if err == nil {
					err = fmt.Errorf("%w: line %d is not a header field; the body is taken to start there", ErrMalformedHeader, n+1)
				}
				h.off = off
				f.flush(h, cur)
				h.trim()
				return h, err
			}
			f.flush(h, cur)
			h.fields = append(h.fields, headerField{
				key:   string(bytes.TrimRight(line[:colon], " \t")),
				value: string(line[colon+1:]),
			})
			cur = len(h.fields) - 1
		}
		off = next
	}
	f.flush(h, cur)
	h.trim()
	return h, err
}

// folding collects the continuation lines of the field being read.
type folding struct {
	val    []byte
	active bool // val holds the current field's value
}

func (f *folding) add(h *Header, cur int, line []byte) {
	if !f.active {
		f.val = append(f.val[:0], h.fields[cur].value...)
		f.active = true
	}
	f.val = append(f.val, line...)
}

func (f *folding) flush(h *Header, cur int) {
	if f.active {
		h.fields[cur].value = string(f.val)
		f.active = false
	}
}

func (h *Header) trim() {
	for i := range h.fields {
		h.fields[i].value = strings.TrimSpace(h.fields[i].value)
	}
}

func validKey(k []byte) bool {
	k = bytes.TrimRight(k, " \t") // "Subject : x" is seen in the wild
	if len(k) == 0 {
		return false
	}
	for _, c := range k {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// BodyOffset is where the body starts in the raw message.
func (h *Header) BodyOffset() int { return h.off }

// raw returns the first value of field name, undecoded.
func (h *Header) raw(name string) (string, bool) {
	for i := range h.fields {
		if strings.EqualFold(h.fields[i].key, name) {
			return h.fields[i].value, true
		}
	}
	return "", false
}

// Has reports whether the header holds field name (any case).
func (h *Header) Has(name string) bool {
	_, ok := h.raw(name)
	return ok
}

// Get returns the first value of field name with RFC 2047 encoded words
// decoded, "" if absent.
func (h *Header) Get(name string) string {
	v, _ := h.raw(name)
	return decodeWords(v)
}

// Values returns every value of field name, undecoded, in order.
func (h *Header) Values(name string) []string {
	var out []string
	for i := range h.fields {
		if strings.EqualFold(h.fields[i].key, name) {
			out = append(out, h.fields[i].value)
		}
	}
	return out
}

// Len is the number of fields.
func (h *Header) Len() int { return len(h.fields) }

// Subject is the decoded Subject.
func (h *Header) Subject() string { return h.Get("Subject") }

// From is the first address of the From field, "" if none can be found.
func (h *Header) From() string {
	if l := h.Addresses("From"); len(l) > 0 {
		return l[0]
	}
	return ""
}

var wordDecoder = &mime.WordDecoder{CharsetReader: charset.Reader}

var addrParser = &mail.AddressParser{WordDecoder: wordDecoder}

// Addresses returns the addresses of field name (From, To, Cc...). A list
// that does not parse is read leniently, token by token, so that a sloppy
// mailer's header still yields its addresses.
func (h *Header) Addresses(name string) []string {
	var out []string
	for _, v := range h.Values(name) {
		if v == "" {
			continue
		}
		if a, ok := simpleAddress(v); ok {
			out = append(out, a)
			continue
		}
		if l, err := addrParser.ParseList(v); err == nil {
			for _, a := range l {
				out = append(out, a.Address)
			}
			continue
		}
		out = append(out, lenientAddresses(v)...)
	}
	return out
}

// simpleAddress reads the forms nearly every header has, addr@example.com
// and Name <addr@example.com> or "Name" <addr@example.com>, without the
// full RFC 5322 parser; anything else (groups, comments, lists, encoded
// words, quoted local parts, non-ASCII) is left to net/mail. It returns what
// net/mail would.
func simpleAddress(v string) (string, bool) {
	v = strings.Trim(v, " \t") // white space, as net/mail skips it
	if !strings.HasSuffix(v, ">") {
		return v, isDotAtomAddr(v)
	}
	lt := strings.IndexByte(v, '<')
	if lt < 0 {
		return "", false
	}
	addr := v[lt+1 : len(v)-1]
	if !isDotAtomAddr(addr) {
		return "", false
	}
	name := strings.Trim(v[:lt], " \t")
	if len(name) >= 2 && name[0] == '"' && name[len(name)-1] == '"' {
		name = name[1 : len(name)-1]
		for i := 0; i < len(name); i++ {
			if c := name[i]; c == '"' || c == '\\' || c < 0x20 || c >= 0x7f {
				return "", false
			}
		}
		return addr, true
	}
	// An unquoted display name is a phrase of atoms and spaces.
	for i := 0; i < len(name); i++ {
		if c := name[i]; c != ' ' && !isAtext(c) {
			return "", false
		}
	}
	if strings.Contains(name, "=?") {
		return "", false
	}
	return addr, true
}

// isDotAtomAddr reports whether a is local@domain with both parts ASCII
// dot-atoms (RFC 5322 3.2.3).
func isDotAtomAddr(a string) bool {
	at := strings.IndexByte(a, '@')
	return at > 0 && isDotAtom(a[:at]) && isDotAtom(a[at+1:])
}

func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '.' {
			if s[i-1] == '.' {
				return false
			}
			continue
		}
		if !isAtext(c) {
			return false
		}
	}
	return true
}

func isAtext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// lenientAddresses picks what looks like an address out of each comma
// separated item: the part in angle brackets, or a word holding an @.
func lenientAddresses(v string) []string {
	var out []string
	for _, item := range strings.Split(v, ",") {
		if i := strings.LastIndexByte(item, '<'); i >= 0 {
			rest := item[i+1:]
			if j := strings.IndexByte(rest, '>'); j >= 0 {
				rest = rest[:j]
			}
			if a := strings.TrimSpace(rest); a != "" {
				out = append(out, a)
			}
			continue
		}
		for _, w := range strings.Fields(item) {
			if strings.Contains(w, "@") {
				out = append(out, strings.Trim(w, `"'()<>;`))
				break
			}
		}
	}
	return out
}

// decodeWords decodes RFC 2047 encoded words; raw 8-bit text that is not
// UTF-8 is read as Windows-1252, the usual culprit. A value that does not
// decode is returned as it came.
func decodeWords(v string) string {
	if strings.Contains(v, "=?") {
		if d, err := wordDecoder.DecodeHeader(v); err == nil {
			v = d
		}
	}
	return validUTF8(v)
}

func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	if d, err := charmap.Windows1252.NewDecoder().String(s); err == nil {
		return d
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// textproto builds go-message's header from ours, for the MIME walk.
func (h *Header) textproto() textproto.Header {
	var th textproto.Header
	// go-message's Get returns the last added value of a key: add in reverse
	// so that it, like ours, returns the first.
	for i := len(h.fields) - 1; i >= 0; i-- {
		f := h.fields[i]
		if validKey([]byte(f.key)) {
			th.Add(f.key, f.value)
		}
	}
	return th
}

// Body is what the body facts need from a message.
type Body struct {
	Text          string   // text parts, HTML rendered to text
	Links         []string // distinct URLs, in order of appearance
	PhishingLinks int      // anchors whose visible domain differs from the href's registered domain, the sender's own tracking links excepted
	Problems      []string // what was odd or cut short
	Structure     Structure
}

// ParseBody walks the MIME tree of raw (whose header h is), decoding
// transfer encodings and charsets, within lim. It never panics and never
// holds more than a bounded multiple of len(raw) plus lim.MaxText.
func ParseBody(raw []byte, h *Header, lim Limits) (b *Body) {
	if h == nil {
		h, _ = ParseHeader(raw)
	}
	w := &walker{lim: lim.orDefault(), seen: map[string]bool{}, hdr: h}
	defer func() {
		if r := recover(); r != nil { // a bug in a library must not take the relay down
			w.problem("MIME parser failed: %v", r)
		}
		b = w.body()
	}()
	off := min(h.BodyOffset(), len(raw))
	w.rawLen = len(raw) - off
	w.entity(h.textproto(), raw[off:], 0)
	return b
}

type walker struct {
	lim      Limits
	text     textAcc
	links    []string
	seen     map[string]bool
	phishing int
	parts    int
	problems []string
	cut      bool              // the text limit was reached
	linksCut bool              // the links limit was reached
	trunc    bool              // a multipart ended early
	reg      map[string]string // registered domain by host
	anchors  map[string]int    // phishing count by href and anchor text
	hdr      *Header           // the top-level header, for the sender's domain
	sender   string            // registered domain of the From address, once senderOK
	senderOK bool
	rawLen   int // the raw body's length
	st       Structure
}

func (w *walker) body() *Body {
	return &Body{Text: w.text.String(), Links: w.links, PhishingLinks: w.phishing, Problems: w.problems, Structure: w.st}
}

func (w *walker) problem(format string, args ...any) {
	if len(w.problems) < 20 {
		w.problems = append(w.problems, fmt.Sprintf(format, args...))
	}
}

// entity decodes one MIME entity whose header is th and raw body is body.
func (w *walker) entity(th textproto.Header, body []byte, depth int) {
	e, err := message.New(message.Header{Header: th}, bytes.NewReader(body))
	if err != nil {
		w.problem("%v", err) // unknown charset or encoding: the body is still read as it is
	}
	w.walk(e, depth, err == nil)
}

// walk reads entity e and returns its media type. converted says go-message
// knew the entity's charset and encoding; with a declared charset, its text
// is then UTF-8.
func (w *walker) walk(e *message.Entity, depth int, converted bool) string {
	if depth > w.lim.MaxDepth {
		w.problem("MIME nesting deeper than %d levels; the rest is not read", w.lim.MaxDepth)
		return ""
	}
	w.parts++
	if w.parts > w.lim.MaxParts {
		if w.parts == w.lim.MaxParts+1 {
			w.problem("more than %d MIME parts; the rest is not read", w.lim.MaxParts)
		}
		return ""
	}
	mt, params, err := e.Header.ContentType()
	if err != nil || mt == "" {
		mt = "text/plain" // RFC 2045 5.2
	}
	decoded := converted && params["charset"] != ""
	pi := readPartInfo(e, params)
	part := len(w.st.Parts)
	w.st.Parts = append(w.st.Parts, Part{Type: mt, Name: pi.name, Disposition: pi.disp, Charset: strings.ToLower(params["charset"]), Depth: depth})
	if pi.disp == "attachment" && !strings.HasPrefix(mt, "message/") && !strings.HasPrefix(mt, "multipart/") {
		w.st.Parts[part].Size = w.attachment(e, mt, pi)
		return mt
	}
	switch {
	case strings.HasPrefix(mt, "multipart/"):
		if params["boundary"] == "" {
			w.problem("%s part without a boundary", mt)
			return mt
		}
		w.multipart(e, mt, depth)
		n := 0
		for _, p := range w.st.Parts[part+1:] {
			if p.Depth == depth+1 {
				n += p.Size
			}
		}
		w.st.Parts[part].Size = n
	case mt == "message/rfc822" || mt == "message/global":
		// Decoding never makes a body bigger, so this is bounded by the raw message.
		inner, _ := w.read(e.Body, math.MaxInt32, mt, nil)
		w.st.Parts[part].Size = len(inner)
		if len(inner) == 0 {
			return mt
		}
		ih, herr := ParseHeader(inner)
		if herr != nil {
			w.problem("attached message: %v", herr)
		}
		w.entity(ih.textproto(), inner[min(ih.BodyOffset(), len(inner)):], depth+1)
	case mt == "text/plain" || mt == "text/html":
		budget := w.lim.MaxText - w.text.Len()
		if mt == "text/html" {
			budget = 4 * w.lim.MaxText // markup is bigger than its text
		}
		if budget <= 0 {
			n, _ := io.Copy(io.Discard, e.Body)
			w.st.Parts[part].Size = int(n)
			w.cutText()
			return mt
		}
		var buf []byte
		if depth == 0 {
			// The message is this one part: its raw size bounds the
			// decoded text (give or take a charset's conversion to
			// UTF-8), so one buffer holds it without regrowing.
			buf = make([]byte, 0, min(w.rawLen, budget)+1)
		}
		data, cut := w.read(e.Body, budget, mt, buf)
		// The part's bytes become the string the text fact keeps without
		// a copy: data is this part's own buffer and nothing writes to it
		// again.
		s := unsafe.String(unsafe.SliceData(data), len(data))
		w.st.Parts[part].Size = len(s)
		if cut {
			rest, _ := io.Copy(io.Discard, e.Body) // read also read the byte past the budget
			w.st.Parts[part].Size += 1 + int(rest)
			if mt == "text/plain" {
				w.cutText()
			} else {
				w.problem("HTML part longer than %d bytes; the rest is not read", budget)
			}
		}
		if !utf8.ValidString(s) {
			if decoded {
				s = strings.ToValidUTF8(s, "\uFFFD")
			} else {
				s = validUTF8(s) // undeclared 8-bit text
			}
		}
		if mt == "text/html" {
			w.st.HTMLParts++
			w.st.HTMLBytes += len(s)
			s = w.html(s)
		} else {
			if !w.st.PlainVisible {
				w.st.PlainVisible = hasVisible(s) // html_only asks no more
			}
			w.textLinks(s)
		}
		w.addText(s)
	default:
		w.st.Parts[part].Size = w.attachment(e, mt, pi)
	}
	return mt
}

// read reads at most max bytes of r into buf, noting a decoding error; cut
// says there was more.
func (w *walker) read(r io.Reader, max int, what string, buf []byte) (data []byte, cut bool) {
	if buf == nil {
		buf = make([]byte, 0, 4096)
	}
	lr := io.LimitedReader{R: r, N: int64(max) + 1}
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, len(buf)+4096) // at least double: append's 1.25x regrows a 10 KB part ten times
		}
		n, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			if isEOF(err) {
				w.truncated()
			} else {
				w.problem("%s part: %v", what, err)
			}
			break
		}
	}
	if len(buf) > max {
		return buf[:max], true
	}
	return buf, false
}

// textAcc gathers the text fact. One part's text, the common case, is
// kept as the string it was read into; a second part starts a builder.
type textAcc struct {
	one  string
	b    strings.Builder
	many bool
}

func (t *textAcc) Len() int {
	if t.many {
		return t.b.Len()
	}
	return len(t.one)
}

func (t *textAcc) String() string {
	if t.many {
		return t.b.String()
	}
	return t.one
}

func (t *textAcc) Reset() { *t = textAcc{} }

// add appends sep (if the text is not empty) and s.
func (t *textAcc) add(sep, s string) {
	if !t.many {
		if t.one == "" {
			t.one = s
			return
		}
		t.many = true
		t.b.Grow(len(t.one) + len(sep) + len(s))
		t.b.WriteString(t.one)
		t.one = ""
	}
	t.b.WriteString(sep)
	t.b.WriteString(s)
}

// isEOF tells a body that stops short; go-message formats these errors
// with %v, so errors.Is cannot see them.
func isEOF(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF) || strings.HasSuffix(err.Error(), "EOF")
}

func (w *walker) truncated() {
	if !w.trunc {
		w.trunc = true
		w.problem("the message is truncated: a multipart ends without its closing boundary")
	}
}

func (w *walker) multipart(e *message.Entity, mt string, depth int) {
	mr := e.MultipartReader()
	if mr == nil {
		return
	}
	alternative := mt == "multipart/alternative"
	var best string
	var bestRank int
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			if isEOF(err) {
				w.truncated()
				break
			}
			if !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
				w.problem("%s: %v", mt, err)
				break
			}
			w.problem("%v", err)
		}
		if p == nil {
			break
		}
		if !alternative {
			w.walk(p, depth+1, err == nil)
			continue
		}
		// Of the alternatives, keep the text of the plainest one that has
		// any; links and phishing are taken from all of them.
		saved := w.text.String()
		w.text.Reset()
		pt := w.walk(p, depth+1, err == nil)
		got := w.text.String()
		w.text.Reset()
		w.text.add("", saved)
		rank := 1
		if pt == "text/plain" || pt == "" {
			rank = 2
		}
		if strings.TrimSpace(got) != "" && rank > bestRank {
			best, bestRank = got, rank
		}
		if w.parts > w.lim.MaxParts {
			break
		}
	}
	if best != "" {
		w.addText(best)
	}
}

func (w *walker) addText(s string) {
	if s == "" {
		return
	}
	room := w.lim.MaxText - w.text.Len()
	if room <= 0 {
		w.cutText()
		return
	}
	sep := ""
	if w.text.Len() > 0 {
		sep = "\n"
		room--
	}
	if len(s) > room {
		s = s[:room]
		for len(s) > 0 && !utf8.ValidString(s[max(0, len(s)-utf8.UTFMax):]) {
			s = s[:len(s)-1] // do not split a character
		}
		w.cutText()
	}
	w.text.add(sep, s)
}

func (w *walker) cutText() {
	if !w.cut {
		w.cut = true
		w.problem("text longer than %d bytes; the text fact holds the first %d", w.lim.MaxText, w.lim.MaxText)
	}
}

func (w *walker) addLink(u string) {
	if u == "" || w.seen[u] {
		return
	}
	if len(w.links) >= w.lim.MaxLinks {
		if !w.linksCut {
			w.linksCut = true
			w.problem("more than %d links; the rest are not kept", w.lim.MaxLinks)
		}
		return
	}
	w.seen[u] = true
	w.links = append(w.links, u)
}
