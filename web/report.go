package web

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/sluicemail/sluice/builtins"
	"github.com/sluicemail/sluice/engine"
	"github.com/sluicemail/sluice/store"
)

// LinkKey is the key report links are signed with: the configured one,
// else one generated once and kept in the store, so that relays sharing a
// Redis store sign alike.
func LinkKey(ctx context.Context, st store.Store, configured string) ([]byte, error) {
	if configured != "" {
		return []byte(configured), nil
	}
	if k, err := st.Get(ctx, "web", "link_key"); err != nil || len(k) >= 32 {
		return k, err
	}
	k := make([]byte, 32)
	rand.Read(k)
	if err := st.Put(ctx, "web", "link_key", k, 0); err != nil {
		return nil, fmt.Errorf("web: keeping the link key: %w", err)
	}
	// Another relay may have written its key at the same moment: all use
	// whichever the store kept.
	return st.Get(ctx, "web", "link_key")
}

func mac(key []byte, parts ...string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(strings.Join(parts, "\n")))
	return m.Sum(nil)[:16]
}

// Sig is the signature of the report link of decision id.
func (s *Server) Sig(id string) string { return b64.EncodeToString(mac(s.opts.LinkKey, "report", id)) }

func (s *Server) sigOK(id, sig string) bool {
	got, err := b64.DecodeString(sig)
	return err == nil && hmac.Equal(got, mac(s.opts.LinkKey, "report", id))
}

// ReportURL is the signed link to the report of decision id, "" when
// report links are off.
func (s *Server) ReportURL(id string) string {
	if s.opts.PublicURL == "" || id == "" {
		return ""
	}
	return s.opts.PublicURL + "/report/" + url.PathEscape(id) + "?sig=" + s.Sig(id)
}

// expired reports whether the link of id is past report_days.
func (s *Server) expired(id string) bool {
	at, ok := engine.IDTime(id)
	return !ok || s.opts.Now().Sub(at) > time.Duration(s.opts.ReportDays)*24*time.Hour
}

// classes say what each reason class means to a sender, and what to do
// when the rule gives no advice.
var classes = map[string]struct{ Title, Means, Do string }{
	"spam":   {"Looks like spam", "The message's content or the way it was sent looked like unwanted mail to our filters.", "Check the message for the points below, then send it again. If it was wanted mail, request a review."},
	"abuse":  {"Sending blocked for abuse", "The sending account kept sending far beyond its limits, so its mail is blocked for a while.", "Stop the traffic and find what sends it (a compromised password, a script in a loop), then request a review."},
	"rate":   {"Rate limit reached", "The sending account sent more than its limit allows in the time shown. This is temporary: your server retries on its own.", "Wait: the limit slides, and queued mail goes out as it frees. Spread large mailings over time."},
	"access": {"Not allowed to send this", "The account is not allowed to send this mail (the sender's domain, or the account's state).", "Send from an address of a domain your account may use, or ask your provider to enable the account."},
	"list":   {"Address on a list", "An address in this message is on a list that stops mail: a block list, an address that bounced, or a recipient who unsubscribed.", "Remove the address from your mailing list. If you believe it is there by mistake, request a review."},
}

// Class is the reason class of a decision: the deciding rule's class:, else
// derived from what it read and answered.
func Class(d *Decision, rule Rule) string {
	if rule.Class != "" {
		return rule.Class
	}
	if d.Rule == "" {
		if d.Phase == "data" {
			return "spam" // the score thresholds decided
		}
		return "access" // the relay itself: a disabled account
	}
	var reads []string
	for _, h := range d.Fired {
		if h.Rule == d.Rule {
			for _, e := range h.Evidence {
				reads = append(reads, e.Name)
			}
		}
	}
	has := func(sub ...string) bool {
		return slices.ContainsFunc(reads, func(n string) bool {
			return slices.ContainsFunc(sub, func(s string) bool { return strings.Contains(n, s) })
		})
	}
	switch {
	case has(`"blocked_users"`, "hourly_attempts") && d.Code >= 500:
		return "abuse"
	case has("hourly_sent", "daily_sent", "hourly_attempts", "bounce_rate", "complaint_rate", "unknown_recipients") || d.Code == 421:
		return "rate"
	case has("domain_allowed", `"disabled_users"`, "authenticated") || d.Code == 530 || strings.Contains(d.Text, "[ACL]"):
		return "access"
	case has("in_list", "any_listed"):
		return "list"
	}
	return "spam"
}

// fact is one piece of evidence as the page shows it.
type fact struct{ Name, Value string }

type reportPage struct {
	ID, Sig string
	At      string
	From    string
	Reply   string
	Class   string
	Title   string
	Means   string
	Reasons []string
	Facts   []fact
	Advice  string
	CSRF    string
	Sent    string // the id of the review just requested
	Problem string // what was wrong with a review request
	Contact string
	Message string
}

// report serves GET /report/ID?sig=SIG.
func (s *Server) report(w http.ResponseWriter, r *http.Request) {
	p, code := s.reportPage(r.Context(), r.PathValue("id"), r.URL.Query().Get("sig"))
	if p == nil {
		s.failReport(w, code)
		return
	}
	p.Sent = r.URL.Query().Get("review")
	s.render(w, http.StatusOK, "report.html", p)
}

func (s *Server) failReport(w http.ResponseWriter, code int) {
	switch code {
	case http.StatusForbidden:
		s.fail(w, code, "This link is not valid", "The link's signature does not match. Copy the whole link from the refusal your mail server reported, including the part after sig=.")
	case http.StatusGone:
		s.fail(w, code, "This report has expired", fmt.Sprintf("Reports are kept %d days after the decision. Send the message again; if it is refused, the new refusal carries a new link.", s.opts.ReportDays))
	default:
		s.fail(w, code, "Report unavailable", "The report cannot be shown right now. Try again in a few minutes.")
	}
}

// reportPage checks the link and builds the page; nil and the status code
// when it cannot be shown.
func (s *Server) reportPage(ctx context.Context, id, sig string) (*reportPage, int) {
	if !s.sigOK(id, sig) {
		return nil, http.StatusForbidden
	}
	if s.expired(id) {
		return nil, http.StatusGone
	}
	d, err := s.opts.Decision(ctx, id)
	if err != nil {
		s.opts.Log.Warn("web: report", "id", id, "err", err.Error())
		return nil, http.StatusServiceUnavailable
	}
	if d == nil {
		return nil, http.StatusGone // purged
	}
	var rule Rule
	if d.Rule != "" && s.opts.Rule != nil {
		rule, _ = s.opts.Rule(d.Rule)
	}
	class := Class(d, rule)
	p := &reportPage{ID: id, Sig: sig, At: d.At.UTC().Format("2 January 2006, 15:04 MST"), From: d.From, Class: class,
		Title: classes[class].Title, Means: classes[class].Means, Advice: rule.Advice, CSRF: s.csrfToken(id)}
	p.Reply = fmt.Sprintf("%d %s %s", d.Code, d.Enhanced, d.Text)
	if rule.Description != "" {
		p.Reasons = append(p.Reasons, rule.Description)
	}
	seen := map[string]bool{}
	if s.public["score"] && d.Score != 0 {
		p.Facts = append(p.Facts, fact{"score", fmt.Sprint(d.Score)})
		seen["score"] = true
	}
	for _, h := range d.Fired {
		if h.Shadow {
			continue
		}
		if h.Rule != d.Rule && s.opts.Rule != nil {
			if o, ok := s.opts.Rule(h.Rule); ok && o.Description != "" && h.Score != 0 && !slices.Contains(p.Reasons, o.Description) {
				p.Reasons = append(p.Reasons, o.Description) // scoring rules behind a threshold decision
			}
		}
		for _, e := range h.Evidence {
			// The classifier's tokens would teach a spammer what to
			// change: never shown to senders, whatever public_facts says.
			if s.public[e.Name] && !seen[e.Name] && e.Name != builtins.SpamTokensEvidence {
				seen[e.Name] = true
				p.Facts = append(p.Facts, fact{e.Name, fmt.Sprint(e.Value)})
			}
		}
	}
	if p.Advice == "" {
		p.Advice = rule.Description
	}
	if p.Advice == "" {
		p.Advice = classes[class].Do
	}
	return p, http.StatusOK
}
