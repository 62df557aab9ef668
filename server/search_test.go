package server

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// consoleSession logs in to the relay's console at base.
func consoleSession(t *testing.T, base string) func(path string) (int, string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.PostForm(base+"/login", url.Values{"name": {"op"}, "password": {testPassword}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || len(jar.Cookies(resp.Request.URL)) == 0 {
		t.Fatalf("console login: %d", resp.StatusCode)
	}
	return func(path string) (int, string) {
		t.Helper()
		resp, err := hc.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
}

var decisionLink = regexp.MustCompile(`<a href="/decision\?id=([0-9A-Z]{26})">`)

// TestDecisionSearchAfterTraffic: decisions taken over SMTP are found in
// the console by id, sender (envelope or From header), recipient, rule,
// action, client and time, newest first, each linked to its decision
// page; and the message the smarthost cannot take is on the queue page.
func TestDecisionSearchAfterTraffic(t *testing.T) {
	k := newSink(t)
	cfg := testConfig(t, k)
	cfg.Delivery.Smarthost.Addr = freePort(t) // nobody listens: the messages stay queued
	addr := freePort(t)
	cfg.Web = WebConfig{Listen: addr, Admins: []WebAdmin{{Name: "op", PasswordHash: testHash}}}
	start := time.Now().UTC()
	r := startRelay(t, cfg, testRules)

	idIn := regexp.MustCompile(`[0-9A-Z]{26}`)
	c := r.dial(t, "submission")
	login(t, c, "ops")
	text, err := send(c, "bulk@acme.test", []string{"bob@example.org"}, message("news@acme-mail.test", "bob@example.org", "hello"))
	accepted := idIn.FindString(text)
	if err != nil || accepted == "" {
		t.Fatalf("accepted message: %q %v", text, err)
	}
	text, err = send(c, "bulk@acme.test", []string{"carol@example.net"}, message("bulk@acme.test", "carol@example.net", "[review] this"))
	held := idIn.FindString(text)
	if err != nil || held == "" {
		t.Fatalf("held message: %q %v", text, err)
	}
	c2 := r.dial(t, "submission")
	login(t, c2, "billing")
	_, err = send(c2, "x@elsewhere.test", []string{"dave@example.com"}, message("x@elsewhere.test", "dave@example.com", "hi"))
	code, _, text := smtpCode(err)
	refused := idIn.FindString(text)
	if code != 550 || refused == "" {
		t.Fatalf("refusal: %d %q", code, text)
	}

	get := consoleSession(t, "http://"+addr)
	search := func(q url.Values) []string {
		t.Helper()
		st, body := get("/search?" + q.Encode())
		if st != 200 {
			t.Fatalf("search %v: %d\n%s", q, st, body)
		}
		var ids []string
		for _, m := range decisionLink.FindAllStringSubmatch(body, -1) {
			ids = append(ids, m[1])
		}
		return ids
	}
	minute := func(t time.Time) string { return t.UTC().Format("2006-01-02T15:04") }
	for _, tt := range []struct {
		q    url.Values
		want []string
	}{
		{url.Values{"id": {refused}}, []string{refused}},
		{url.Values{"sender": {"bulk@acme"}}, []string{held, accepted}},
		{url.Values{"sender": {"news@acme-mail.test"}}, []string{accepted}}, // the From header
		{url.Values{"rcpt": {"carol@"}}, []string{held}},
		{url.Values{"rule": {"acl"}}, []string{refused}},
		{url.Values{"rule": {"review"}}, []string{held}},
		{url.Values{"action": {"accept"}}, []string{accepted}},
		{url.Values{"action": {"reject"}, "client": {"billing"}}, []string{refused}},
		{url.Values{"from": {minute(start)}}, []string{refused, held, accepted}},
		{url.Values{"to": {minute(start.Add(-2 * time.Minute))}}, nil},
		{url.Values{"sender": {"nobody@"}}, nil},
	} {
		got := search(tt.q)
		if strings.Join(got, " ") != strings.Join(tt.want, " ") {
			t.Errorf("search %v: %v, want %v", tt.q, got, tt.want)
		}
	}
	if st, body := get("/decision?id=" + refused); st != 200 || !strings.Contains(body, "<b>acl</b>") {
		t.Errorf("the linked decision page: %d", st)
	}

	// The accepted message waits in the queue, its recipient pending
	// after a failed attempt.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, body := get("/queue")
		if st == 200 && strings.Contains(body, accepted) && strings.Contains(body, "bob@example.org: <b>pending</b>") &&
			strings.Contains(body, "bulk@acme.test") && !strings.Contains(body, "<td>0</td>") {
			if strings.Contains(body, held) {
				t.Error("a held message is on the queue page")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue page never showed the failed attempt:\n%s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
