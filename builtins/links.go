package builtins

import (
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"
)

// textLinks adds the URLs written out in plain text: http://, https://,
// ftp:// and www. words, without the punctuation that ends a sentence.
func (w *walker) textLinks(s string) {
	for i := 0; i < len(s); {
		j := indexLinkStart(s[i:])
		if j < 0 {
			return
		}
		start := i + j
		end := start
		for end < len(s) && !linkStop(s[end]) {
			end++
		}
		u := strings.TrimRight(s[start:end], ".,;:!?)]}'\"")
		if !w.seen[u] && hostOf(u) != "" {
			w.addLink(webLink(u))
		}
		i = max(end, start+1)
	}
}

// indexLinkStart finds the next http://, https://, ftp:// or www. that
// starts a word.
func indexLinkStart(s string) int {
	for i := 0; i < len(s); i++ {
		c := s[i] | 0x20
		if c != 'h' && c != 'f' && c != 'w' {
			continue
		}
		if i > 0 && !linkStop(s[i-1]) && s[i-1] != '(' && s[i-1] != '[' {
			continue
		}
		r := s[i:]
		if hasPrefixFold(r, "http://") || hasPrefixFold(r, "https://") || hasPrefixFold(r, "ftp://") || hasPrefixFold(r, "www.") {
			return i
		}
	}
	return -1
}

func hasPrefixFold(s, p string) bool {
	return len(s) >= len(p) && strings.EqualFold(s[:len(p)], p)
}

func linkStop(c byte) bool {
	return c <= ' ' || c == '<' || c == '>' || c == '"' || c == '\'' || c == '`' || c == 0x7f
}

// hostOf is the lower-case host of a web link, "" if it has none. It is
// read by hand (scheme, userinfo, port) rather than with net/url, which
// rejects much of what mailers write and costs more.
func hostOf(link string) string {
	rest := link
	if i := strings.Index(rest, "://"); i >= 0 {
		rest = rest[i+3:]
	} else if !hasPrefixFold(rest, "www.") {
		return ""
	}
	if i := strings.IndexAny(rest, "/?#\\"); i >= 0 {
		rest = rest[:i]
	}
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		rest = rest[i+1:]
	}
	if strings.HasPrefix(rest, "[") { // [v6]:port
		if i := strings.IndexByte(rest, ']'); i > 0 {
			return strings.ToLower(rest[1:i])
		}
		return ""
	}
	if i := strings.IndexByte(rest, ':'); i >= 0 {
		rest = rest[:i]
	}
	if rest == "" || strings.ContainsAny(rest, " \t<>\"'") {
		return ""
	}
	return normalizeHost(rest)
}

func normalizeHost(h string) string {
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	for i := 0; i < len(h); i++ {
		if h[i] >= 0x80 {
			if a, err := idna.Lookup.ToASCII(h); err == nil {
				return a
			}
			return h
		}
	}
	return h
}

// registered is the registrable domain of host (eTLD+1 on the public
// suffix list), or host itself for an address or a name without one.
func (w *walker) registered(host string) string {
	if d, ok := w.reg[host]; ok {
		return d
	}
	d := registered(host)
	if w.reg == nil {
		w.reg = map[string]string{}
	}
	if len(w.reg) < 4096 {
		w.reg[host] = d
	}
	return d
}

func registered(host string) string {
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return host
	}
	if d, err := publicsuffix.EffectiveTLDPlusOne(host); err == nil {
		return d
	}
	return host
}

// visibleHost finds the first thing in an anchor's visible text that names
// a host: a URL, or a word that is a domain under a real public suffix
// ("paypal.com", not "file.txt"). "" if the text names none.
func visibleHost(text string) string {
	for _, word := range strings.FieldsFunc(text, func(r rune) bool {
		return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\u00a0' || r == '<' || r == '>' || r == '"' || r == '(' || r == ')' || r == ','
	}) {
		word = strings.TrimRight(word, ".;:!?]}'")
		if strings.Contains(word, "://") || hasPrefixFold(word, "www.") {
			if h := hostOf(word); h != "" {
				return h
			}
			continue
		}
		if strings.ContainsRune(word, '@') { // an address: its domain is what the reader sees
			word = word[strings.LastIndexByte(word, '@')+1:]
		}
		if i := strings.IndexByte(word, '/'); i > 0 {
			word = word[:i]
		}
		if looksLikeDomain(word) {
			return normalizeHost(word)
		}
	}
	return ""
}

func looksLikeDomain(w string) bool {
	if len(w) < 4 || !strings.Contains(w, ".") || strings.HasPrefix(w, ".") || strings.Contains(w, "..") {
		return false
	}
	for _, c := range w {
		if !(c == '.' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c > 0x7f) {
			return false
		}
	}
	if _, err := netip.ParseAddr(w); err == nil {
		return true
	}
	suffix, icann := publicsuffix.PublicSuffix(strings.ToLower(w))
	return icann && suffix != strings.ToLower(w)
}

// checkAnchor counts a phishing link: the anchor's text shows one
// registered domain and its href goes to another.
func (w *walker) checkAnchor(href, text string) {
	key := href + "\x00" + text
	if n, ok := w.anchors[key]; ok { // newsletters repeat the same anchor
		w.phishing += n
		return
	}
	before := w.phishing
	defer func() {
		if w.anchors == nil {
			w.anchors = map[string]int{}
		}
		if len(w.anchors) < 4096 {
			w.anchors[key] = w.phishing - before
		}
	}()
	shown := visibleHost(text)
	if shown == "" {
		return
	}
	target := hostOf(href)
	if target == "" {
		return
	}
	if w.registered(shown) != w.registered(target) {
		w.phishing++
	}
}
