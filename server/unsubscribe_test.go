package server

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestOneClickUnsubscribe(t *testing.T) {
	k := newSink(t)
	cfg := testConfig(t, k)
	cfg.Unsubscribe = UnsubscribeConfig{Listen: "127.0.0.1:0", URL: "https://relay.test/unsubscribe", Stamp: true}
	cfg.Accounts = append(cfg.Accounts, Account{Name: "other", Domains: []string{"other.test"}, Users: []User{{Name: "other-app", PasswordHash: testHash}}})
	r := startRelay(t, cfg, `rules:
  - unsubscribed: 'in_list("unsubscribes", rcpt) => block 550 5.7.1 "Email address is on account''s Unsubscribe list."'
`)
	c := r.dial(t, "submission")
	login(t, c, "ops")
	if _, err := send(c, "x@acme.test", []string{"Bob@Example.org"}, message("x@acme.test", "bob@example.org", "news")); err != nil {
		t.Fatal(err)
	}
	got := string(k.wait(t, 1, 10*time.Second)[0].Data)
	m := regexp.MustCompile(`List-Unsubscribe: <https://relay\.test/unsubscribe/([A-Za-z0-9_.-]+)>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("no one-click headers:\n%s", got)
	}
	base := "http://" + r.srv.UnsubscribeAddr.String() + "/unsubscribe/"
	// GET (a mail scanner following the link) only shows the page.
	resp, err := http.Get(base + m[1])
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), `<form method="post">`) || !strings.Contains(string(page), "bob@example.org") {
		t.Errorf("GET: %d\n%s", resp.StatusCode, page)
	}
	if _, err := send(c, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", "news 2")); err != nil {
		t.Errorf("a GET unsubscribed: %v", err)
	}
	// A tampered link is refused.
	tampered := strings.Replace(m[1], m[1][:4], "AAAA", 1)
	resp, _ = http.PostForm(base+tampered, url.Values{"List-Unsubscribe": {"One-Click"}})
	if resp.StatusCode != 400 {
		t.Errorf("tampered link: %d", resp.StatusCode)
	}
	// RFC 8058's one-click POST.
	resp, err = http.Post(base+m[1], "application/x-www-form-urlencoded", strings.NewReader("List-Unsubscribe=One-Click"))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("POST: %v %v", resp, err)
	}
	_, err = send(c, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", "news 3"))
	if code, _, text := smtpCode(err); code != 550 || !strings.HasPrefix(text, "Email address is on account's Unsubscribe list.") {
		t.Errorf("after unsubscribing: %v", err)
	}
	// It was acme's mail the recipient stopped: another account may still write.
	c2 := r.dial(t, "submission")
	login(t, c2, "other-app")
	if _, err := send(c2, "y@other.test", []string{"bob@example.org"}, message("y@other.test", "bob@example.org", "other")); err != nil {
		t.Errorf("another account's mail: %v", err)
	}
}
