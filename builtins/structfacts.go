package builtins

import (
	"fmt"
	"io"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-message"
	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// Attachment is one leaf part that is not read as body text: a part with
// Content-Disposition: attachment, or of a type that is not text. Rules
// read a list of them, the attachments fact, by the expr names of the
// fields: any(attachments, .size > 5e6 and .type == "application/zip").
type Attachment struct {
	Type string `expr:"type" json:"type" doc:"media type, lower case"`
	Name string `expr:"name" json:"name" doc:"file name (Content-Disposition filename, else Content-Type name), decoded; \"\" if none"`
	Size int    `expr:"size" json:"size" doc:"decoded size in bytes"`
	// DeclaredSize is the size the sender claims; with no claim it is
	// Size, so that the two differ only when a claim is false.
	DeclaredSize int    `expr:"declared_size" json:"declared_size" doc:"the Content-Disposition size= parameter (RFC 2183) when given as a number, else size: the two differ only when the sender's claim is false"`
	Disposition  string `expr:"disposition" json:"disposition" doc:"Content-Disposition type, lower case (attachment, inline), \"\" if none"`
	ExtMismatch  bool   `expr:"ext_mismatch" json:"ext_mismatch" doc:"the name's extension is one whose types are known and type (other than application/octet-stream) is not one of them"`
	Executable   bool   `expr:"executable" json:"executable" doc:"the name or type is of a program Windows runs on a click (.exe, .scr, .pif, .vbs, .js...)"`
	Archive      bool   `expr:"archive" json:"archive" doc:"the name or type is of an archive (.zip, .rar, .7z...)"`
}

// Part is one MIME entity of the message, containers included, in the
// order the walk meets them: the parts fact.
type Part struct {
	Type        string `expr:"type" json:"type" doc:"media type, lower case (text/plain when none is declared, RFC 2045 5.2)"`
	Name        string `expr:"name" json:"name" doc:"file name (Content-Disposition filename, else Content-Type name), decoded; \"\" if none"`
	Size        int    `expr:"size" json:"size" doc:"decoded size in bytes of a leaf (after the transfer encoding and, for text, the charset); of a multipart, the sum of its parts; of an attached message, its bytes"`
	Disposition string `expr:"disposition" json:"disposition" doc:"Content-Disposition type, lower case, \"\" if none"`
	Charset     string `expr:"charset" json:"charset" doc:"the charset parameter, lower case, \"\" if none"`
	Depth       int    `expr:"depth" json:"depth" doc:"nesting: 0 for the message itself, 1 for its parts, and so on"`
}

// String shows the record as evidence: its fields in the terms rules use,
// the false ones and a declared size equal to size left out.
func (a Attachment) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "{type: %s, name: %q, size: %d", a.Type, a.Name, a.Size)
	if a.DeclaredSize != a.Size {
		fmt.Fprintf(&b, ", declared_size: %d", a.DeclaredSize)
	}
	if a.Disposition != "" {
		fmt.Fprintf(&b, ", disposition: %s", a.Disposition)
	}
	for _, f := range []struct {
		on   bool
		name string
	}{{a.ExtMismatch, "ext_mismatch"}, {a.Executable, "executable"}, {a.Archive, "archive"}} {
		if f.on {
			b.WriteString(", " + f.name)
		}
	}
	b.WriteString("}")
	return b.String()
}

// String shows the record as evidence, empty fields left out.
func (p Part) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "{type: %s", p.Type)
	if p.Name != "" {
		fmt.Fprintf(&b, ", name: %q", p.Name)
	}
	fmt.Fprintf(&b, ", size: %d", p.Size)
	if p.Disposition != "" {
		fmt.Fprintf(&b, ", disposition: %s", p.Disposition)
	}
	if p.Charset != "" {
		fmt.Fprintf(&b, ", charset: %s", p.Charset)
	}
	fmt.Fprintf(&b, ", depth: %d}", p.Depth)
	return b.String()
}

// Structure is how the body is built, recorded by the same MIME walk that
// renders its text, so that structure facts cost no second pass.
type Structure struct {
	Attachments  []Attachment
	Parts        []Part // every entity the walk read, at most Limits.MaxParts
	PlainVisible bool   // a text/plain part read as text has a visible character
	HTMLParts    int    // text/html parts read as text
	HTMLBytes    int    // their size as written
	HTMLChars    int    // their visible characters (not white space, not hidden)
	Images       int    // <img> tags
	Forms        int    // <form> tags
	Scripts      int    // <script> tags and on* event handler attributes
	// InvisibleChars are characters a reader cannot see: in an element
	// styled display:none, visibility:hidden or a font under 3px, or
	// coloured as the background it sits on.
	InvisibleChars int
	// CommentSplits counts words split by an HTML comment (V<!-- -->iagra),
	// which a reader sees whole and a word filter does not.
	CommentSplits int
}

// htmlScan is the HTML renderer's record of one part's structure.
type htmlScan struct {
	st         *Structure
	bg         string    // the latest background colour declared, "" for the page default (white)
	hidTag     atom.Atom // the element whose content is hidden, 0 if none
	hidName    string    // its name when it is not a known atom
	hidDepth   int
	lastLetter bool // the last text token ended with a letter, with no tag since
	afterCmt   bool // a comment came right after that letter
}

// tag records a start or end tag other than an anchor; it reads the tag's
// attributes, which the renderer does not need for these tags.
func (s *htmlScan) tag(z *html.Tokenizer, name []byte, a atom.Atom, tt html.TokenType, hasAttr bool) {
	s.lastLetter, s.afterCmt = false, false
	if s.hidDepth > 0 && s.sameTag(name, a) {
		if tt == html.StartTagToken {
			s.hidDepth++
		} else if tt == html.EndTagToken {
			s.hidDepth--
		}
	}
	if tt == html.EndTagToken {
		return
	}
	switch a {
	case atom.Img:
		s.st.Images++
	case atom.Form:
		s.st.Forms++
	case atom.Script:
		s.st.Scripts++
	}
	hidden := false
	color, bg := "", ""
	for hasAttr {
		var k, v []byte
		k, v, hasAttr = z.TagAttr()
		switch string(k) {
		case "style":
			st := strings.ToLower(string(v))
			if hiddenStyle(st) {
				hidden = true
			}
			if c := styleValue(st, "color"); c != "" {
				color = c
			}
			if c := styleValue(st, "background-color"); c != "" {
				bg = c
			} else if c := styleValue(st, "background"); c != "" {
				bg = c
			}
		case "color":
			color = strings.ToLower(strings.TrimSpace(string(v)))
		case "bgcolor":
			bg = strings.ToLower(strings.TrimSpace(string(v)))
		default:
			if len(k) > 2 && k[0] == 'o' && k[1] == 'n' {
				s.st.Scripts++ // onload=, onclick=...
			}
		}
	}
	if bg != "" {
		s.bg = normColor(bg)
	}
	if color != "" {
		page := s.bg
		if page == "" {
			page = "#ffffff"
		}
		if c := normColor(color); c != "" && c == page {
			hidden = true
		}
	}
	if hidden && s.hidDepth == 0 && tt == html.StartTagToken && !voidElement(a) {
		s.hidTag, s.hidDepth = a, 1
		if a == 0 {
			s.hidName = string(name)
		}
	}
}

func (s *htmlScan) sameTag(name []byte, a atom.Atom) bool {
	if s.hidTag != 0 {
		return a == s.hidTag
	}
	return string(name) == s.hidName
}

// text records a visible text token (outside script, style and head).
func (s *htmlScan) text(t []byte) {
	n := 0
	for _, c := range t {
		if c > ' ' && (c < 0x80 || c >= 0xc0) { // one per character, not per byte
			n++
		}
	}
	if n == 0 {
		return
	}
	if s.hidDepth > 0 {
		s.st.InvisibleChars += n
	} else {
		s.st.HTMLChars += n
	}
	first, _ := utf8.DecodeRune(t)
	if s.afterCmt && unicode.IsLetter(first) {
		s.st.CommentSplits++
	}
	last, _ := utf8.DecodeLastRune(t)
	s.lastLetter, s.afterCmt = unicode.IsLetter(last), false
}

func (s *htmlScan) comment() { s.afterCmt = s.lastLetter }

func voidElement(a atom.Atom) bool {
	switch a {
	case atom.Img, atom.Br, atom.Hr, atom.Input, atom.Meta, atom.Link, atom.Area, atom.Base, atom.Col, atom.Embed, atom.Param, atom.Source, atom.Wbr:
		return true
	}
	return false
}

// hiddenStyle reports a CSS declaration list (lower case) that hides its
// element's text: display:none, visibility:hidden, a font under 3px.
func hiddenStyle(st string) bool {
	if !strings.Contains(st, "none") && !strings.Contains(st, "hidden") && !strings.Contains(st, "font-size") {
		return false
	}
	if v := styleValue(st, "display"); v == "none" {
		return true
	}
	if v := styleValue(st, "visibility"); v == "hidden" {
		return true
	}
	return tinyFont(styleValue(st, "font-size"))
}

// tinyFont reports a CSS font size no one can read.
func tinyFont(v string) bool {
	if v == "" {
		return false
	}
	i := 0
	for i < len(v) && (v[i] >= '0' && v[i] <= '9' || v[i] == '.') {
		i++
	}
	n, err := strconv.ParseFloat(v[:i], 64)
	if err != nil {
		return false
	}
	switch strings.TrimSpace(v[i:]) {
	case "", "px", "pt":
		return n < 3
	case "em", "rem":
		return n < 0.2
	case "%":
		return n < 20
	}
	return false
}

// styleValue is the value of CSS property prop in a declaration list.
func styleValue(st, prop string) string {
	for _, d := range strings.Split(st, ";") {
		k, v, ok := strings.Cut(d, ":")
		if ok && strings.TrimSpace(k) == prop {
			v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "!important"))
			return v
		}
	}
	return ""
}

// normColor reads the colours mailers write (#rgb, #rrggbb, rrggbb, a few
// names) as #rrggbb; "" for anything else.
func normColor(c string) string {
	c = strings.ToLower(strings.Trim(strings.TrimSpace(c), `"'`))
	if f := strings.Fields(c); len(f) > 0 {
		c = f[0] // "background: #fff url(...)"
	}
	switch c {
	case "white":
		return "#ffffff"
	case "black":
		return "#000000"
	}
	h := strings.TrimPrefix(c, "#")
	for i := 0; i < len(h); i++ {
		if !(h[i] >= '0' && h[i] <= '9' || h[i] >= 'a' && h[i] <= 'f') {
			return ""
		}
	}
	switch len(h) {
	case 3:
		return "#" + string([]byte{h[0], h[0], h[1], h[1], h[2], h[2]})
	case 6:
		return "#" + h
	}
	return ""
}

// attachment records leaf part e of media type mt, reading it to its end
// for its decoded size, which it returns.
func (w *walker) attachment(e *message.Entity, mt string, pi partInfo) int {
	n, _ := io.Copy(io.Discard, e.Body)
	if len(w.st.Attachments) >= 100 {
		return int(n)
	}
	ext := strings.ToLower(strings.TrimPrefix(path.Ext(pi.name), "."))
	a := Attachment{Type: mt, Name: pi.name, Size: int(n), DeclaredSize: int(n), Disposition: pi.disp}
	if d, err := strconv.Atoi(pi.size); err == nil && d >= 0 {
		a.DeclaredSize = d
	}
	a.Executable = executableExt[ext] || executableType[mt]
	a.Archive = archiveExt[ext] || archiveType[mt]
	if want, ok := extTypes[ext]; ok && mt != "application/octet-stream" && !strings.Contains(want, " "+mt+" ") {
		a.ExtMismatch = true
	}
	w.st.Attachments = append(w.st.Attachments, a)
	return int(n)
}

// partInfo is what the walk reads of a part's header for its records.
type partInfo struct {
	disp string // Content-Disposition type, lower case
	name string // file name, decoded
	size string // Content-Disposition size=, as written
}

// readPartInfo reads the disposition and file name of e, whose Content-Type
// parameters are params.
func readPartInfo(e *message.Entity, params map[string]string) partInfo {
	var pi partInfo
	name := params["name"]
	if disp, dp, err := e.Header.ContentDisposition(); disp != "" {
		pi.disp = disp
		if err == nil {
			if dp["filename"] != "" {
				name = dp["filename"]
			}
			pi.size = dp["size"]
		}
	}
	if name != "" {
		pi.name = strings.TrimSpace(decodeWords(name))
	}
	return pi
}

func set(words string) map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(words) {
		m[w] = true
	}
	return m
}

var (
	executableExt  = set("exe scr pif com bat cmd vbs vbe js jse wsf wsh hta cpl msi lnk jar ps1 reg")
	executableType = set("application/x-msdownload application/x-msdos-program application/x-ms-dos-executable application/x-dosexec application/x-executable application/hta")
	archiveExt     = set("zip rar 7z gz tgz tar bz2 cab ace arj lzh iso")
	archiveType    = set("application/zip application/x-zip-compressed application/x-rar-compressed application/vnd.rar application/x-7z-compressed application/gzip application/x-gzip application/x-tar application/x-bzip2")
	// extTypes are the media types an extension may come with, space
	// padded; an extension not listed cannot disagree with any type.
	extTypes = map[string]string{
		"pdf":  " application/pdf application/x-pdf ",
		"jpg":  " image/jpeg image/jpg image/pjpeg ",
		"jpeg": " image/jpeg image/jpg image/pjpeg ",
		"gif":  " image/gif ",
		"png":  " image/png image/x-png ",
		"txt":  " text/plain ",
		"htm":  " text/html ",
		"html": " text/html ",
		"doc":  " application/msword application/vnd.ms-word ",
		"xls":  " application/vnd.ms-excel application/excel application/msexcel application/x-msexcel ",
		"zip":  " application/zip application/x-zip-compressed application/x-zip ",
		"exe":  " application/x-msdownload application/x-msdos-program application/x-ms-dos-executable application/x-dosexec application/x-executable ",
		"scr":  " application/x-msdownload application/x-msdos-program ",
		"pif":  " application/x-msdownload application/x-msdos-program ",
	}
)

func (m *Message) structure() *Structure { return &m.Body().Structure }

func structFacts() []Fact {
	st := func(get func(s *Structure) any) func(*Message) (any, error) {
		return func(m *Message) (any, error) { return get(m.structure()), nil }
	}
	// The flat attachment facts are read off the attachments fact, so
	// that a fixture that gives the records gives them too.
	atts := func(get func(l []Attachment) any) func(*Message) (any, error) {
		return func(m *Message) (any, error) {
			v, err := m.ValueOf("attachments")
			l, _ := v.([]Attachment)
			return get(l), err
		}
	}
	anyAtt := func(pred func(a *Attachment) bool) func(*Message) (any, error) {
		return atts(func(l []Attachment) any {
			for i := range l {
				if pred(&l[i]) {
					return true
				}
			}
			return false
		})
	}
	attList := func(get func(a *Attachment) string) func(*Message) (any, error) {
		return atts(func(l []Attachment) any {
			out := make([]string, len(l))
			for i := range l {
				out[i] = get(&l[i])
			}
			return out
		})
	}
	return []Fact{
		{Name: "attachments", Type: AttachmentList, Phase: Data, Doc: "the attachments as records (leaf parts with Content-Disposition attachment or of a type that is not text, at most 100), in order; filter them as in any(attachments, .size > 5e6 and .type == \"application/zip\"): fields in the RECORD table below",
			Compute: st(func(s *Structure) any { return s.Attachments })},
		{Name: "parts", Type: PartList, Phase: Data, Doc: "every MIME entity read, the message itself first (depth 0), multiparts and attached messages included, in order: fields in the RECORD table below",
			Compute: st(func(s *Structure) any { return s.Parts })},
		{Name: "attachment_count", Type: Int, Phase: Data, Doc: "len(attachments)",
			Compute: atts(func(l []Attachment) any { return len(l) })},
		{Name: "attachment_types", Type: StringList, Phase: Data, Doc: "media type of each attachment, lower case, in order",
			Compute: attList(func(a *Attachment) string { return a.Type })},
		{Name: "attachment_names", Type: StringList, Phase: Data, Doc: "file name of each attachment (\"\" if none), in order",
			Compute: attList(func(a *Attachment) string { return a.Name })},
		{Name: "attachment_max_size", Type: Int, Phase: Data, Doc: "decoded size in bytes of the largest attachment, 0 if none",
			Compute: atts(func(l []Attachment) any {
				n := 0
				for _, a := range l {
					n = max(n, a.Size)
				}
				return n
			})},
		{Name: "executable_attachment", Type: Bool, Phase: Data, Doc: "an attachment is a Windows program or script by name (.exe, .scr, .pif, .vbs, .js...) or type: any(attachments, .executable)",
			Compute: anyAtt(func(a *Attachment) bool { return a.Executable })},
		{Name: "archive_attachment", Type: Bool, Phase: Data, Doc: "an attachment is an archive by name (.zip, .rar, .7z...) or type: any(attachments, .archive)",
			Compute: anyAtt(func(a *Attachment) bool { return a.Archive })},
		{Name: "attachment_type_mismatch", Type: Bool, Phase: Data, Doc: "an attachment's extension is one whose types are known and its declared type (other than application/octet-stream) is not one of them: any(attachments, .ext_mismatch)",
			Compute: anyAtt(func(a *Attachment) bool { return a.ExtMismatch })},
		{Name: "html_only", Type: Bool, Phase: Data, Doc: "the body has HTML and no text/plain part with any visible text",
			Compute: st(func(s *Structure) any { return s.HTMLParts > 0 && !s.PlainVisible })},
		{Name: "text_html_ratio", Type: Float, Phase: Data, Doc: "visible text characters of the HTML parts per byte of their markup, 0 to 1; 1 with no HTML",
			Compute: st(func(s *Structure) any {
				if s.HTMLBytes == 0 {
					return 1.0
				}
				return min(1, float64(s.HTMLChars)/float64(s.HTMLBytes))
			})},
		{Name: "html_images", Type: Int, Phase: Data, Doc: "<img> tags in the HTML parts",
			Compute: st(func(s *Structure) any { return s.Images })},
		{Name: "html_text_chars", Type: Int, Phase: Data, Doc: "visible characters (not white space, not hidden) of the HTML parts",
			Compute: st(func(s *Structure) any { return s.HTMLChars })},
		{Name: "html_invisible_chars", Type: Int, Phase: Data, Doc: "characters of the HTML parts a reader cannot see: display:none, visibility:hidden, a font under 3px, or text coloured as its background",
			Compute: st(func(s *Structure) any { return s.InvisibleChars })},
		{Name: "html_invisible_text", Type: Bool, Phase: Data, Doc: "html_invisible_chars >= 10: a word or more of hidden text, the filler that feeds word filters",
			Compute: st(func(s *Structure) any { return s.InvisibleChars >= 10 })},
		{Name: "html_comment_split_words", Type: Bool, Phase: Data, Doc: "an HTML comment splits a word (V<!-- x -->iagra): seen whole by the reader, in pieces by word filters",
			Compute: st(func(s *Structure) any { return s.CommentSplits > 0 })},
		{Name: "html_forms", Type: Int, Phase: Data, Doc: "<form> tags in the HTML parts",
			Compute: st(func(s *Structure) any { return s.Forms })},
		{Name: "html_scripts", Type: Int, Phase: Data, Doc: "<script> tags and on* event handler attributes in the HTML parts",
			Compute: st(func(s *Structure) any { return s.Scripts })},
		{Name: "text_lower", Type: String, Phase: Data, Doc: "text in lower case: phrase rules written as `text_lower contains \"...\"` share one pass over the text, where each case-insensitive regular expression would make its own",
			Compute: func(m *Message) (any, error) { return strings.ToLower(m.Body().Text), nil }},
		{Name: "link_count", Type: Int, Phase: Data, Doc: "len(links): distinct URLs in the body",
			Compute: func(m *Message) (any, error) { return len(m.Body().Links), nil }},
		{Name: "link_hosts_count", Type: Int, Phase: Data, Doc: "len(link_hosts): distinct hosts the links point to",
			Compute: func(m *Message) (any, error) {
				h, err := m.ValueOf("link_hosts")
				l, _ := h.([]string)
				return len(l), err
			}},
		{Name: "link_ip_hosts", Type: Int, Phase: Data, Doc: "distinct link hosts written as an IP address instead of a name",
			Compute: func(m *Message) (any, error) {
				h, err := m.ValueOf("link_hosts")
				l, _ := h.([]string)
				n := 0
				for _, x := range l {
					if _, perr := netip.ParseAddr(strings.Trim(x, "[]")); perr == nil {
						n++
					}
				}
				return n, err
			}},
		{Name: "link_unregistrable_hosts", Type: Int, Phase: Data, Doc: "distinct link hosts that are names but not registrable domains: one label (http://login/), a public suffix itself (http://co.uk/), or under a top-level domain no registry runs (.local, .corp, .lan); IP hosts are link_ip_hosts",
			Compute: func(m *Message) (any, error) {
				h, err := m.ValueOf("link_hosts")
				l, _ := h.([]string)
				n := 0
				for _, x := range l {
					if unregistrable(x) {
						n++
					}
				}
				return n, err
			}},
		{Name: "link_redirects", Type: Int, Phase: Data, Doc: "links that carry another web address in their path or query (an open redirector or a tracker)",
			Compute: func(m *Message) (any, error) {
				n := 0
				for _, l := range m.Body().Links {
					if isRedirect(l) {
						n++
					}
				}
				return n, nil
			}},
	}
}

// isRedirect reports a link whose path or query holds another http(s) URL,
// written out or percent-encoded.
func isRedirect(l string) bool {
	_, _, end := rawHost(l)
	if end >= len(l) {
		return false
	}
	rest := strings.ToLower(l[end:])
	return strings.Contains(rest, "http://") || strings.Contains(rest, "https://") ||
		strings.Contains(rest, "http%3a") || strings.Contains(rest, "https%3a") ||
		strings.Contains(rest, "=www.")
}

// hasVisible reports whether s has a character that is not white space:
// a byte above ' ' that is not a UTF-8 continuation byte.
func hasVisible(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c > ' ' && (c < 0x80 || c >= 0xc0) {
			return true
		}
	}
	return false
}
