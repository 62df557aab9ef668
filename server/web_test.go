package server

import (
	"context"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicemail/sluice/web"
)

func get(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func noRedirect() *http.Client {
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// TestReportLink: a refusal by a rule carries the signed link to its
// report; the page names the reason, the public evidence and the advice,
// and takes a review request (SPEC 8).
func TestReportLink(t *testing.T) {
	k := newSink(t)
	cfg := testConfig(t, k)
	addr := freePort(t)
	cfg.Web = WebConfig{Listen: addr, PublicURL: "http://" + addr, PublicFacts: []string{"size", "subject"}}
	var skew atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	r := startRelayWith(t, cfg, `rules:
  - name: acl-offer
    when: subject contains "offer" and size > 10 and client_ip != ""
    then: 'block 550 5.7.1 "[ACL] Blocked"'
    description: Offers may only come from the marketing account.
    advice: Send offers through the marketing account's SMTP user.
`, Options{Now: now})
	c := r.dial(t, "submission")
	login(t, c, "ops")
	subject := `<b>offer</b><script>alert(1)</script>`
	_, err := send(c, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", subject))
	code, _, text := smtpCode(err)
	m := regexp.MustCompile(`^\[ACL\] Blocked \[([0-9A-Z]{26})\] See (http://` + regexp.QuoteMeta(addr) + `/report/([0-9A-Z]{26})\?sig=([A-Za-z0-9_-]{22}))$`).FindStringSubmatch(text)
	if code != 550 || m == nil || m[1] != m[3] {
		t.Fatalf("refusal %d %q: want the report link", code, text)
	}
	link, id := m[2], m[1]

	st, page := get(t, link)
	for _, want := range []string{"Not allowed to send this", "Offers may only come from the marketing account.",
		"Send offers through the marketing account&#39;s SMTP user.", "<dt>size</dt>", "<dt>subject</dt>",
		html.EscapeString(subject), "[ACL] Blocked", `name="viewport"`, `<label for="contact">`} {
		if !strings.Contains(page, want) {
			t.Errorf("report page lacks %q", want)
		}
	}
	for _, not := range []string{"<script>", "client_ip", "127.0.0.1", "bob@example.org"} {
		if strings.Contains(page, not) {
			t.Errorf("report page shows %q", not)
		}
	}
	if st != 200 {
		t.Errorf("GET report: %d", st)
	}
	if st, _ := get(t, strings.Replace(link, "sig=", "sig=A", 1)); st != 403 {
		t.Errorf("tampered sig: %d, want 403", st)
	}
	if st, _ := get(t, "http://"+addr+"/report/"+id); st != 403 {
		t.Errorf("no sig: %d, want 403", st)
	}

	base := "http://" + addr + "/report/" + id + "/review"
	post := func(v url.Values) (int, string, *http.Response) {
		resp, err := noRedirect().PostForm(base, v)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp
	}
	sig, _ := url.QueryUnescape(m[4])
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page)
	if csrf == nil {
		t.Fatal("no CSRF token on the form")
	}
	form := func(tok, contact, msg string) url.Values {
		return url.Values{"sig": {sig}, "csrf": {tok}, "contact": {contact}, "message": {msg}}
	}
	if st, _, _ := post(form("", "ann@acme.test", "hi")); st != 403 {
		t.Errorf("review without CSRF token: %d, want 403", st)
	}
	if st, _, _ := post(form("1700000000.AAAAAAAAAAAAAAAAAAAAAA", "ann@acme.test", "hi")); st != 403 {
		t.Errorf("review with a wrong CSRF token: %d, want 403", st)
	}
	// A refused form shows the message back, escaped.
	if st, body, _ := post(form(csrf[1], "not an address", "<script>x</script>")); st != 400 || strings.Contains(body, "<script>") || !strings.Contains(body, "&lt;script&gt;x&lt;/script&gt;") {
		t.Errorf("bad contact: %d\n%s", st, body)
	}
	st, _, resp := post(form(csrf[1], "ann@acme.test", "It was <i>wanted</i> mail"))
	if st != 303 || !strings.Contains(resp.Header.Get("Location"), "review=") {
		t.Fatalf("review: %d %v", st, resp.Header)
	}
	rvs, err := web.ListReviews(context.Background(), r.srv.store, time.Now())
	if err != nil || len(rvs) != 1 || rvs[0].Decision != id || rvs[0].Contact != "ann@acme.test" || rvs[0].Message != "It was <i>wanted</i> mail" || rvs[0].Status != "open" {
		t.Errorf("reviews %+v %v", rvs, err)
	}
	// A flood from one address is throttled.
	var last int
	for range 4 {
		last, _, _ = post(form(csrf[1], "ann@acme.test", "again"))
	}
	if last != 429 {
		t.Errorf("review flood: %d, want 429", last)
	}

	// report_days later the link has expired.
	skew.Store(int64(31 * 24 * time.Hour))
	if st, _ := get(t, link); st != 410 {
		t.Errorf("expired link: %d, want 410", st)
	}
}

// TestReportLinkOnlyForRules: protocol refusals carry no link, and no
// link is made without public_url.
func TestReportLinkOnlyForRules(t *testing.T) {
	k := newSink(t)
	cfg := testConfig(t, k)
	addr := freePort(t)
	cfg.Web = WebConfig{Listen: addr, PublicURL: "http://" + addr}
	r := startRelay(t, cfg, "rules: []\n")
	c := r.dial(t, "plain")
	if err := c.Mail("x@example.org", nil); err != nil {
		t.Fatal(err)
	}
	err := c.Rcpt("bob@example.org", nil)
	if code, _, text := smtpCode(err); code != 554 || strings.Contains(text, "See ") {
		t.Errorf("relay access denied: %d %q", code, text)
	}
}
