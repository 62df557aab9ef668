package server

import (
	"bytes"
	"context"
	"encoding/json"
	"mime"
	"net/mail"
	"regexp"
	"slices"
	"strings"

	"github.com/sluicemail/sluice/classify"
	"github.com/sluicemail/sluice/engine"
	"github.com/sluicemail/sluice/queue"
	"github.com/sluicemail/sluice/store"
	"github.com/sluicemail/sluice/web"
)

// consoleRelay is the relay as the console sees it (web.Relay).
type consoleRelay struct{ s *Server }

var _ web.Relay = consoleRelay{}

// newConsole is the operator console when the config names admins.
func (s *Server) newConsole(cfg *Config) *web.Console {
	if len(cfg.Web.Admins) == 0 {
		return nil
	}
	admins := make([]web.Admin, len(cfg.Web.Admins))
	for i, a := range cfg.Web.Admins {
		admins[i] = web.Admin{Name: a.Name, PasswordHash: a.PasswordHash}
	}
	return web.NewConsole(web.ConsoleOptions{Admins: admins, Relay: consoleRelay{s},
		Secure:         strings.HasPrefix(cfg.Web.PublicURL, "https://"),
		TrustedProxies: cfg.Web.trustedProxies, AllowList: cfg.Web.AllowList, Now: s.opts.Now, Log: s.log})
}

func (c consoleRelay) Held(context.Context) ([]web.Held, error) {
	s := c.s
	ids, err := s.spool.List(queue.AreaHold)
	if err != nil {
		return nil, err
	}
	node := s.cfg.Load().Hostname
	out := []web.Held{}
	for _, id := range ids {
		e, err := s.spool.Envelope(queue.AreaHold, id)
		if err != nil {
			continue // released or deleted meanwhile
		}
		h := web.Held{ID: e.ID, From: e.From, Reason: e.Reason, User: e.User, Node: node, Rules: e.Rules,
			Received: e.Received, Size: e.Size, Score: e.Score}
		for _, r := range e.Rcpts {
			h.Rcpts = append(h.Rcpts, r.Addr)
		}
		if raw, err := s.spool.Message(queue.AreaHold, id); err == nil {
			if m, err := mail.ReadMessage(bytes.NewReader(raw)); err == nil {
				h.Subject = m.Header.Get("Subject")
				if d, err := new(mime.WordDecoder).DecodeHeader(h.Subject); err == nil {
					h.Subject = d
				}
			}
		}
		out = append(out, h)
	}
	return out, nil
}

// Release delivers a held message and learns it as ham: the operator
// judged it wanted mail.
func (c consoleRelay) Release(ctx context.Context, id string) error {
	s := c.s
	env, _ := s.spool.Envelope(queue.AreaHold, id)
	msg, _ := s.spool.Message(queue.AreaHold, id) // read before the release moves it
	now := s.opts.Now()
	if err := s.spool.Release(id, now); err != nil {
		return err
	}
	s.delivery.Enqueue(id, now)
	if env != nil && msg != nil {
		// The release stands whatever the store says.
		if res, err := s.learnHeld(ctx, env, msg, classify.LearnHam); err != nil {
			s.log.Warn("console: release not learned", "id", id, "err", err.Error())
		} else if res != "" {
			s.log.Info("console: release learned as ham", "id", id, "result", res)
		}
	}
	return nil
}

func (c consoleRelay) DeleteHeld(_ context.Context, id string) error {
	return c.s.spool.Remove(queue.AreaHold, id)
}

// DeleteHeldAsSpam learns a held message as spam, then deletes it; one it
// could not learn is kept for the operator to try again.
func (c consoleRelay) DeleteHeldAsSpam(ctx context.Context, id string) error {
	s := c.s
	env, err := s.spool.Envelope(queue.AreaHold, id)
	if err != nil {
		return err
	}
	msg, err := s.spool.Message(queue.AreaHold, id)
	if err != nil {
		return err
	}
	res, err := s.learnHeld(ctx, env, msg, classify.LearnSpam)
	if err != nil {
		return err
	}
	if res != "" {
		s.log.Info("console: held message learned as spam", "id", id, "result", res)
	}
	return s.spool.Remove(queue.AreaHold, id)
}

// inList finds the constant list names a rule's expression reads.
var inList = regexp.MustCompile(`in_list\(\s*"([^"\\]+)"`)

// ListNames are the lists the rules read (in_list with a constant name)
// or fill (list actions), and the allow list.
func (c consoleRelay) ListNames() []string {
	var out []string
	add := func(l string) {
		if !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	for _, r := range c.s.rules.Current().Rules() {
		if r.Then.Kind == engine.ActList {
			add(r.Then.List)
		}
		for _, m := range inList.FindAllStringSubmatch(r.When, -1) {
			add(m[1])
		}
	}
	if a := c.s.cfg.Load().Web.AllowList; a != "" {
		add(a)
	}
	slices.Sort(out)
	return out
}

func (c consoleRelay) ListEntries(ctx context.Context, list string) ([]store.Entry, error) {
	return c.s.store.ListEntries(ctx, list, c.s.opts.Now())
}

func (c consoleRelay) ListAdd(ctx context.Context, e store.Entry) error {
	return c.s.store.ListAdd(ctx, e)
}

func (c consoleRelay) ListRemove(ctx context.Context, list, key string) (bool, error) {
	return c.s.store.ListRemove(ctx, list, key)
}

func (c consoleRelay) Decision(ctx context.Context, id string) (*web.Decision, error) {
	d, err := LookupDecision(ctx, c.s.store, id)
	if err != nil || d == nil {
		return nil, err
	}
	out := &web.Decision{ID: d.ID, At: d.At, From: d.From, Phase: d.Phase, Action: d.Action, Code: d.Code,
		Enhanced: d.Enhanced, Text: d.Text, Score: d.Score, Rule: d.Rule,
		User: d.User, IP: d.IP, Helo: d.Helo, Delivery: d.Delivery, Rcpts: d.Rcpts}
	for _, h := range d.Fired {
		out.Fired = append(out.Fired, web.Hit{Rule: h.Rule, Action: h.Action, Score: h.Score, Shadow: h.Shadow,
			Evidence: h.Evidence, Phase: h.Phase, Rcpt: h.Rcpt})
	}
	if a := d.Auth; a != nil {
		for _, x := range []struct {
			name string
			c    *AuthCheck
		}{{"spf", a.SPF}, {"dkim", a.DKIM}, {"dmarc", a.DMARC}, {"arc", a.ARC}} {
			if x.c == nil {
				continue
			}
			dom := x.c.Domain
			if dom == "" && len(x.c.Domains) > 0 {
				dom = strings.Join(x.c.Domains, ", ")
			}
			if x.c.Policy != "" {
				dom += " p=" + x.c.Policy
			}
			out.Auth = append(out.Auth, web.AuthResult{Check: x.name, Result: x.c.Result, Domain: dom, Detail: x.c.Detail})
		}
	}
	return out, nil
}

// SearchDecisions walks the index of recent decisions, newest first.
func (c consoleRelay) SearchDecisions(ctx context.Context, q web.DecisionQuery, offset, limit int) ([]web.DecisionSummary, bool, error) {
	var out []web.DecisionSummary
	more, skip := false, offset
	err := c.s.store.IndexScan(ctx, decisionIndex, q.From, q.To, func(e store.IndexEntry) bool {
		var de decisionEntry
		if json.Unmarshal(e.Data, &de) != nil {
			return true
		}
		d := web.DecisionSummary{ID: e.ID, At: e.At, From: de.From, HeaderFrom: de.HeaderFrom, Rcpts: de.Rcpts, Phase: de.Phase,
			Action: de.Action, Code: de.Code, Rule: de.Rule, Rules: de.Fired, User: de.User, IP: de.IP}
		if !q.Match(d) {
			return true
		}
		if skip > 0 {
			skip--
			return true
		}
		if len(out) == limit {
			more = true
			return false
		}
		out = append(out, d)
		return q.ID == "" || len(out) == 0 // an id is one decision
	})
	return out, more, err
}

// Queue lists this node's queue area.
func (c consoleRelay) Queue(context.Context) ([]web.Queued, error) {
	s := c.s
	ids, err := s.spool.List(queue.AreaQueue)
	if err != nil {
		return nil, err
	}
	node := s.cfg.Load().Hostname
	out := []web.Queued{}
	for _, id := range ids {
		e, err := s.spool.Envelope(queue.AreaQueue, id)
		if err != nil {
			continue // delivered meanwhile
		}
		q := web.Queued{ID: e.ID, From: e.From, User: e.User, Received: e.Received, Size: e.Size, Attempts: e.Attempts,
			NextAttempt: e.NextAttempt, Node: node}
		for _, r := range e.Rcpts {
			q.Rcpts = append(q.Rcpts, web.QueuedRcpt{Addr: r.Addr, Status: r.Status, Detail: r.Detail, Remote: r.Remote,
				Code: r.Code, Enhanced: r.Enhanced, At: r.At})
		}
		out = append(out, q)
	}
	return out, nil
}

func (c consoleRelay) Reviews(ctx context.Context) ([]web.Review, error) {
	return web.ListReviews(ctx, c.s.store, c.s.opts.Now())
}

func (c consoleRelay) Review(ctx context.Context, id string) (*web.Review, error) {
	return web.GetReview(ctx, c.s.store, id)
}

func (c consoleRelay) AnswerReview(ctx context.Context, id, text string) (*web.Review, error) {
	return web.AnswerReview(ctx, c.s.store, id, text, c.s.opts.Now())
}

func (c consoleRelay) RulesStatus() web.RulesStatus {
	rs, st := c.s.rules.Current(), c.s.rules.Status()
	out := web.RulesStatus{Files: rs.Files(), At: st.At, OK: st.OK, Checksum: st.Checksum, Problems: st.Problems,
		Reloads: st.Reloads, Failures: st.Failures}
	for _, r := range rs.Rules() {
		ph := r.Phase.String()
		i := slices.IndexFunc(out.Phases, func(p web.PhaseRules) bool { return p.Phase == ph })
		if i < 0 {
			out.Phases = append(out.Phases, web.PhaseRules{Phase: ph})
			i = len(out.Phases) - 1
		}
		out.Phases[i].Rules = append(out.Phases[i].Rules, web.RuleInfo{Name: r.Name, Where: r.Where(), When: r.When,
			Then: r.Then.String(), Description: r.Description, Shadow: r.Shadow})
	}
	slices.SortStableFunc(out.Phases, func(a, b web.PhaseRules) int { return phaseOrder(a.Phase) - phaseOrder(b.Phase) })
	return out
}

func phaseOrder(p string) int {
	i := slices.Index([]string{"connect", "helo", "mail", "rcpt", "data"}, p)
	if i < 0 {
		return 99
	}
	return i
}
