package web

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestDecisionQueryMatch(t *testing.T) {
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	d := DecisionSummary{ID: "01ABCDEFGHJKMNPQRSTVWXYZ00", At: at, From: "bounce@Mail.Acme.test", HeaderFrom: "news@acme.test",
		Rcpts: []string{"bob@example.org", "ann@example.net"}, Action: "reject", Rule: "acl", Rules: []string{"caps", "acl"}, User: "ops", IP: "192.0.2.7"}
	for _, tt := range []struct {
		q    DecisionQuery
		want bool
	}{
		{DecisionQuery{}, true},
		{DecisionQuery{ID: "01abcdefghjkmnpqrstvwxyz00"}, true},
		{DecisionQuery{ID: "01ABCDEFGHJKMNPQRSTVWXYZ01"}, false},
		{DecisionQuery{Sender: "mail.acme"}, true},
		{DecisionQuery{Sender: "NEWS@"}, true}, // the From header
		{DecisionQuery{Sender: "bob@"}, false},
		{DecisionQuery{Rcpt: "ann@example"}, true},
		{DecisionQuery{Rcpt: "acme"}, false},
		{DecisionQuery{Rule: "CAPS"}, true}, // a fired rule
		{DecisionQuery{Rule: "ca"}, false},  // rules match whole
		{DecisionQuery{Action: "reject", Client: "192.0.2."}, true},
		{DecisionQuery{Client: "ops"}, true},
		{DecisionQuery{Action: "accept"}, false},
		{DecisionQuery{From: at, To: at}, true},
		{DecisionQuery{From: at.Add(time.Second)}, false},
		{DecisionQuery{To: at.Add(-time.Second)}, false},
	} {
		if got := tt.q.Match(d); got != tt.want {
			t.Errorf("%+v: %v, want %v", tt.q, got, tt.want)
		}
	}
}

// TestSearchPage: the form is a GET that wants a session; results come
// newest first, 50 a page, each linked to its decision, everything
// escaped.
func TestSearchPage(t *testing.T) {
	f := newFake()
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	for i := range 120 {
		f.found = append(f.found, DecisionSummary{ID: fmt.Sprintf("01SEARCH%018d", 119-i), At: at.Add(-time.Duration(i) * time.Minute),
			From: "x" + evil + "@acme.test", Rcpts: []string{"r" + evil + "@x.test"}, Action: "reject", Code: 550, Rule: "acl" + evil, Phase: "mail"})
	}
	c := newConsoleServer(t, f, io.Discard)
	if st, _ := c.do("GET", "/search?sender=acme", nil); st != http.StatusSeeOther {
		t.Fatalf("search without a session: %d", st)
	}
	c.login("ops", "s3cret")
	st, body := c.do("GET", "/search", nil)
	if st != 200 || !strings.Contains(body, `<form method="get" action="/search"`) || strings.Contains(body, "No decision matches") {
		t.Errorf("empty form: %d\n%s", st, body)
	}
	st, body = c.do("GET", "/search?sender=ACME.test&action=reject", nil)
	if st != 200 || strings.Count(body, `<a href="/decision?id=01SEARCH`) != searchPage {
		t.Fatalf("page 1: %d, %d results", st, strings.Count(body, `<a href="/decision?id=01SEARCH`))
	}
	if strings.Contains(body, "<script>") || !strings.Contains(body, "x&lt;script&gt;alert(1)&lt;/script&gt;@acme.test") {
		t.Error("results not escaped")
	}
	if i, j := strings.Index(body, "01SEARCH000000000000000119"), strings.Index(body, "01SEARCH000000000000000118"); i < 0 || j < i {
		t.Error("results not newest first")
	}
	next := `/search?action=reject&amp;page=2&amp;sender=ACME.test`
	if !strings.Contains(body, `href="`+next+`" rel="next"`) || strings.Contains(body, `rel="prev"`) {
		t.Fatalf("page 1 links:\n%s", body)
	}
	_, body = c.do("GET", "/search?action=reject&page=3&sender=ACME.test", nil)
	if n := strings.Count(body, `<a href="/decision?id=01SEARCH`); n != 20 || strings.Contains(body, `rel="next"`) || !strings.Contains(body, `rel="prev"`) {
		t.Errorf("page 3: %d results", n)
	}
	// a time range (UTC minutes, the end minute included) and no match
	q := url.Values{"from": {"2026-11-23T09:58"}, "to": {"2026-11-23T09:59"}}
	if _, body = c.do("GET", "/search?"+q.Encode(), nil); strings.Count(body, `<a href="/decision?id=01SEARCH`) != 2 {
		t.Errorf("time range: %d results", strings.Count(body, `<a href="/decision?id=01SEARCH`))
	}
	if _, body = c.do("GET", "/search?rule=nope", nil); !strings.Contains(body, "No decision matches.") {
		t.Error("no match not said")
	}
	if st, _ = c.do("GET", "/search?from=yesterday", nil); st != http.StatusBadRequest {
		t.Errorf("a bad time: %d", st)
	}
}

// TestQueuePage lists each queued message and its recipients' states,
// escaped, with the retry and delete form (TestConsoleQueueActions).
func TestQueuePage(t *testing.T) {
	f := newFake()
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	f.queue = []Queued{{ID: "01QUEUE0000000000000000000", From: "s" + evil + "@acme.test", Received: at, Attempts: 3, NextAttempt: at.Add(time.Hour), Node: "relay.test",
		Rcpts: []QueuedRcpt{{Addr: "a@x.test", Status: "pending", Code: 451, Enhanced: "4.7.1", Detail: "try later " + evil, Remote: "mx.x.test"},
			{Addr: "b@x.test", Status: "delivered", Code: 250}}}}
	c := newConsoleServer(t, f, io.Discard)
	if st, _ := c.do("GET", "/queue", nil); st != http.StatusSeeOther {
		t.Fatalf("queue without a session: %d", st)
	}
	c.login("ops", "s3cret")
	st, body := c.do("GET", "/queue", nil)
	for _, want := range []string{"01QUEUE0000000000000000000", "s&lt;script&gt;", "a@x.test: <b>pending</b> 451 4.7.1", "try later &lt;script&gt;", "(mx.x.test)",
		"b@x.test: <b>delivered</b>", "<td>3</td>", "2026-11-23 11:00:00", "relay.test"} {
		if !strings.Contains(body, want) {
			t.Errorf("queue page lacks %q", want)
		}
	}
	if st != 200 || strings.Contains(body, "<script>") || !strings.Contains(body, `action="/queue"`) {
		t.Errorf("queue page: %d\n%s", st, body)
	}
	f.queue = nil
	if _, body = c.do("GET", "/queue", nil); !strings.Contains(body, "The queue is empty.") {
		t.Error("an empty queue not said")
	}
}
