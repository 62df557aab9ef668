package web

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/sluicemail/sluice/store"
)

// fakeRelay is a relay of a few held messages, lists and reviews.
type fakeRelay struct {
	mu       sync.Mutex
	held     []Held
	released []string
	spam     []string
	lists    map[string][]store.Entry
	reviews  []Review
	dec      map[string]*Decision
	found    []DecisionSummary // newest first
	queue    []Queued
	retried  []string
}

func (f *fakeRelay) Held(context.Context) ([]Held, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Held(nil), f.held...), nil
}
func (f *fakeRelay) take(id string) bool {
	for i, h := range f.held {
		if h.ID == id {
			f.held = append(f.held[:i], f.held[i+1:]...)
			return true
		}
	}
	return false
}
func (f *fakeRelay) Release(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.take(id) {
		f.released = append(f.released, id)
	}
	return nil
}
func (f *fakeRelay) DeleteHeld(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.take(id)
	return nil
}
func (f *fakeRelay) DeleteHeldAsSpam(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.take(id) {
		f.spam = append(f.spam, id)
	}
	return nil
}
func (f *fakeRelay) ListNames() []string { return []string{"allow", "blocked"} }
func (f *fakeRelay) ListEntries(_ context.Context, l string) ([]store.Entry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]store.Entry(nil), f.lists[l]...), nil
}
func (f *fakeRelay) ListAdd(_ context.Context, e store.Entry) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists[e.List] = append(f.lists[e.List], e)
	return nil
}
func (f *fakeRelay) ListRemove(_ context.Context, l, k string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, e := range f.lists[l] {
		if e.Key == k {
			f.lists[l] = append(f.lists[l][:i], f.lists[l][i+1:]...)
			return true, nil
		}
	}
	return false, nil
}
func (f *fakeRelay) Decision(_ context.Context, id string) (*Decision, error) { return f.dec[id], nil }
func (f *fakeRelay) SearchDecisions(_ context.Context, q DecisionQuery, offset, limit int) ([]DecisionSummary, bool, error) {
	var out []DecisionSummary
	for _, d := range f.found {
		if q.Match(d) {
			out = append(out, d)
		}
	}
	out = out[min(offset, len(out)):]
	return out[:min(limit, len(out))], len(out) > limit, nil
}
func (f *fakeRelay) Queue(context.Context) ([]Queued, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Queued(nil), f.queue...), nil
}
func (f *fakeRelay) RetryQueued(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.retried = append(f.retried, id)
	return nil
}
func (f *fakeRelay) DeleteQueued(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, q := range f.queue {
		if q.ID == id {
			f.queue = append(f.queue[:i], f.queue[i+1:]...)
			return nil
		}
	}
	return errors.New("no such message")
}
func (f *fakeRelay) Reviews(context.Context) ([]Review, error) { return f.reviews, nil }
func (f *fakeRelay) Review(_ context.Context, id string) (*Review, error) {
	for _, r := range f.reviews {
		if r.ID == id {
			return &r, nil
		}
	}
	return nil, ErrNoReview
}
func (f *fakeRelay) AnswerReview(_ context.Context, id, text string) (*Review, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.reviews {
		if f.reviews[i].ID == id {
			f.reviews[i].Answer, f.reviews[i].Status = text, "answered"
			return &f.reviews[i], nil
		}
	}
	return nil, ErrNoReview
}
func (f *fakeRelay) RulesStatus() RulesStatus {
	return RulesStatus{Files: []string{"rules.yaml"}, OK: false, Problems: []string{"rules.yaml:3:1: <bad> rule"},
		Phases: []PhaseRules{{Phase: "data", Rules: []RuleInfo{{Name: "hold-offers", When: `subject contains "<offer>"`, Then: "hold"}}}}}
}

const evil = `<script>alert(1)</script>`

func newFake() *fakeRelay {
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	return &fakeRelay{
		held: []Held{{ID: "01HOLD0000000000000000000A", From: "a" + evil + "@x.test", Subject: "Subj " + evil, Reason: "held " + evil, Received: at},
			{ID: "01HOLD0000000000000000000B", From: "b@x.test", Subject: "two", Received: at}},
		lists:   map[string][]store.Entry{"blocked": {{List: "blocked", Key: "a" + evil + "@x.test", Added: at}}},
		reviews: []Review{{ID: "R1", Decision: "01HOLD0000000000000000000A", Contact: "c@x.test", Message: "please " + evil, At: at, Status: "open"}},
		dec: map[string]*Decision{"01HOLD0000000000000000000A": {ID: "01HOLD0000000000000000000A", At: at, From: "a" + evil + "@x.test", Phase: "data", Action: "hold",
			Code: 250, Text: "held " + evil, Rule: "hold-offers", Fired: []Hit{{Rule: "hold-offers", Action: "hold", Phase: "data"}},
			Auth: []AuthResult{{Check: "spf", Result: "pass", Domain: "x.test"}}}},
	}
}

type consoleClient struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newConsoleServer(t *testing.T, f *fakeRelay, log io.Writer) *consoleClient {
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	c := NewConsole(ConsoleOptions{Admins: []Admin{{Name: "ops", PasswordHash: string(hash)}}, Relay: f,
		Log: slog.New(slog.NewTextHandler(log, nil))})
	srv := httptest.NewServer(securityHeaders(c))
	t.Cleanup(srv.Close)
	jar, _ := cookiejar.New(nil)
	return &consoleClient{t: t, base: srv.URL, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (c *consoleClient) do(method, path string, form url.Values) (int, string) {
	c.t.Helper()
	var resp *http.Response
	var err error
	if method == "GET" {
		resp, err = c.c.Get(c.base + path)
	} else {
		resp, err = c.c.PostForm(c.base+path, form)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (c *consoleClient) login(name, pw string) int {
	st, _ := c.do("POST", "/login", url.Values{"name": {name}, "password": {pw}})
	return st
}

func (c *consoleClient) csrf() string {
	c.t.Helper()
	_, body := c.do("GET", "/hold", nil)
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body)
	if m == nil {
		c.t.Fatalf("no CSRF token on the page:\n%s", body)
	}
	return m[1]
}

// TestConsoleRefusesWithoutSession: every page and action wants a
// session, every POST its CSRF token, and logout ends the session.
func TestConsoleRefusesWithoutSession(t *testing.T) {
	f := newFake()
	var log bytes.Buffer
	c := newConsoleServer(t, f, &log)
	for _, p := range []string{"/", "/hold", "/lists", "/decision", "/rules", "/reviews/R1"} {
		if st, _ := c.do("GET", p, nil); st != http.StatusSeeOther {
			t.Errorf("GET %s without a session: %d, want a redirect to /login", p, st)
		}
	}
	release := url.Values{"op": {"release"}, "id": {"01HOLD0000000000000000000A"}}
	if st, _ := c.do("POST", "/hold", release); st != http.StatusUnauthorized {
		t.Errorf("POST /hold without a session: %d", st)
	}
	if st := c.login("ops", "wrong"); st != http.StatusUnauthorized {
		t.Errorf("wrong password: %d", st)
	}
	if st := c.login("nobody", "s3cret"); st != http.StatusUnauthorized {
		t.Errorf("unknown admin: %d", st)
	}
	if st := c.login("ops", "s3cret"); st != http.StatusSeeOther {
		t.Fatalf("login: %d", st)
	}
	tok := c.csrf()
	other := "A"
	if tok[0] == 'A' {
		other = "B"
	}
	for _, bad := range []string{"", "x", other + tok[1:]} {
		v := url.Values{"op": {"release"}, "id": {"01HOLD0000000000000000000A"}, "csrf": {bad}}
		if st, _ := c.do("POST", "/hold", v); st != http.StatusForbidden {
			t.Errorf("POST /hold with CSRF %q: %d, want 403", bad, st)
		}
	}
	if len(f.released) != 0 {
		t.Fatalf("released without a valid token: %v", f.released)
	}
	release.Set("csrf", tok)
	if st, _ := c.do("POST", "/hold", release); st != http.StatusSeeOther || len(f.released) != 1 {
		t.Errorf("release with the token: %d %v", st, f.released)
	}
	if !strings.Contains(log.String(), `msg="console: hold released" admin=ops id=01HOLD0000000000000000000A`) {
		t.Errorf("action not logged with the admin's name:\n%s", log.String())
	}
	cookies := c.c.Jar.Cookies(mustURL(c.base))
	if st, _ := c.do("POST", "/logout", url.Values{"csrf": {tok}}); st != http.StatusSeeOther {
		t.Errorf("logout: %d", st)
	}
	// The old cookie, replayed, no longer works.
	u := mustURL(c.base)
	c.c.Jar.SetCookies(u, cookies)
	if st, _ := c.do("GET", "/hold", nil); st != http.StatusSeeOther {
		t.Errorf("GET after logout: %d", st)
	}
	release.Set("id", "01HOLD0000000000000000000B")
	if st, _ := c.do("POST", "/hold", release); st != http.StatusUnauthorized || len(f.released) != 1 {
		t.Errorf("POST after logout: %d %v", st, f.released)
	}
}

func mustURL(s string) *url.URL { u, _ := url.Parse(s); return u }

// TestConsoleCookie: the session cookie is HttpOnly, SameSite=Strict,
// and Secure behind a trusted TLS proxy.
func TestConsoleCookie(t *testing.T) {
	c := newConsoleServer(t, newFake(), io.Discard)
	resp, err := c.c.PostForm(c.base+"/login", url.Values{"name": {"ops"}, "password": {"s3cret"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	sc := resp.Header.Get("Set-Cookie")
	if !strings.Contains(sc, "HttpOnly") || !strings.Contains(sc, "SameSite=Strict") || strings.Contains(sc, "Secure") {
		t.Errorf("cookie over plain http: %s", sc)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	for _, tc := range []struct {
		opts ConsoleOptions
		xfp  bool
		want bool
	}{
		{ConsoleOptions{Secure: true}, false, true},
		{ConsoleOptions{TrustedProxies: []netipPrefix{mustPrefix("192.0.2.0/24")}}, true, true},
		{ConsoleOptions{}, true, false}, // an untrusted header is ignored
	} {
		tc.opts.Admins, tc.opts.Relay, tc.opts.Log = []Admin{{"a", string(hash)}}, newFake(), slog.New(slog.DiscardHandler)
		h := NewConsole(tc.opts)
		req := httptest.NewRequest("POST", "/login", strings.NewReader("name=a&password=pw"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if tc.xfp {
			req.Header.Set("X-Forwarded-Proto", "https")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if got := strings.Contains(rec.Header().Get("Set-Cookie"), "Secure"); got != tc.want || rec.Code != 303 {
			t.Errorf("%+v: %d %s", tc, rec.Code, rec.Header().Get("Set-Cookie"))
		}
	}
}

// TestConsoleLoginThrottled: after 5 failures in 15 minutes an address
// may not try again, even with the right password.
func TestConsoleLoginThrottled(t *testing.T) {
	c := newConsoleServer(t, newFake(), io.Discard)
	for range loginFailures {
		c.login("ops", "nope")
	}
	if st := c.login("ops", "s3cret"); st != http.StatusTooManyRequests {
		t.Errorf("login after %d failures: %d, want 429", loginFailures, st)
	}
}

// TestConsoleEscapes: HTML in a subject, sender, reason, review text,
// list key or rule is shown as text on every page.
func TestConsoleEscapes(t *testing.T) {
	f := newFake()
	c := newConsoleServer(t, f, io.Discard)
	c.login("ops", "s3cret")
	for _, p := range []string{"/", "/hold", "/lists?name=blocked", "/decision?id=01HOLD0000000000000000000A", "/rules", "/reviews/R1"} {
		st, body := c.do("GET", p, nil)
		if st != 200 {
			t.Errorf("GET %s: %d", p, st)
		}
		if strings.Contains(body, "<script>") || strings.Contains(body, "<bad>") || strings.Contains(body, "<offer>") {
			t.Errorf("GET %s: unescaped HTML\n%s", p, body)
		}
		if p != "/rules" && !strings.Contains(body, "&lt;script&gt;") {
			t.Errorf("GET %s: the hostile text is not shown escaped\n%s", p, body)
		}
	}
	// The review page shows the decision as explain does, and its actions.
	_, body := c.do("GET", "/reviews/R1", nil)
	for _, want := range []string{"hold-offers", "<dt>spf</dt>", "Release the held message", "from blocked", "to allow"} {
		if !strings.Contains(body, want) {
			t.Errorf("review page lacks %q", want)
		}
	}
	tok := c.csrf()
	for _, op := range []string{"release", "unlist", "allow", "answer"} {
		v := url.Values{"csrf": {tok}, "op": {op}, "list": {"blocked"}, "answer": {"ok " + evil}}
		if st, _ := c.do("POST", "/reviews/R1", v); st != http.StatusSeeOther {
			t.Errorf("review %s: %d", op, st)
		}
	}
	if len(f.released) != 1 || len(f.lists["blocked"]) != 0 || len(f.lists["allow"]) != 1 || f.reviews[0].Status != "answered" {
		t.Errorf("after the review's actions: released %v, lists %v, review %+v", f.released, f.lists, f.reviews[0])
	}
	// Bulk delete of what is left.
	if st, _ := c.do("POST", "/hold", url.Values{"csrf": {tok}, "op": {"delete"}, "id": {"01HOLD0000000000000000000B"}}); st != 303 || len(f.held) != 0 {
		t.Errorf("bulk delete: %d %v", st, f.held)
	}
}

type netipPrefix = netip.Prefix

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// TestConsoleQueueActions: the queue page offers retry-now and delete of
// the checked messages, only with the session's CSRF token, and says what
// failed.
func TestConsoleQueueActions(t *testing.T) {
	f := newFake()
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	f.queue = []Queued{{ID: "01QUEUE000000000000000000A", From: "a@x.test", Received: at, Attempts: 2, NextAttempt: at.Add(time.Hour),
		Rcpts: []QueuedRcpt{{Addr: "r@y.test", Status: "pending", Code: 451, Detail: "try later"}}},
		{ID: "01QUEUE000000000000000000B", From: "b@x.test", Received: at}}
	var log bytes.Buffer
	c := newConsoleServer(t, f, &log)
	if st := c.login("ops", "s3cret"); st != http.StatusSeeOther {
		t.Fatalf("login: %d", st)
	}
	st, page := c.do("GET", "/queue", nil)
	for _, want := range []string{`name="id" value="01QUEUE000000000000000000A"`, `id="queue-retry"`, `id="queue-delete"`, "try later"} {
		if st != http.StatusOK || !strings.Contains(page, want) {
			t.Errorf("queue page lacks %s: %d", want, st)
		}
	}
	tok := c.csrf()
	retry := url.Values{"op": {"retry"}, "id": {"01QUEUE000000000000000000A"}}
	if st, _ := c.do("POST", "/queue", retry); st != http.StatusForbidden || len(f.retried) != 0 {
		t.Errorf("retry without the CSRF token: %d %v", st, f.retried)
	}
	retry.Set("csrf", tok)
	resp, err := c.c.PostForm(c.base+"/queue", retry)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.Contains(loc, url.QueryEscape("Retried now: 1.")) || len(f.retried) != 1 {
		t.Errorf("retry: %d %q %v", resp.StatusCode, loc, f.retried)
	}
	del := url.Values{"op": {"delete"}, "id": {"01QUEUE000000000000000000B", "01NOSUCH"}, "csrf": {tok}}
	resp, err = c.c.PostForm(c.base+"/queue", del)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := url.QueryEscape("Deleted (no bounce sent): 1; failed: 01NOSUCH (no such message).")
	if loc := resp.Header.Get("Location"); !strings.Contains(loc, want) {
		t.Errorf("delete: %q, want the notice %s", loc, want)
	}
	if q, _ := f.Queue(context.Background()); len(q) != 1 || q[0].ID != "01QUEUE000000000000000000A" {
		t.Errorf("after delete: %v", q)
	}
	if !strings.Contains(log.String(), `msg="console: queue delete" admin=ops id=01QUEUE000000000000000000B`) {
		t.Errorf("delete not logged with the admin:\n%s", log.String())
	}
	if st, _ := c.do("POST", "/queue", url.Values{"op": {"bounce"}, "id": {"01QUEUE000000000000000000A"}, "csrf": {tok}}); st != http.StatusBadRequest {
		t.Errorf("unknown op: %d", st)
	}
}

// TestConsoleDeleteAsSpam: "Delete selected as spam" asks the relay to
// learn and delete each checked message, and says how many it did; an
// unknown action is refused.
func TestConsoleDeleteAsSpam(t *testing.T) {
	f := newFake()
	var log strings.Builder
	c := newConsoleServer(t, f, &log)
	c.login("ops", "s3cret")
	tok := c.csrf()
	resp, err := c.c.PostForm(c.base+"/hold", url.Values{"csrf": {tok}, "op": {"spam"}, "id": {"01HOLD0000000000000000000A", "01HOLD0000000000000000000B"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || len(f.spam) != 2 || len(f.held) != 0 || len(f.released) != 0 {
		t.Fatalf("delete as spam: %d, spam %v, held %v", resp.StatusCode, f.spam, f.held)
	}
	if loc := resp.Header.Get("Location"); loc != "/hold?done=Deleted+as+spam%3A+2." {
		t.Errorf("redirect to %q, want the notice of 2 deleted as spam", loc)
	}
	if !strings.Contains(log.String(), `msg="console: hold deleted as spam" admin=ops id=01HOLD0000000000000000000B`) {
		t.Errorf("not logged:\n%s", log.String())
	}
	if st, _ := c.do("POST", "/hold", url.Values{"csrf": {tok}, "op": {"learn"}, "id": {"x"}}); st != http.StatusBadRequest {
		t.Errorf("unknown action: %d, want 400", st)
	}
}
