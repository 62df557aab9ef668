package builtins

import (
	"net/netip"
	"slices"
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
// starts a word. It looks for "://" and "." (strings.Index and IndexByte
// run a word at a time) and checks the bytes before them, instead of
// testing every byte of the text: the byte loop was 7% of the relay's CPU
// on 100 KB messages.
func indexLinkStart(s string) int {
	best := -1
	for off := 0; best < 0; {
		j := strings.Index(s[off:], "://")
		if j < 0 {
			break
		}
		j += off
		for _, scheme := range [...]string{"https", "http", "ftp"} {
			if st := j - len(scheme); st >= 0 && strings.EqualFold(s[st:j], scheme) && wordStart(s, st) {
				best = st
				break
			}
		}
		off = j + 1
	}
	// A www. before the first scheme link comes first. (One cannot
	// straddle it: the scheme link starts with h or f, inside "www" it
	// would be a w.)
	limit := len(s)
	if best >= 0 {
		limit = best + 3
	}
	for off := 0; off < limit; {
		j := strings.IndexByte(s[off:limit], '.')
		if j < 0 {
			break
		}
		j += off
		if st := j - 3; st >= 0 && hasPrefixFold(s[st:], "www.") && wordStart(s, st) {
			return st
		}
		off = j + 1
	}
	return best
}

// wordStart: a link may start at s[i] (the text's start, after a space,
// a delimiter or an opening bracket).
func wordStart(s string, i int) bool {
	return i == 0 || linkStop(s[i-1]) || s[i-1] == '(' || s[i-1] == '['
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
// linkHosts returns the distinct hosts of links in order of appearance, so
// that a rule about link targets runs once per host, not once per link.
func linkHosts(links []string) []string {
	hosts := make([]string, 0, 4)
	var seen map[string]bool
	// Links cluster by host: a link that starts with the previous link's
	// scheme and authority, up to the same delimiter, has its host.
	prefix := ""
	for _, l := range links {
		if prefix != "" && len(l) > len(prefix) && strings.HasPrefix(l, prefix) && isAuthorityEnd(l[len(prefix)]) {
			continue
		}
		raw, _, end := rawHost(l)
		prefix = ""
		if raw == "" {
			continue
		}
		if end < len(l) {
			prefix = l[:end]
		}
		h := hostOf(l)
		if h == "" {
			continue
		}
		if seen == nil && len(hosts) >= 16 {
			seen = make(map[string]bool, 2*len(hosts))
			for _, x := range hosts {
				seen[x] = true
			}
		}
		if seen != nil {
			if seen[h] {
				continue
			}
			seen[h] = true
		} else if slices.Contains(hosts, h) {
			continue
		}
		hosts = append(hosts, h)
	}
	return hosts
}

func hostOf(link string) string {
	raw, bracketed, _ := rawHost(link)
	if raw == "" {
		return ""
	}
	if bracketed {
		return strings.ToLower(raw)
	}
	return normalizeHost(raw)
}

func isAuthorityEnd(c byte) bool { return c == '/' || c == '?' || c == '#' || c == '\\' }

// rawHost slices the host out of link without allocating: as written (case
// and IDN not normalized), whether it was an [IPv6] literal, and the offset
// in link where the authority (user@host:port) ends.
func rawHost(link string) (string, bool, int) {
	rest := link
	start := 0
	if i := strings.Index(rest, "://"); i >= 0 {
		start = i + 3
		rest = rest[start:]
	} else if !hasPrefixFold(rest, "www.") {
		return "", false, 0
	}
	end := len(link)
	for i := 0; i < len(rest); i++ {
		if isAuthorityEnd(rest[i]) {
			rest = rest[:i]
			end = start + i
			break
		}
	}
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		rest = rest[i+1:]
	}
	if strings.HasPrefix(rest, "[") { // [v6]:port
		if i := strings.IndexByte(rest, ']'); i > 0 {
			return rest[1:i], true, end
		}
		return "", false, end
	}
	if i := strings.IndexByte(rest, ':'); i >= 0 {
		rest = rest[:i]
	}
	for i := 0; i < len(rest); i++ {
		switch rest[i] {
		case ' ', '\t', '<', '>', '"', '\'':
			return "", false, end
		}
	}
	return rest, false, end
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

// unregistrable reports a link host (as linkHosts gives it) that is a name
// no one can register: one label, a public suffix itself, or under a
// top-level domain the public suffix list does not know. An IP address is
// not a name, so not counted here.
func unregistrable(host string) bool {
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return false
	}
	if _, err := publicsuffix.EffectiveTLDPlusOne(host); err != nil {
		return true // one label, or the suffix itself
	}
	// For a top-level domain it does not list, the list's default rule
	// ("*") makes the last label the suffix, and says it is not ICANN's;
	// the suffixes it lists privately (blogspot.com) have two labels or more.
	suffix, icann := publicsuffix.PublicSuffix(host)
	return !icann && !strings.Contains(suffix, ".")
}

// visibleHost finds the first thing in an anchor's visible text that names
// a host: a URL, or a word that is a domain under a real public suffix
// ("paypal.com", not "file.txt"). "" if the text names none.
func visibleHost(text string) string {
	if strings.IndexByte(text, '.') < 0 && !strings.Contains(text, "://") {
		return "" // neither a domain nor a URL
	}
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
// registered domain and its href goes to another, unless the href is the
// sender's own click tracking (see disguised).
func (w *walker) checkAnchor(href, text string) {
	shown := visibleHost(text) // most anchor texts name no domain: done
	if shown == "" {
		return
	}
	key := href + "\x00" + shown
	if n, ok := w.anchors[key]; ok { // newsletters repeat the same anchor
		w.phishing += n
		return
	}
	n := 0
	if target := hostOf(href); target != "" && w.disguised(shown, target) {
		n = 1
	}
	w.phishing += n
	if w.anchors == nil {
		w.anchors = map[string]int{}
	}
	if len(w.anchors) < 4096 {
		w.anchors[key] = n
	}
}

// disguised reports whether an anchor that shows host shown but goes to
// host target hides where it leads. Newsletters send every link through a
// click-tracking redirect, so the text names a brand (news.com) while the
// href goes to the sender's own tracker (clickthru.online.com for mail
// From newsletter.online.com) or to its mailing service's
// (u123.ct.sendgrid.net for mail From shop.example showing shop.example).
// Neither is a disguise: the reader is sent where the sender says. All
// domains are compared as registered domains (public suffix list), so
// paypal.com.evil.example is evil.example. What this lets through: a forged
// From paypal.com with links to paypal.com itself or through a mailing
// service's tracker (DMARC judges that From), and a phisher's own domain in
// From, href and nothing else (the text must then name the brand while the
// From names the phisher, which the other rules and the reader can see).
func (w *walker) disguised(shown, target string) bool {
	s, t := w.registered(shown), w.registered(target)
	if s == t {
		return false
	}
	sender := w.senderDomain()
	if sender == "" {
		return true
	}
	return t != sender && (s != sender || !trackingDomains[t])
}

// senderDomain is the registered domain of the From address, "" if none.
func (w *walker) senderDomain() string {
	if !w.senderOK {
		w.senderOK = true
		if w.hdr != nil {
			if d := Domain(w.hdr.From()); d != "" {
				w.sender = w.registered(normalizeHost(d))
			}
		}
	}
	return w.sender
}

// trackingDomains are the registered domains of the click-tracking
// redirectors of common mailing services (ESPs), which rewrite every link
// of a campaign sent through them.
var trackingDomains = map[string]bool{
	"sendgrid.net":      true, // SendGrid (ct.sendgrid.net)
	"list-manage.com":   true, // Mailchimp
	"mailchi.mp":        true,
	"rs6.net":           true, // Constant Contact
	"exacttarget.com":   true, // Salesforce Marketing Cloud
	"exct.net":          true,
	"mandrillapp.com":   true, // Mandrill
	"mailgun.org":       true, // Mailgun
	"sparkpostmail.com": true, // SparkPost
	"hubspotlinks.com":  true, // HubSpot
	"createsend.com":    true, // Campaign Monitor
	"createsend1.com":   true,
	"cmail19.com":       true,
	"cmail20.com":       true,
	"awstrack.me":       true, // Amazon SES
	"mjt.lu":            true, // Mailjet
	"sendibt2.com":      true, // Brevo (Sendinblue)
	"sendibt3.com":      true,
	"klclick.com":       true, // Klaviyo
	"klclick1.com":      true,
	"klclick2.com":      true,
	"klclick3.com":      true,
	"pstmrk.it":         true, // Postmark
	"pardot.com":        true, // Pardot
	"acemlna.com":       true, // ActiveCampaign
	"acemlnb.com":       true,
	"acemlnc.com":       true,
	"acemlnd.com":       true,
	"aweber.com":        true, // AWeber
	"mlsend.com":        true, // MailerLite
}
