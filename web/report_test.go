package web

import (
	"context"
	"net/http"
	"net/http/httptest"
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
