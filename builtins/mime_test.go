package builtins

import (
	"encoding/base64"
	"errors"
	"fmt"
	"mime/quotedprintable"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

func TestParseHeader(t *testing.T) {
	raw := crlf("From MAILER-DAEMON Thu Nov 20 10:00:00 2026\n" +
		"Received: from a\n\tby b;\n Thu, 20 Nov 2026 10:00:00 +0000\n" +
		"Received: from c\n" +
		"subject : =?UTF-8?B?SGVsbG8gV8O2cmxk?= =?ISO-8859-1?Q?_caf=E9?=\n" +
		"X-Empty:\n" +
		"From: =?UTF-8?Q?J=C3=BCrgen?= <juergen@Example.COM>\n" +
		"To: a@example.org, \"Smith, Bob\" <bob@example.org>, undisclosed-recipients:;\n" +
		"\n" +
		"body\n")
	h, err := ParseHeader([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if got := h.Get("received"); got != "from a\tby b; Thu, 20 Nov 2026 10:00:00 +0000" {
		t.Errorf("folded Received = %q", got)
	}
	if got := h.Values("Received"); len(got) != 2 {
		t.Errorf("Received values = %q", got)
	}
	if got := h.Subject(); got != "Hello Wörld café" {
		t.Errorf("Subject = %q", got)
	}
	if !h.Has("x-empty") || h.Get("X-Empty") != "" || h.Has("X-Missing") {
		t.Error("Has/Get of an empty field")
	}
	if got := h.From(); got != "juergen@Example.COM" {
		t.Errorf("From = %q", got)
	}
	if got := h.Addresses("To"); !reflect.DeepEqual(got, []string{"a@example.org", "bob@example.org"}) {
		t.Errorf("To = %q", got)
	}
	if got := raw[h.BodyOffset():]; got != "body\r\n" {
		t.Errorf("body starts at %q", got)
	}
}

func TestParseHeaderMalformed(t *testing.T) {
	tests := []struct {
		name, raw    string
		wantErr      bool
		body         string
		subject      string
		fields       int
		fromAddress  string
		toAddresses  []string
		offsetAtTail bool
	}{
		{name: "LF only", raw: "Subject: x\nFrom: a@b.example\n\nhi\n", body: "hi\n", subject: "x", fields: 2, fromAddress: "a@b.example"},
		{name: "no body", raw: "Subject: x\r\nFrom: a@b.example", subject: "x", fields: 2, fromAddress: "a@b.example", offsetAtTail: true},
		{name: "empty", raw: "", offsetAtTail: true},
		{name: "body only", raw: "\r\nhello", body: "hello"},
		{name: "garbage line ends the header", raw: "Subject: x\nthis is not a header\nmore\n", wantErr: true, body: "this is not a header\nmore\n", subject: "x", fields: 1},
		{name: "continuation first", raw: " folded\nSubject: y\n\nb", wantErr: true, body: "b", subject: "y", fields: 1},
		{name: "space in key", raw: "Bad Key: v\n\nb", wantErr: true, body: "Bad Key: v\n\nb"},
		{name: "raw 8-bit Windows-1252 subject", raw: "Subject: caf\xe9 \x93quoted\x94\n\n", subject: "café \u201cquoted\u201d", fields: 1},
		{name: "broken encoded word kept as is", raw: "Subject: =?X-UNKNOWN?Q?abc?=\n\n", subject: "=?X-UNKNOWN?Q?abc?=", fields: 1},
		{name: "sloppy From", raw: "From: Foo Bar <foo@bar.example\nTo: x@y.example;, Some One x2@y.example\n\n", fields: 2, fromAddress: "foo@bar.example", toAddresses: []string{"x@y.example", "x2@y.example"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ParseHeader([]byte(tt.raw))
			if h == nil {
				t.Fatal("nil header")
			}
			if (err != nil) != tt.wantErr {
				t.Errorf("err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrMalformedHeader) {
				t.Errorf("err %v does not wrap ErrMalformedHeader", err)
			}
			if tt.offsetAtTail {
				if h.BodyOffset() != len(tt.raw) {
					t.Errorf("offset %d, want %d", h.BodyOffset(), len(tt.raw))
				}
			} else if got := tt.raw[h.BodyOffset():]; got != tt.body {
				t.Errorf("body %q, want %q", got, tt.body)
			}
			if h.Subject() != tt.subject || !utf8.ValidString(h.Subject()) {
				t.Errorf("subject %q, want %q", h.Subject(), tt.subject)
			}
			if h.Len() != tt.fields {
				t.Errorf("%d fields, want %d", h.Len(), tt.fields)
			}
			if h.From() != tt.fromAddress {
				t.Errorf("From %q, want %q", h.From(), tt.fromAddress)
			}
			if tt.toAddresses != nil && !reflect.DeepEqual(h.Addresses("To"), tt.toAddresses) {
				t.Errorf("To %q, want %q", h.Addresses("To"), tt.toAddresses)
			}
		})
	}
}

func b64(s string) string {
	e := base64.StdEncoding.EncodeToString([]byte(s))
	var out strings.Builder
	for len(e) > 76 {
		out.WriteString(e[:76] + "\r\n")
		e = e[76:]
	}
	return out.String() + e
}

func qp(s string) string {
	var b strings.Builder
	w := quotedprintable.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return b.String()
}

func parseBody(raw string, lim Limits) *Body {
	h, _ := ParseHeader([]byte(raw))
	return ParseBody([]byte(raw), h, lim)
}

func TestParseBodyText(t *testing.T) {
	latin1 := "Gr\xfc\xdfe aus M\xfcnchen"    // ISO-8859-1
	cp1252 := "\x93Smart quotes\x94 \x80 100" // Windows-1252
	iso2022 := "\x1b$B$3$s$K$A$O\x1b(B world" // ISO-2022-JP "こんにちは world"
	tests := []struct {
		name, raw, text string
		problems        int
	}{
		{"not MIME at all", "Subject: x\n\nplain old mail\n", "plain old mail\n", 0},
		{"quoted-printable UTF-8", "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n" + qp("Grüße, a long line that the encoder has to wrap because it is longer than seventy-six characters") + "\n",
			"Grüße, a long line that the encoder has to wrap because it is longer than seventy-six characters\n", 0},
		{"base64 UTF-8", "Content-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: base64\n\n" + b64("Ünïcödé text") + "\n", "Ünïcödé text", 0},
		{"ISO-8859-1", "Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: 8bit\n\n" + latin1, "Grüße aus München", 0},
		{"Windows-1252 in base64", "Content-Type: text/plain; charset=windows-1252\nContent-Transfer-Encoding: base64\n\n" + b64(cp1252), "\u201cSmart quotes\u201d € 100", 0},
		{"ISO-2022-JP", "Content-Type: text/plain; charset=ISO-2022-JP\nContent-Transfer-Encoding: 7bit\n\n" + iso2022, "こんにちは world", 0},
		{"undeclared 8-bit read as Windows-1252", "Subject: x\n\n" + latin1, "Grüße aus München", 0},
		{"unknown charset is read raw and reported", "Content-Type: text/plain; charset=x-klingon\n\nqapla'", "qapla'", 1},
		{"unknown transfer encoding is reported", "Content-Type: text/plain\nContent-Transfer-Encoding: x-uuencode\n\nbegin", "begin", 1},
		{"corrupt base64 keeps what decoded", "Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n" + b64("good part") + "\n!!!$$$\n", "good part", 1},
		{"html only", "Content-Type: text/html; charset=utf-8\n\n<html><head><title>T</title><style>p{color:red}</style></head><body><p>Hello&nbsp;<b>World</b> &amp; co</p><script>evil()</script><div>next  line</div><table><tr><td>a</td><td>b</td></tr></table></body></html>",
			"Hello World & co\nnext line\na b", 0},
		{"html with a head never closed", "Content-Type: text/html\n\n<head><title>x</title><body>visible</body>", "visible", 0},
		{"alternative keeps the plain text", crlf("Content-Type: multipart/alternative; boundary=\"b1\"\n\n--b1\nContent-Type: text/plain; charset=utf-8\n\nplain version\n--b1\nContent-Type: text/html; charset=utf-8\n\n<p>html version</p>\n--b1--\n"), "plain version", 0},
		{"alternative with an empty plain part uses the html", crlf("Content-Type: multipart/alternative; boundary=b1\n\n--b1\nContent-Type: text/plain\n\n\n--b1\nContent-Type: text/html\n\n<p>only html</p>\n--b1--\n"), "only html", 0},
		{"mixed: text, attachment skipped, nested alternative", crlf("Content-Type: multipart/mixed; boundary=outer\n\npreamble\n--outer\nContent-Type: multipart/alternative; boundary=inner\n\n--inner\nContent-Type: text/plain\n\nfirst\n--inner\nContent-Type: text/html\n\n<p>first html</p>\n--inner--\n--outer\nContent-Type: text/plain; name=notes.txt\nContent-Disposition: attachment; filename=notes.txt\n\nsecret attachment\n--outer\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\nJVBERi0=\n--outer\nContent-Type: text/plain\n\nsecond\n--outer--\nepilogue\n"), "first\nsecond", 0},
		{"attached message is read", crlf("Content-Type: multipart/report; report-type=delivery-status; boundary=r\n\n--r\nContent-Type: text/plain\n\nDelivery failed.\n--r\nContent-Type: message/delivery-status\n\nAction: failed\n--r\nContent-Type: message/rfc822\n\nSubject: orig\nContent-Type: text/plain; charset=iso-8859-1\n\nOriginal caf\xe9\n--r--\n"), "Delivery failed.\nOriginal café", 0},
		{"multipart without boundary", "Content-Type: multipart/mixed\n\nwhatever", "", 1},
		{"truncated multipart", crlf("Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: text/plain\n\nstarted but never fini"), "started but never fini", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := parseBody(tt.raw, Limits{})
			if b.Text != tt.text {
				t.Errorf("text %q\nwant %q", b.Text, tt.text)
			}
			if len(b.Problems) != tt.problems {
				t.Errorf("problems %q, want %d", b.Problems, tt.problems)
			}
		})
	}
}

func TestLinksAndPhishing(t *testing.T) {
	html := func(body string) string {
		return "Content-Type: text/html; charset=utf-8\n\n<html><body>" + body + "</body></html>"
	}
	tests := []struct {
		name, raw string
		links     []string
		phishing  int
	}{
		{"text links without trailing punctuation", "Subject: x\n\nSee https://example.com/a?b=1, and (http://example.org/x). Also www.example.net! Not a link: xhttp://no, mailto:a@b.example\nhttps://example.com/a?b=1 again",
			[]string{"https://example.com/a?b=1", "http://example.org/x", "www.example.net"}, 0},
		{"visible domain differs from href", html(`<a href="http://198.51.100.7/login">www.paypal.com</a> <a href="https://paypal.com.evil.example/x">https://www.paypal.com/signin</a>`),
			[]string{"http://198.51.100.7/login", "https://paypal.com.evil.example/x"}, 2},
		{"same registered domain is not phishing", html(`<a href="https://click.mail.example.com/t/1">www.example.com</a><a href="https://login.bank.co.uk/">bank.co.uk</a><a href="HTTPS://EXAMPLE.ORG/">example.org/path</a>`),
			[]string{"https://click.mail.example.com/t/1", "https://login.bank.co.uk/", "HTTPS://EXAMPLE.ORG/"}, 0},
		{"another domain under a shared suffix is phishing", html(`<a href="https://evil.co.uk/">bank.co.uk</a>`), []string{"https://evil.co.uk/"}, 1},
		{"text that names no domain is not phishing", html(`<a href="https://tracker.example/c/9">Click here</a> <a href="https://x.example/">report.pdf</a> <a href="https://x.example/2">v1.2.3</a>`),
			[]string{"https://tracker.example/c/9", "https://x.example/", "https://x.example/2"}, 0},
		{"non-web hrefs are not links", html(`<a href="mailto:a@example.com">a@example.com</a><a href="javascript:x()">x</a><a href="#top">top</a><a>none</a><area href="https://map.example/">`),
			[]string{"https://map.example/"}, 0},
		{"unclosed anchors end at the next one", html(`<a href="https://evil.example/1">paypal.com <a href="https://paypal.com/">paypal.com</a>`),
			[]string{"https://evil.example/1", "https://paypal.com/"}, 1},
		{"idn lookalike is another domain", html(`<a href="https://xn--pypal-4ve.com/">pаypal.com</a><a href="https://paypal.com/">www.paypal.com</a>`),
			[]string{"https://xn--pypal-4ve.com/", "https://paypal.com/"}, 0},
		{"the sender's own click tracker is not phishing", "From: CNET <newsletter@newsletter.online.com>\n" + html(`<a href="http://clickthru.online.com/Click?q=4a">news.com</a> <a href="http://clickthru.online.com/Click?q=4b">www.buy.com</a>`),
			[]string{"http://clickthru.online.com/Click?q=4a", "http://clickthru.online.com/Click?q=4b"}, 0},
		{"a mailing service's tracker for the sender's own domain is not phishing", "From: Shop <news@mail.shop.co.uk>\n" + html(`<a href="https://u123.ct.sendgrid.net/ls/click?upn=x">www.shop.co.uk</a>`),
			[]string{"https://u123.ct.sendgrid.net/ls/click?upn=x"}, 0},
		{"a tracker naming another brand than the sender is phishing", "From: Shop <news@shop.example>\n" + html(`<a href="https://u123.ct.sendgrid.net/ls/click?upn=x">www.paypal.com</a>`),
			[]string{"https://u123.ct.sendgrid.net/ls/click?upn=x"}, 1},
		{"a forged From does not excuse a host that is no tracker", "From: Chase <no-reply@chase.com>\n" + html(`<a href="https://chase.account-review.example.net/login">www.chase.com</a>`),
			[]string{"https://chase.account-review.example.net/login"}, 1},
		{"a From on another domain than the href is phishing", "From: PayPal <service@paypal-notice.top>\n" + html(`<a href="http://paypal-secure-login.verify-account.ru/signin">https://www.paypal.com/signin</a>`),
			[]string{"http://paypal-secure-login.verify-account.ru/signin"}, 1},
		{"registered domains of the sender compare under a shared suffix", "From: a@news.bank.co.uk\n" + html(`<a href="https://evil.co.uk/">bank.co.uk</a><a href="https://t.bank.co.uk/c">bankoffers.com</a>`),
			[]string{"https://evil.co.uk/", "https://t.bank.co.uk/c"}, 1},
		{"links from every alternative, once", crlf("Content-Type: multipart/alternative; boundary=b\n\n--b\nContent-Type: text/plain\n\nGo to https://example.com/offer\n--b\nContent-Type: text/html\n\n<a href=\"https://example.com/offer\">https://example.com/offer</a> <a href=\"https://bit.example/x\">amazon.com</a>\n--b--\n"),
			[]string{"https://example.com/offer", "https://bit.example/x"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := parseBody(tt.raw, Limits{})
			if !reflect.DeepEqual(b.Links, tt.links) {
				t.Errorf("links %q\nwant  %q", b.Links, tt.links)
			}
			if b.PhishingLinks != tt.phishing {
				t.Errorf("phishing %d, want %d", b.PhishingLinks, tt.phishing)
			}
		})
	}
}

func TestParseBodyLimits(t *testing.T) {
	lim := Limits{MaxDepth: 3, MaxParts: 10, MaxText: 100, MaxLinks: 5}
	nested := func(depth int) string {
		var b strings.Builder
		b.WriteString("Content-Type: multipart/mixed; boundary=b0\n\n")
		for i := 0; i < depth; i++ {
			fmt.Fprintf(&b, "--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n", i, i+1)
		}
		fmt.Fprintf(&b, "--b%d\nContent-Type: text/plain\n\ndeep\n", depth)
		return b.String()
	}
	manyParts := "Content-Type: multipart/mixed; boundary=b\n\n" + strings.Repeat("--b\nContent-Type: text/plain\n\np\n", 50) + "--b--\n"
	manyLinks := "Subject: x\n\n"
	for i := 0; i < 20; i++ {
		manyLinks += fmt.Sprintf("https://l%d.example/ ", i)
	}
	tests := []struct {
		name, raw string
		check     func(*Body) error
		lim       *Limits
	}{
		{"depth within the limit", nested(2), func(b *Body) error {
			if b.Text != "deep" || !hasProblem(b, "truncated") || len(b.Problems) != 1 { // the unterminated multiparts, reported once
				return fmt.Errorf("text %q problems %q", b.Text, b.Problems)
			}
			return nil
		}, nil},
		{"depth beyond the limit", nested(10), func(b *Body) error {
			if b.Text != "" || !hasProblem(b, "nesting deeper than 3") {
				return fmt.Errorf("text %q problems %q", b.Text, b.Problems)
			}
			return nil
		}, nil},
		{"too many parts", manyParts, func(b *Body) error {
			if strings.Count(b.Text, "p") != 9 || !hasProblem(b, "more than 10 MIME parts") {
				return fmt.Errorf("text %q problems %q", b.Text, b.Problems)
			}
			return nil
		}, nil},
		{"text cut at the limit, not inside a character", "Subject: x\n\n" + strings.Repeat("é", 200), func(b *Body) error {
			if len(b.Text) > 100 || !utf8.ValidString(b.Text) || !hasProblem(b, "text longer than 100") {
				return fmt.Errorf("%d bytes, problems %q", len(b.Text), b.Problems)
			}
			return nil
		}, nil},
		{"links capped", manyLinks, func(b *Body) error {
			if len(b.Links) != 5 || !hasProblem(b, "more than 5 links") || len(b.Problems) != 1 {
				return fmt.Errorf("%d links, problems %q", len(b.Links), b.Problems)
			}
			return nil
		}, &Limits{MaxLinks: 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := lim
			if tt.lim != nil {
				l = *tt.lim
			}
			if err := tt.check(parseBody(tt.raw, l)); err != nil {
				t.Error(err)
			}
		})
	}
}

func hasProblem(b *Body, s string) bool {
	for _, p := range b.Problems {
		if strings.Contains(p, s) {
			return true
		}
	}
	return false
}

// TestHugeMessageBounded: a 30 MB body yields the first MaxText bytes of
// text and a problem, not 30 MB of text.
func TestHugeMessageBounded(t *testing.T) {
	raw := "Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n" + b64(strings.Repeat("spam ", 6<<20))
	b := parseBody(raw, Limits{})
	if len(b.Text) != DefaultLimits().MaxText || !hasProblem(b, "text longer than") {
		t.Errorf("%d bytes of text, problems %q", len(b.Text), b.Problems)
	}
}

var fuzzSeeds = []string{
	"Subject: x\n\nhello",
	"From: a@b\nContent-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: text/html\n\n<a href=\"http://e.example\">paypal.com</a>\n--x--\n",
	"Content-Type: multipart/alternative; boundary=\"a\"\n\n--a\nContent-Type: message/rfc822\n\nContent-Type: multipart/mixed; boundary=a\n\n--a\n",
	"Content-Type: text/plain; charset=iso-2022-jp\nContent-Transfer-Encoding: base64\n\nGyRCJDMkcyRLJEEkTxsoQg==",
	"Subject: =?utf-8?q?=E2=82?= \n\n\xff\xfe",
	"Content-Type: text/html\nContent-Transfer-Encoding: quoted-printable\n\n<a href=3D\"https://x.example\">www.y.example</a>=\n<scr",
	" \n:\n\n",
}

func FuzzParseHeader(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		h, _ := ParseHeader(raw)
		if h == nil {
			t.Fatal("nil header")
		}
		if h.BodyOffset() < 0 || h.BodyOffset() > len(raw) {
			t.Fatalf("body offset %d outside 0..%d", h.BodyOffset(), len(raw))
		}
		for _, s := range []string{h.Subject(), h.Get("To"), h.From()} {
			if !utf8.ValidString(s) && s != h.From() {
				t.Fatalf("invalid UTF-8 %q", s)
			}
		}
		h.Addresses("To")
	})
}

func FuzzParseBody(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	lim := Limits{MaxDepth: 4, MaxParts: 20, MaxText: 512, MaxLinks: 8}
	f.Fuzz(func(t *testing.T, raw []byte) {
		h, _ := ParseHeader(raw)
		b := ParseBody(raw, h, lim)
		if b == nil {
			t.Fatal("nil body")
		}
		if len(b.Text) > lim.MaxText || len(b.Links) > lim.MaxLinks || len(b.Problems) > 20 {
			t.Fatalf("limits exceeded: %d bytes of text, %d links, %d problems", len(b.Text), len(b.Links), len(b.Problems))
		}
		if !utf8.ValidString(b.Text) {
			t.Fatalf("text is not UTF-8: %q", b.Text)
		}
		if b.PhishingLinks < 0 || b.PhishingLinks > 64*len(raw) {
			t.Fatalf("phishing count %d", b.PhishingLinks)
		}
		for _, p := range b.Problems {
			if strings.Contains(p, "MIME parser failed") {
				t.Fatalf("parser panicked: %s", p)
			}
		}
	})
}

func BenchmarkParse20KB(b *testing.B) {
	var body strings.Builder
	for body.Len() < 8<<10 {
		body.WriteString("Dear customer, your invoice https://billing.example.com/inv/12345 is ready. Grüße aus München.\n")
	}
	html := "<html><body>" + strings.Repeat(`<p>Offer of the week: <a href="https://shop.example.com/p/1">shop.example.com</a> &amp; more</p>`, 80) + "</body></html>"
	raw := crlf("From: Shop <news@shop.example.com>\nTo: bob@example.org\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=b\n\n--b\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n") +
		qp(body.String()) + crlf("\n--b\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64\n\n") + b64(html) + crlf("\n--b--\n")
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		p := Parse([]byte(raw), Limits{})
		if len(p.Body.Links) != 2 {
			b.Fatalf("links %q", p.Body.Links)
		}
	}
}

// simpleAddress is a fast path in front of net/mail; it must agree with it
// whenever it answers.
func checkSimpleAddress(t *testing.T, v string) {
	got, ok := simpleAddress(v)
	if !ok {
		return
	}
	l, err := addrParser.ParseList(v)
	if err != nil || len(l) != 1 || l[0].Address != got {
		t.Errorf("simpleAddress(%q) = %q; net/mail says %v, %v", v, got, l, err)
	}
}

func TestSimpleAddress(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string // "" when the fast path must decline
	}{
		{"alice@example.com", "alice@example.com"},
		{"  Alice.B+tag@Example.COM ", "Alice.B+tag@Example.COM"},
		{`"Example Billing" <billing@example.com>`, "billing@example.com"},
		{"Bob Jensen <bob@customer-shop.org>", "bob@customer-shop.org"},
		{"<root@localhost>", "root@localhost"},
		{"John Q. Public <jqp@example.com>", ""},       // obsolete phrase: net/mail
		{`"a\"b" <x@example.com>`, ""},                 // escaped quote: net/mail
		{"=?UTF-8?Q?J=C3=BCrgen?= <j@example.de>", ""}, // encoded word: net/mail
		{"a@example.com, b@example.com", ""},
		{"a..b@example.com", ""},
		{".a@example.com", ""},
		{"a@example.com.", ""},
		{"Group: a@example.com;", ""},
		{"user@[192.0.2.1]", ""},
		{"(comment) a@example.com", ""},
		{"Jürgen <j@example.de>", ""},
		{"", ""},
	} {
		got, ok := simpleAddress(tt.in)
		if !ok {
			got = ""
		}
		if got != tt.want {
			t.Errorf("simpleAddress(%q) = %q, %v; want %q", tt.in, got, ok, tt.want)
		}
		checkSimpleAddress(t, tt.in)
	}
}

func FuzzSimpleAddress(f *testing.F) {
	for _, s := range []string{"a@b.c", `"N" <a@b.c>`, "N M <a@b>", "<a@b>", "a.b@c", `"x\" <a@b>`} {
		f.Add(s)
	}
	f.Fuzz(checkSimpleAddress)
}
