package builtins

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sluicemail/sluice/internal/smtpaddr"
)

// lookupTimeout bounds one DNS lookup when the caller gave no deadline.
const lookupTimeout = 5 * time.Second

func coreFacts() []Fact {
	in := func(get func(*Input) any) func(*Message) (any, error) {
		return func(m *Message) (any, error) { return get(m.in), nil }
	}
	return []Fact{
		{Name: "client_ip", Type: String, Phase: Connect, Doc: "peer address",
			Compute: in(func(i *Input) any { return i.ClientIP })},
		{Name: "rdns", Type: String, Phase: Connect, Doc: `PTR name of client_ip, "" if none`,
			Compute: computeRDNS},
		{Name: "rdns_none", Type: Bool, Phase: Connect, Doc: "client_ip has no PTR record",
			Compute: func(m *Message) (any, error) {
				if !m.in.RDNSKnown && m.in.Resolver == nil {
					return false, nil // nothing to look it up with: neutral, not suspicious
				}
				name, _ := m.ValueOf("rdns")
				return name == "", nil
			}},
		{Name: "helo", Type: String, Phase: Helo, Doc: "HELO/EHLO name",
			Compute: in(func(i *Input) any { return i.Helo })},
		// TLS and AUTH are settled only after EHLO (STARTTLS restarts the
		// session, RFC 3207 4.2), so they are known from MAIL on.
		{Name: "tls", Type: Bool, Phase: Mail, Doc: "session is under TLS",
			Compute: in(func(i *Input) any { return i.TLS })},
		{Name: "authenticated", Type: Bool, Phase: Mail, Doc: "SMTP AUTH succeeded",
			Compute: in(func(i *Input) any { return i.Authenticated || i.SMTPUser != "" })},
		{Name: "smtp_user", Type: String, Phase: Mail, Doc: `authenticated user, "" if none`,
			Compute: in(func(i *Input) any { return i.SMTPUser })},
		{Name: "mail_from", Type: String, Phase: Mail, Doc: `envelope sender, "" for the null sender`,
			Compute: in(func(i *Input) any { return i.MailFrom })},
		{Name: "mail_from_domain", Type: String, Phase: Mail, Doc: "domain part of mail_from, lower case",
			Compute: in(func(i *Input) any { return Domain(i.MailFrom) })},
		{Name: "rcpt", Type: String, Phase: Rcpt, PerRecipient: true,
			Doc:     "the recipient under consideration (per-recipient rules)",
			Compute: func(m *Message) (any, error) { return m.rcpt, nil }},
		{Name: "rcpt_domain", Type: String, Phase: Rcpt, PerRecipient: true,
			Doc:     "domain part of rcpt, lower case",
			Compute: func(m *Message) (any, error) { return Domain(m.rcpt), nil }},
		{Name: "rcpts", Type: StringList, Phase: Data, Doc: "all accepted recipients",
			Compute: in(func(i *Input) any { return append([]string{}, i.Rcpts...) })},
		{Name: "rcpt_count", Type: Int, Phase: Data, Doc: "len(rcpts), known once all RCPT commands are in",
			Compute: in(func(i *Input) any { return len(i.Rcpts) })},
		{Name: "from", Type: String, Phase: Data, Doc: "address in the From header",
			Compute: func(m *Message) (any, error) { return m.Header().From(), nil }},
		{Name: "from_domain", Type: String, Phase: Data, Doc: "domain part of from, lower case",
			Compute: func(m *Message) (any, error) { return Domain(m.Header().From()), nil }},
		{Name: "subject", Type: String, Phase: Data, Doc: "decoded Subject",
			Compute: func(m *Message) (any, error) { return m.Header().Subject(), nil }},
		{Name: "subject_caps", Type: Bool, Phase: Data, Doc: "subject has at least 10 letters and no lower-case letter",
			Compute: func(m *Message) (any, error) { return SubjectCaps(m.Header().Subject()), nil }},
		{Name: "size", Type: Int, Phase: Data, Doc: "message size in bytes",
			Compute: in(func(i *Input) any { return len(i.Raw) })},
		{Name: "text", Type: String, Phase: Data, Doc: "decoded text of the body (text parts, HTML rendered to text)",
			Compute: func(m *Message) (any, error) { return m.Body().Text, nil }},
		{Name: "links", Type: StringList, Phase: Data, Doc: "URLs found in the body",
			Compute: func(m *Message) (any, error) { return m.Body().Links, nil }},
		{Name: "link_hosts", Type: StringList, Phase: Data, Doc: "distinct hosts of the links, lower case, in order of appearance",
			Compute: func(m *Message) (any, error) { return linkHosts(m.Body().Links), nil }},
		{Name: "phishing_links", Type: Int, Phase: Data, Doc: "links whose visible text names another registered domain than the href, except links through the sender's own click tracking (href on the From address's registered domain, or text naming it with the href on a mailing service's tracker)",
			Compute: func(m *Message) (any, error) { return m.Body().PhishingLinks, nil }},

		{Name: "hourly_sent", Type: Int, Phase: Mail, Doc: "messages relayed for this SMTP user (or client IP) in the last 60 minutes, sliding",
			Compute: constant(0)},
		{Name: "hourly_attempts", Type: Int, Phase: Mail, Doc: "messages tried (MAIL FROM) by this SMTP user (or client IP) in the last 60 minutes, refused ones included, sliding",
			Compute: constant(0)},
		{Name: "distinct_senders", Type: Int, Phase: Mail, Doc: "distinct envelope senders this SMTP user (or client IP) used in the last 60 minutes, this one included",
			Compute: constant(0)},
		{Name: "fingerprint", Type: String, Phase: Data, Doc: "hash of the subject and the start of the text (4 KB) with digits and white space folded: equal for messages that differ only in times and counters",
			Compute: func(m *Message) (any, error) { return Fingerprint(m.Header().Subject(), m.Body().Text), nil }},
		{Name: "repeated_messages", Type: Int, Phase: Data, Doc: "messages with this fingerprint this SMTP user (or client IP) had accepted in the last 60 minutes",
			Compute: constant(0)},
		{Name: "unknown_recipients", Type: Int, Phase: Mail, Doc: "deliveries of this SMTP user's (or client IP's) mail refused with 5.1.x (no such user or domain) in the last 24 hours",
			Compute: constant(0)},
		{Name: "bounce_rate", Type: Float, Phase: Mail, Doc: "share of this SMTP user's (or client IP's) deliveries in the last 24 hours that bounced, 0 to 1",
			Compute: constant(0.0)},
		{Name: "complaint_rate", Type: Float, Phase: Mail, Doc: "complaints (feedback reports) per delivered message of this SMTP user (or client IP) in the last 24 hours",
			Compute: constant(0.0)},
		{Name: "daily_sent", Type: Int, Phase: Mail, Doc: "messages relayed for this SMTP user (or client IP) in the last 24 hours, sliding",
			Compute: constant(0)},
		{Name: "domain_allowed", Type: Bool, Phase: Data, Doc: "the From domain is one this SMTP user may send from",
			Compute: constant(true)},
	}
}

func constant(v any) func(*Message) (any, error) {
	return func(*Message) (any, error) { return v, nil }
}

func computeRDNS(m *Message) (any, error) {
	in := m.in
	if in.RDNSKnown {
		return strings.ToLower(strings.TrimSuffix(in.RDNS, ".")), nil
	}
	ip, err := netip.ParseAddr(in.ClientIP)
	if err != nil {
		return "", nil
	}
	if in.Resolver == nil {
		if ip.IsLoopback() {
			return "localhost", nil
		}
		return "", nil
	}
	ctx := m.ctx
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, lookupTimeout)
		defer cancel()
	}
	names, err := in.Resolver.LookupAddr(ctx, ip.String())
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return "", nil
		}
		// A failed lookup is not "no PTR": guessing either way would
		// refuse good mail or pass bad mail.
		return nil, err
	}
	if len(names) == 0 {
		return "", nil
	}
	return strings.ToLower(strings.TrimSuffix(names[0], ".")), nil
}

// SubjectCaps reports whether s has at least 10 letters and no lower-case
// letter. Letters without case (CJK, Arabic) are not counted: a subject in a
// script without capitals is not shouting.
func SubjectCaps(s string) bool {
	letters := 0
	for _, r := range s {
		switch {
		case unicode.IsLower(r):
			return false
		case unicode.IsUpper(r) || unicode.IsTitle(r):
			letters++
		}
	}
	return letters >= 10
}

// LocalPart returns the part of an address before the last '@', lower case,
// with angle brackets removed; the whole address if it has no '@'.
func LocalPart(addr string) string {
	addr = strings.Trim(strings.TrimSpace(addr), "<>")
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		addr = addr[:i]
	}
	// The relay keeps a local part that needs quotes quoted on the wire
	// ("john smith"@example.com); rules compare the mailbox name.
	return strings.ToLower(smtpaddr.Unquote(addr))
}

// Domain returns the part of an address after the last '@', lower case,
// without a trailing dot; "" if the address has no '@'.
func Domain(addr string) string {
	addr = strings.Trim(strings.TrimSpace(addr), "<>")
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(addr[i+1:], "."))
}

func coreFuncs() []Func {
	str := func(a any) string { s, _ := a.(string); return s }
	return []Func{
		{Name: "header", Signature: "header(name) string", Phase: Data,
			Doc: `first value of the named header, decoded; "" if absent`, Params: []Type{String}, Result: String,
			Call: func(m *Message, a []any) any { return m.Header().Get(str(a[0])) }},
		{Name: "has_header", Signature: "has_header(name) bool", Phase: Data,
			Doc: "the message has the named header", Params: []Type{String}, Result: Bool,
			Call: func(m *Message, a []any) any { return m.Header().Has(str(a[0])) }},
		{Name: "in_list", Signature: "in_list(name, value) bool", Phase: Connect,
			Doc:    "value is on the named list: a static list from the rules directory, else a dynamic one (bounces, unsubscribes, blocked)",
			Params: []Type{String, String}, Result: Bool,
			Call: func(m *Message, a []any) any { return m.inList(str(a[0]), str(a[1])) }},
		{Name: "count", Signature: "count(counter, key, window) int", Phase: Connect,
			Doc:    `accepted messages counted under counter and key within window ("10m", "1h", "1d"); the relay counts every key a rule asked about once the message is accepted, e.g. count("rcpt_domain", rcpt_domain, "1h")`,
			Params: []Type{String, String, String}, Result: Int,
			Call: func(m *Message, a []any) any { return m.count(str(a[0]), str(a[1]), str(a[2])) }},
		{Name: "local_part", Signature: "local_part(addr) string", Phase: Connect,
			Doc: "part of addr before the '@', lower case", Params: []Type{String}, Result: String,
			Call: func(_ *Message, a []any) any { return LocalPart(str(a[0])) }},
		{Name: "hostname", Signature: "hostname(url) string", Phase: Connect,
			Doc: `host of a URL (or www. link), lower case; "" if none`, Params: []Type{String}, Result: String,
			Call: func(_ *Message, a []any) any { return hostOf(str(a[0])) }},
		{Name: "domain", Signature: "domain(addr) string", Phase: Connect,
			Doc: `part of addr after the '@', lower case; "" if none`, Params: []Type{String}, Result: String,
			Call: func(_ *Message, a []any) any { return Domain(str(a[0])) }},
	}
}

// count answers count(counter, key, window).
func (m *Message) count(counter, key, window string) int {
	w, err := ParseWindow(window)
	if err != nil {
		m.Fail(fmt.Errorf("%w: count: %v", ErrInvalidArgument, err))
		return 0
	}
	if m.in.Counters == nil {
		return 0
	}
	n, err := m.in.Counters.Count(m.ctx, counter, key, w)
	if err != nil {
		m.Fail(err)
		return 0
	}
	return n
}

// ParseWindow reads a count() window: 30s, 10m, 1h, 1d (at most a day).
func ParseWindow(s string) (time.Duration, error) {
	var d time.Duration
	var err error
	if n, ok := strings.CutSuffix(s, "d"); ok {
		var f float64
		f, err = strconv.ParseFloat(n, 64)
		d = time.Duration(f * float64(24*time.Hour))
	} else {
		d, err = time.ParseDuration(s)
	}
	if err != nil || d <= 0 || d > 24*time.Hour {
		return 0, fmt.Errorf("count window %q: want a duration up to a day, e.g. 10m, 1h, 1d", s)
	}
	return d, nil
}

// Fingerprint hashes a message's subject and text with digits removed and
// white space folded, so the same cron noise with a new timestamp matches.
func Fingerprint(subject, text string) string {
	buf := make([]byte, 0, min(len(subject)+len(text), 4<<10)+2)
	fold := func(s string) {
		space := false
		for i := 0; i < len(s) && len(buf) < 4<<10; { // the first 4 KB tell messages apart
			c := s[i]
			if c < utf8.RuneSelf { // ASCII, nearly all of it
				i++
				switch {
				case c >= '0' && c <= '9':
					continue
				case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
					space = true
					continue
				case c >= 'A' && c <= 'Z':
					c += 'a' - 'A'
				}
				if space {
					buf = append(buf, ' ')
					space = false
				}
				buf = append(buf, c)
				continue
			}
			r, n := utf8.DecodeRuneInString(s[i:])
			i += n
			if unicode.IsSpace(r) {
				space = true
				continue
			}
			if space {
				buf = append(buf, ' ')
				space = false
			}
			buf = utf8.AppendRune(buf, unicode.ToLower(r))
		}
	}
	fold(subject)
	buf = append(buf, 0)
	fold(text)
	sum := sha256.Sum256(buf)
	return hex.EncodeToString(sum[:12])
}

func (m *Message) inList(name, value string) bool {
	if m.static != nil {
		if in, found := m.static.Lookup(name, value); found {
			return in
		}
	}
	if m.in.Lists == nil {
		return false
	}
	in, err := m.in.Lists.InList(m.ctx, name, value)
	if err != nil {
		m.Fail(err)
		return false
	}
	return in
}
