package web

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/sluicemail/sluice/store"
)

// Admin is an operator who may log in to the console.
type Admin struct {
	Name, PasswordHash string
}

// Held is a message in the relay's holding area.
type Held struct {
	ID, From, Subject, Reason, User, Node string
	Rcpts                                 []string
	Rules                                 []string
	Received                              time.Time
	Size                                  int
	Score                                 float64
}

// RulesStatus is what the rules page shows.
type RulesStatus struct {
	Files    []string
	Phases   []PhaseRules
	At       time.Time // of the last reload attempt
	OK       bool
	Checksum string
	Problems []string
	Reloads  int
	Failures int
}

// PhaseRules are the rules that run at one SMTP phase, in order.
type PhaseRules struct {
	Phase string
	Rules []RuleInfo
}

// RuleInfo is one rule of the live set.
type RuleInfo struct {
	Name, Where, When, Then, Description string
	Shadow                               bool
}

// Relay is what the console asks of the relay it runs in.
type Relay interface {
	Held(ctx context.Context) ([]Held, error)
	// Release delivers a held message; an inbound one is learned as ham.
	Release(ctx context.Context, id string) error
	DeleteHeld(ctx context.Context, id string) error
	// DeleteHeldAsSpam learns an inbound held message as spam, then
	// deletes it; a message it could not learn is kept.
	DeleteHeldAsSpam(ctx context.Context, id string) error
	// ListNames are the dynamic lists the rules use.
	ListNames() []string
	ListEntries(ctx context.Context, list string) ([]store.Entry, error)
	ListAdd(ctx context.Context, e store.Entry) error
	ListRemove(ctx context.Context, list, key string) (bool, error)
	// Decision reads a decision record; nil, nil when it is gone.
	Decision(ctx context.Context, id string) (*Decision, error)
	// SearchDecisions lists the recent decisions matching q, newest
	// first, skipping the first offset matches and returning at most
	// limit; more says whether there were further matches.
	SearchDecisions(ctx context.Context, q DecisionQuery, offset, limit int) (found []DecisionSummary, more bool, err error)
	// Queue lists the messages waiting for delivery, oldest first.
	Queue(ctx context.Context) ([]Queued, error)
	// RetryQueued makes a queued message's next attempt now (one being
	// delivered at that moment is being tried already); DeleteQueued
	// removes it without a bounce, and fails for one being delivered.
	RetryQueued(ctx context.Context, id string) error
	DeleteQueued(ctx context.Context, id string) error
	Reviews(ctx context.Context) ([]Review, error)
	Review(ctx context.Context, id string) (*Review, error)
	AnswerReview(ctx context.Context, id, text string) (*Review, error)
	RulesStatus() RulesStatus
}

// ConsoleOptions configure the operator console.
type ConsoleOptions struct {
	Admins []Admin
	Relay  Relay
	// Secure marks the session cookie Secure (public_url is https).
	Secure bool
	// TrustedProxies may say, in X-Forwarded-Proto and X-Forwarded-For,
	// that the request came over https and from which address.
	TrustedProxies []netip.Prefix
	// AllowList is the list an "allow" from a review adds the sender to.
	AllowList string
	Now       func() time.Time
	Log       *slog.Logger
}

const (
	sessionCookie  = "sluice_session"
	sessionIdle    = time.Hour
	sessionMax     = 12 * time.Hour
	loginFailures  = 5 // per address and loginWindow
	loginWindow    = 15 * time.Minute
	maxSessions    = 1000
	dummyBcryptTag = "$2a$%02d$meAX0AV6c2i4XVjx36D0eOsluicedummysluicedummysluicedum"
)

type session struct {
	admin, csrf       string
	created, lastSeen time.Time
}

// Console is the operator's console: an http.Handler.
type Console struct {
	opts   ConsoleOptions
	admins map[string]string
	cost   int
	mux    *http.ServeMux

	mu       sync.Mutex
	sessions map[string]*session
	failures map[string][]time.Time
}

// NewConsole builds the console.
func NewConsole(opts ConsoleOptions) *Console {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.AllowList == "" {
		opts.AllowList = "allow"
	}
	c := &Console{opts: opts, admins: map[string]string{}, sessions: map[string]*session{}, failures: map[string][]time.Time{}}
	for _, a := range opts.Admins {
		c.admins[a.Name] = a.PasswordHash
		if k, err := bcrypt.Cost([]byte(a.PasswordHash)); err == nil {
			c.cost = max(c.cost, k)
		}
	}
	if c.cost == 0 {
		c.cost = bcrypt.DefaultCost
	}
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /login", c.loginPage)
	mux.HandleFunc("POST /login", c.login)
	mux.HandleFunc("POST /logout", c.auth(c.logout))
	mux.HandleFunc("GET /{$}", c.auth(c.reviewsPage))
	mux.HandleFunc("GET /reviews/{id}", c.auth(c.reviewPage))
	mux.HandleFunc("POST /reviews/{id}", c.auth(c.reviewAct))
	mux.HandleFunc("GET /hold", c.auth(c.holdPage))
	mux.HandleFunc("POST /hold", c.auth(c.holdAct))
	mux.HandleFunc("GET /lists", c.auth(c.listsPage))
	mux.HandleFunc("POST /lists", c.auth(c.listsAct))
	mux.HandleFunc("GET /decision", c.auth(c.decisionPage))
	mux.HandleFunc("GET /search", c.auth(c.searchPage))
	mux.HandleFunc("GET /queue", c.auth(c.queuePage))
	mux.HandleFunc("POST /queue", c.auth(c.queueAct))
	mux.HandleFunc("GET /rules", c.auth(c.rulesPage))
	c.mux = mux
	return c
}

func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) { c.mux.ServeHTTP(w, r) }

// clientAddr is the request's address, or the one a trusted proxy names.
func (c *Console) clientAddr(r *http.Request) string {
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	if c.trusted(r) {
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			parts := strings.Split(xff, ",")
			return strings.TrimSpace(parts[len(parts)-1])
		}
	}
	return host
}

func (c *Console) trusted(r *http.Request) bool {
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range c.opts.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (c *Console) secure(r *http.Request) bool {
	return c.opts.Secure || r.TLS != nil || (c.trusted(r) && r.Header.Get("X-Forwarded-Proto") == "https")
}

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// checkPassword costs the same bcrypt work for an unknown name, a wrong
// password, and a hash of a lower cost than the others' (as the relay's
// SMTP AUTH does): the time of a refusal does not tell which names exist.
func (c *Console) checkPassword(name, password string) bool {
	pw := []byte(password)
	if hash, ok := c.admins[name]; ok {
		if k, err := bcrypt.Cost([]byte(hash)); err == nil && k <= c.cost {
			if bcrypt.CompareHashAndPassword([]byte(hash), pw) == nil {
				return true
			}
			for ; k < c.cost; k++ {
				bcrypt.CompareHashAndPassword(fmt.Appendf(nil, dummyBcryptTag, k), pw)
			}
			return false
		}
	}
	bcrypt.CompareHashAndPassword(fmt.Appendf(nil, dummyBcryptTag, c.cost), pw)
	return false
}

// throttled reports whether addr failed to log in too often lately.
func (c *Console) throttled(addr string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	fs := c.failures[addr]
	fs = slices.DeleteFunc(fs, func(t time.Time) bool { return now.Sub(t) > loginWindow })
	c.failures[addr] = fs
	if len(fs) == 0 {
		delete(c.failures, addr)
	}
	return len(fs) >= loginFailures
}

func (c *Console) failed(addr string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.failures) > 10000 { // an attack from many addresses: forget the old ones
		clear(c.failures)
	}
	c.failures[addr] = append(c.failures[addr], now)
}

type loginView struct {
	Name, Problem string
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if c.session(r) != nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	c.render(w, http.StatusOK, "console_login.html", loginView{})
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	now, addr := c.opts.Now(), c.clientAddr(r)
	if c.throttled(addr, now) {
		c.opts.Log.Warn("console: login throttled", "addr", addr)
		w.Header().Set("Retry-After", "900")
		c.render(w, http.StatusTooManyRequests, "console_login.html", loginView{Problem: "Too many failed logins from your address; try again in 15 minutes."})
		return
	}
	if err := r.ParseForm(); err != nil {
		c.render(w, http.StatusBadRequest, "console_login.html", loginView{Problem: "The form could not be read."})
		return
	}
	name, pw := r.PostForm.Get("name"), r.PostForm.Get("password")
	if len(name) > 256 || len(pw) > 1024 || !c.checkPassword(name, pw) {
		c.failed(addr, now)
		c.opts.Log.Warn("console: login failed", "admin", name, "addr", addr)
		c.render(w, http.StatusUnauthorized, "console_login.html", loginView{Name: name, Problem: "Wrong name or password."})
		return
	}
	id := randomToken()
	c.mu.Lock()
	for k, s := range c.sessions {
		if c.expired(s, now) {
			delete(c.sessions, k)
		}
	}
	if len(c.sessions) >= maxSessions {
		c.mu.Unlock()
		c.render(w, http.StatusServiceUnavailable, "console_login.html", loginView{Problem: "Too many sessions are open."})
		return
	}
	c.sessions[id] = &session{admin: name, csrf: randomToken(), created: now, lastSeen: now}
	c.mu.Unlock()
	c.opts.Log.Info("console: login", "admin", name, "addr", addr)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: id, Path: "/", HttpOnly: true, Secure: c.secure(r),
		SameSite: http.SameSiteStrictMode, MaxAge: int(sessionMax / time.Second)})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (c *Console) expired(s *session, now time.Time) bool {
	return now.Sub(s.lastSeen) > sessionIdle || now.Sub(s.created) > sessionMax
}

// session returns the request's live session (a copy), nil if none.
func (c *Console) session(r *http.Request) *session {
	ck, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil
	}
	now := c.opts.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sessions[ck.Value]
	if s == nil {
		return nil
	}
	if c.expired(s, now) {
		delete(c.sessions, ck.Value)
		return nil
	}
	s.lastSeen = now
	cp := *s
	return &cp
}

type ctxKey struct{}

// auth lets only a logged-in admin through, and on POST only with the
// session's CSRF token.
func (c *Console) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := c.session(r)
		if s == nil {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/login", http.StatusSeeOther)
				return
			}
			c.fail(w, http.StatusUnauthorized, "Not logged in", "Log in to the console first.")
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 256<<10)
			if err := r.ParseForm(); err != nil {
				c.fail(w, http.StatusBadRequest, "Request not understood", "The form could not be read.")
				return
			}
			if subtle.ConstantTimeCompare([]byte(r.PostForm.Get("csrf")), []byte(s.csrf)) != 1 {
				c.opts.Log.Warn("console: bad CSRF token", "admin", s.admin, "path", r.URL.Path)
				c.fail(w, http.StatusForbidden, "Please send the form again", "The form did not come from this session's console pages.")
				return
			}
		}
		h(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, s)))
	}
}

func sess(r *http.Request) *session { return r.Context().Value(ctxKey{}).(*session) }

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	ck, _ := r.Cookie(sessionCookie)
	c.mu.Lock()
	delete(c.sessions, ck.Value)
	c.mu.Unlock()
	c.opts.Log.Info("console: logout", "admin", sess(r).admin)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", HttpOnly: true, Secure: c.secure(r), SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// page is what every console page has: the admin, the CSRF token, a
// notice after an action, and its own data.
type page struct {
	Title, Admin, CSRF, Notice, Nav string
	Data                            any
}

func (c *Console) show(w http.ResponseWriter, r *http.Request, code int, nav, title, tmpl string, data any) {
	s := sess(r)
	c.render(w, code, tmpl, page{Title: title, Admin: s.admin, CSRF: s.csrf, Notice: r.URL.Query().Get("done"), Nav: nav, Data: data})
}

func (c *Console) render(w http.ResponseWriter, code int, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if err := pages.ExecuteTemplate(w, name, data); err != nil {
		c.opts.Log.Warn("console: page", "page", name, "err", err.Error())
	}
}

func (c *Console) fail(w http.ResponseWriter, code int, title, text string) {
	c.render(w, code, "problem.html", problem{title, text})
}

func (c *Console) oops(w http.ResponseWriter, r *http.Request, what string, err error) {
	c.opts.Log.Error("console: "+what, "admin", sess(r).admin, "err", err.Error())
	c.fail(w, http.StatusServiceUnavailable, "Could not "+what, err.Error())
}

// done redirects after an action (post/redirect/get) with a notice.
func done(w http.ResponseWriter, r *http.Request, to, notice string) {
	sep := "?"
	if strings.Contains(to, "?") {
		sep = "&"
	}
	http.Redirect(w, r, to+sep+"done="+url.QueryEscape(notice), http.StatusSeeOther)
}
