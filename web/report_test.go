package web

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluicemail/sluice/engine"
)

// TestPurgedDecision: a link whose decision record is gone answers 410,
// and one signed with another key 403.
func TestPurgedDecision(t *testing.T) {
	s, err := New(Options{Listen: "x", PublicURL: "https://relay.test", LinkKey: []byte("0123456789abcdef0123456789abcdef"),
		Decision: func(context.Context, string) (*Decision, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	id := nextID(time.Now())
	for _, c := range []struct {
		url  string
		want int
	}{{"/report/" + id + "?sig=" + s.Sig(id), http.StatusGone}, {"/report/" + id + "?sig=AAAAAAAAAAAAAAAAAAAAAA", http.StatusForbidden}} {
		w := httptest.NewRecorder()
		s.Handler().ServeHTTP(w, httptest.NewRequest("GET", c.url, nil))
		if w.Code != c.want {
			t.Errorf("%s: %d, want %d", c.url, w.Code, c.want)
		}
	}
}

func TestClass(t *testing.T) {
	for _, c := range []struct {
		d    Decision
		rule Rule
		want string
	}{
		{Decision{Phase: "data", Code: 550}, Rule{}, "spam"},
		{Decision{Phase: "mail", Code: 550}, Rule{}, "access"},
		{Decision{Rule: "r", Code: 550}, Rule{Class: "list"}, "list"},
		{Decision{Rule: "r", Code: 421, Fired: []Hit{{Rule: "r", Evidence: ev("hourly_sent")}}}, Rule{}, "rate"},
		{Decision{Rule: "r", Code: 550, Fired: []Hit{{Rule: "r", Evidence: ev("hourly_attempts")}}}, Rule{}, "abuse"},
		{Decision{Rule: "r", Code: 550, Fired: []Hit{{Rule: "r", Evidence: ev(`in_list("blocked_users", smtp_user)`)}}}, Rule{}, "abuse"},
		{Decision{Rule: "r", Code: 550, Fired: []Hit{{Rule: "r", Evidence: ev(`in_list("blocked", mail_from)`)}}}, Rule{}, "list"},
		{Decision{Rule: "r", Code: 550, Fired: []Hit{{Rule: "r", Evidence: ev("authenticated", "domain_allowed")}}}, Rule{}, "access"},
	} {
		if got := Class(&c.d, c.rule); got != c.want {
			t.Errorf("%+v: %s, want %s", c.d, got, c.want)
		}
	}
}

func nextID(now time.Time) string { return engine.NewIDSource().Next(now) }

func ev(names ...string) []engine.Evidence {
	var out []engine.Evidence
	for _, n := range names {
		out = append(out, engine.Evidence{Name: n, Value: true})
	}
	return out
}

// TestReportHidesClassifierTokens: a report page shows spam_probability
// when the operator made it public, never the tokens behind it, even when
// public_facts names them.
func TestReportHidesClassifierTokens(t *testing.T) {
	id := nextID(time.Now())
	d := &Decision{ID: id, At: time.Now(), Phase: "data", Action: "reject", Code: 554, Enhanced: "5.7.1", Text: "Spam message rejected", Score: 14,
		Fired: []Hit{{Rule: "classifier-spam", Score: 5, Evidence: []engine.Evidence{
			{Name: "spam_probability", Value: 0.999}, {Name: "spam_tokens", Value: []string{"subject:zzsecretword=0.99"}}}}}}
	s, err := New(Options{Listen: "x", PublicURL: "https://relay.test", LinkKey: []byte("0123456789abcdef0123456789abcdef"),
		PublicFacts: []string{"score", "spam_probability", "spam_tokens"},
		Decision:    func(context.Context, string) (*Decision, error) { return d, nil }})
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/report/"+id+"?sig="+s.Sig(id), nil))
	body := w.Body.String()
	if w.Code != http.StatusOK || !strings.Contains(body, "0.999") {
		t.Fatalf("report: %d, want 200 showing spam_probability 0.999:\n%s", w.Code, body)
	}
	if strings.Contains(body, "zzsecretword") || strings.Contains(body, "spam_tokens") {
		t.Errorf("the report page shows the classifier's tokens:\n%s", body)
	}
}
