package server

import (
	"context"
	"fmt"
	"net/http"

	"github.com/emersion/go-smtp"

	"github.com/sluicemail/sluice/engine"
	"github.com/sluicemail/sluice/web"
)

// newWeb builds the HTTP side when the config asks for it: report pages
// (web.listen) and the one-click unsubscribe endpoint.
func (s *Server) newWeb(cfg *Config) error {
	if cfg.Web.Listen == "" && cfg.Web.AdminListen == "" && cfg.Unsubscribe.Listen == "" {
		return nil
	}
	var key []byte
	if cfg.Web.PublicURL != "" {
		ctx, cancel := storeCtx(context.Background())
		defer cancel()
		var err error
		if key, err = web.LinkKey(ctx, s.store, cfg.Web.LinkKey); err != nil {
			return err
		}
	}
	var console http.Handler
	if c := s.newConsole(cfg); c != nil {
		console = c
	}
	w, err := web.New(web.Options{
		Listen: cfg.Web.Listen, AdminListen: cfg.Web.AdminListen, PublicURL: cfg.Web.PublicURL,
		LinkKey: key, ReportDays: cfg.Web.ReportDays, PublicFacts: cfg.Web.PublicFacts,
		Store: s.store, Decision: s.webDecision, Rule: s.webRule,
		Unsubscribe: web.Unsubscribe{Listen: cfg.Unsubscribe.Listen, Key: s.unsubKey, Add: s.unsubscribed},
		Metrics:     s.MetricsHandler(), Console: console, Now: s.opts.Now, Log: s.log,
	})
	s.web = w
	return err
}

// startWeb opens the web listeners; they close when ctx ends.
func (s *Server) startWeb(ctx context.Context) ([]Listening, error) {
	if s.web == nil {
		return nil, nil
	}
	if err := s.web.Start(ctx); err != nil {
		return nil, err
	}
	s.UnsubscribeAddr, s.WebAddr = s.web.UnsubscribeAddr, s.web.Addr
	var out []Listening
	if s.web.Addr != nil {
		out = append(out, Listening{Addr: s.web.Addr, Mode: "web (http)"})
	}
	if s.web.AdminAddr != nil {
		out = append(out, Listening{Addr: s.web.AdminAddr, Mode: "web admin (http)"})
	}
	if s.UnsubscribeAddr != nil && s.UnsubscribeAddr != s.web.Addr {
		out = append(out, Listening{Addr: s.UnsubscribeAddr, Mode: "unsubscribe (http)"})
	}
	return out, nil
}

func (s *Server) webDecision(ctx context.Context, id string) (*web.Decision, error) {
	d, err := LookupDecision(ctx, s.store, id)
	if err != nil || d == nil {
		return nil, err
	}
	out := &web.Decision{ID: d.ID, At: d.At, From: d.From, Phase: d.Phase, Action: d.Action, Code: d.Code,
		Enhanced: d.Enhanced, Text: d.Text, Score: d.Score, Rule: d.Rule}
	for _, h := range d.Fired {
		out.Fired = append(out.Fired, web.Hit{Rule: h.Rule, Action: h.Action, Score: h.Score, Shadow: h.Shadow, Evidence: h.Evidence})
	}
	return out, nil
}

func (s *Server) webRule(name string) (web.Rule, bool) {
	r, ok := s.rules.Current().Rule(name)
	if !ok {
		return web.Rule{}, false
	}
	return web.Rule{Description: r.Description, Advice: r.Advice, Class: r.Class}, true
}

// smtpError is the reply of a refusal a rule or threshold decided.
func (s *Server) smtpError(r *engine.Reply) *smtp.SMTPError {
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: enhanced(r.Enhanced), Message: s.ruleText(r.Text, r.ID)}
}

// ruleText is replyText for a refusal a rule or threshold decided: with
// web.public_url set it ends with the signed link to its report (SPEC 8).
func (s *Server) ruleText(text, id string) string {
	t := replyText(text, id)
	if s.web != nil {
		if u := s.web.ReportURL(id); u != "" {
			t += fmt.Sprintf(" See %s", u)
		}
	}
	return t
}
