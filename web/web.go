// Package web owns sluice's HTTP side: report pages for refused senders with
// their review requests, and the RFC 8058 one-click unsubscribe endpoint.
package web

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/sluicemail/sluice/engine"
	"github.com/sluicemail/sluice/store"
)

//go:embed templates static
var assets embed.FS

// pages are parsed once; templates are immutable after parsing.
var pages = template.Must(template.ParseFS(assets, "templates/*.html"))

// DefaultPublicFacts are the facts a report page shows when the config
// names none: what the sender did and how its mail authenticated, never
// who else is on a list, client addresses or message content.
func DefaultPublicFacts() []string {
	return []string{"score", "hourly_sent", "daily_sent", "hourly_attempts", "bounce_rate", "complaint_rate",
		"unknown_recipients", "rcpt_count", "size", "spf", "dkim", "dmarc", "dmarc_policy", "arc", "domain_allowed", "from_domain", "tls"}
}

// Options are what the relay gives the web server.
type Options struct {
	// Listen is the public HTTP address; AdminListen, when set, takes the
	// metrics and the console off it.
	Listen, AdminListen string
	// PublicURL is the base senders reach Listen by; "" turns report
	// links off.
	PublicURL string
	// LinkKey signs report links and review forms.
	LinkKey []byte
	// ReportDays is how long a report link works (default 30).
	ReportDays int
	// PublicFacts are the facts a report page may show (default
	// DefaultPublicFacts()).
	PublicFacts []string

	Store store.Store
	// Decision reads a decision record; nil, nil when it is gone.
	Decision func(ctx context.Context, id string) (*Decision, error)
	// Rule describes a rule of the live set; ok false if it is gone.
	Rule func(name string) (Rule, bool)

	Unsubscribe Unsubscribe

	// Metrics is mounted at /metrics, Console at /, on AdminListen if
	// set, else on Listen.
	Metrics, Console http.Handler

	Now func() time.Time
	Log *slog.Logger
}

// Decision is what a report page needs of a decision record.
type Decision struct {
	ID       string
	At       time.Time
	From     string
	Phase    string
	Action   string
	Code     int
	Enhanced string
	Text     string
	Score    float64
	Rule     string
	Fired    []Hit

	// What the console shows besides (as explain does).
	User, IP, Helo, Delivery string
	Rcpts                    []string
	Auth                     []AuthResult
}

// AuthResult is one authentication check's result in a decision.
type AuthResult struct {
	Check, Result, Domain, Detail string
}

// Hit is a rule that fired, with the facts it read.
type Hit struct {
	Rule     string
	Action   string
	Score    float64
	Shadow   bool
	Evidence []engine.Evidence
	// Phase and Rcpt (of a per-recipient rule), for the console.
	Phase, Rcpt string
}

// Rule is what a report page says of a rule.
type Rule struct {
	Description, Advice, Class string
}

// Server is the HTTP side of one relay.
type Server struct {
	opts   Options
	public map[string]bool
	ids    *engine.IDSource
	srvs   []*http.Server

	// Addr, AdminAddr and UnsubscribeAddr are where it listens once
	// started (nil when not).
	Addr, AdminAddr, UnsubscribeAddr net.Addr
}

// New checks the options; Start opens the listeners.
func New(opts Options) (*Server, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.ReportDays <= 0 {
		opts.ReportDays = 30
	}
	if opts.PublicFacts == nil {
		opts.PublicFacts = DefaultPublicFacts()
	}
	opts.PublicURL = strings.TrimSuffix(opts.PublicURL, "/")
	if opts.PublicURL != "" && len(opts.LinkKey) < 16 {
		return nil, errors.New("web: report links need a link key of at least 16 bytes")
	}
	s := &Server{opts: opts, public: map[string]bool{}, ids: engine.NewIDSource()}
	for _, f := range opts.PublicFacts {
		s.public[f] = true
	}
	return s, nil
}

// Handler is what Listen serves; with AdminListen it serves only report
// pages and unsubscribe links.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	if s.opts.PublicURL != "" {
		mux.HandleFunc("GET /report/{id}", s.report)
		mux.HandleFunc("POST /report/{id}/review", s.review)
	}
	if s.opts.Unsubscribe.Key != nil {
		mux.HandleFunc("/unsubscribe/{token}", s.unsubscribe)
	}
	if s.opts.AdminListen == "" {
		s.mountAdmin(mux)
	}
	return securityHeaders(mux)
}

// AdminHandler is what AdminListen serves.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	s.mountAdmin(mux)
	return securityHeaders(mux)
}

func (s *Server) mountAdmin(mux *http.ServeMux) {
	if s.opts.Metrics != nil {
		mux.Handle("/metrics", s.opts.Metrics)
	}
	if s.opts.Console != nil {
		mux.Handle("/", s.opts.Console)
	}
}

// securityHeaders keeps pages out of frames and off other sites' scripts:
// the pages need no JavaScript at all.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

// Start opens the listeners (Listen, AdminListen, and the unsubscribe
// endpoint's own when it differs from Listen) and serves until ctx ends or
// Close.
func (s *Server) Start(ctx context.Context) error {
	type l struct {
		addr string
		h    http.Handler
		set  *net.Addr
	}
	var ls []l
	if s.opts.Listen != "" {
		ls = append(ls, l{s.opts.Listen, s.Handler(), &s.Addr})
	}
	if s.opts.AdminListen != "" {
		ls = append(ls, l{s.opts.AdminListen, s.AdminHandler(), &s.AdminAddr})
	}
	if u := s.opts.Unsubscribe.Listen; u != "" && u != s.opts.Listen {
		mux := http.NewServeMux()
		mux.HandleFunc("/unsubscribe/{token}", s.unsubscribe)
		ls = append(ls, l{u, securityHeaders(mux), &s.UnsubscribeAddr})
	}
	for _, x := range ls {
		ln, err := net.Listen("tcp", x.addr)
		if err != nil {
			s.Close()
			return fmt.Errorf("web: listen %s: %w", x.addr, err)
		}
		*x.set = ln.Addr()
		srv := &http.Server{Handler: x.h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
			ErrorLog: slog.NewLogLogger(s.opts.Log.Handler(), slog.LevelWarn)}
		s.srvs = append(s.srvs, srv)
		go srv.Serve(ln)
	}
	if s.UnsubscribeAddr == nil && s.opts.Unsubscribe.Listen != "" {
		s.UnsubscribeAddr = s.Addr
	}
	go func() {
		<-ctx.Done()
		s.Close()
	}()
	return nil
}

// Close stops every listener.
func (s *Server) Close() {
	for _, srv := range s.srvs {
		srv.Close()
	}
}

// render writes a page; a template error after the header is only logged.
func (s *Server) render(w http.ResponseWriter, code int, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	if err := pages.ExecuteTemplate(w, name, data); err != nil {
		s.opts.Log.Warn("web: page", "page", name, "err", err.Error())
	}
}

// problem is the page of a refused request.
type problem struct {
	Title, Text string
}

func (s *Server) fail(w http.ResponseWriter, code int, title, text string) {
	s.render(w, code, "problem.html", problem{title, text})
}
