package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"

	"github.com/sluicemail/sluice/builtins"
	"github.com/sluicemail/sluice/engine"
	"github.com/sluicemail/sluice/mailauth"
	"github.com/sluicemail/sluice/store"
)

// Decision is the record the relay keeps of every decision it took, by
// decision id, for 30 days: what `sluice decision ID` shows when a
// customer quotes the id of a refusal, and how a bounce or complaint that
// comes back days later is charged to the sender of the original message.
type Decision struct {
	ID   string    `json:"id"`
	At   time.Time `json:"at"`
	User string    `json:"user,omitempty"`
	IP   string    `json:"ip,omitempty"`
	Helo string    `json:"helo,omitempty"`
	From string    `json:"from"`
	// HeaderFrom is the From header's address, once DATA was read.
	HeaderFrom string        `json:"header_from,omitempty"`
	Rcpts      []string      `json:"rcpts,omitempty"`
	Phase      string        `json:"phase"`
	Action     string        `json:"action"`
	Code       int           `json:"code"`
	Enhanced   string        `json:"enhanced,omitempty"`
	Text       string        `json:"text,omitempty"`
	Score      float64       `json:"score"`
	Rule       string        `json:"rule,omitempty"`
	Fired      []DecisionHit `json:"fired,omitempty"`
	// Delivery is what became of an accepted message that could not be
	// delivered and whose sender was not told (inbound mail).
	Delivery string `json:"delivery,omitempty"`
	// Outbound is the outbound fact for the message; nil in records
	// taken outside the rules.
	Outbound *bool `json:"outbound,omitempty"`
	// RDNS is the client's PTR name when a rule needed it (it comes from
	// the system's resolver, not the checks').
	RDNS *string `json:"rdns,omitempty"`
	// Auth are the authentication checks' results the rules used, and
	// DNS the answers the checks got (SPEC 6): with them the decision is
	// explained, and replayed as a fixture, without DNS.
	Auth *DecisionAuth    `json:"auth,omitempty"`
	DNS  *mailauth.DNSLog `json:"dns,omitempty"`
}

// DecisionAuth are the checks made for the message, each nil when no rule
// needed it (none is made for the record).
type DecisionAuth struct {
	SPF   *AuthCheck `json:"spf,omitempty"`
	DKIM  *AuthCheck `json:"dkim,omitempty"`
	DMARC *AuthCheck `json:"dmarc,omitempty"`
	ARC   *AuthCheck `json:"arc,omitempty"`
}

// AuthCheck is one check's result and why.
type AuthCheck struct {
	Result string `json:"result"`
	// Domain is what SPF checked (mail_from's domain, or the HELO
	// name), DMARC's From domain, a DKIM signature's d=.
	Domain   string `json:"domain,omitempty"`
	Selector string `json:"selector,omitempty"` // a DKIM signature's s=
	Policy   string `json:"policy,omitempty"`   // DMARC's
	// Domains are DKIM's d= that verified, or ARC's sealers, newest
	// first.
	Domains    []string    `json:"domains,omitempty"`
	Detail     string      `json:"detail,omitempty"`
	Signatures []AuthCheck `json:"signatures,omitempty"` // DKIM's, each
}

// DecisionHit is a rule that fired, with the facts it read: what the
// operator answering a customer needs to see.
type DecisionHit struct {
	Rule     string            `json:"rule"`
	Phase    string            `json:"phase,omitempty"`
	Action   string            `json:"action,omitempty"`
	Score    float64           `json:"score,omitempty"`
	Shadow   bool              `json:"shadow,omitempty"`
	Rcpt     string            `json:"rcpt,omitempty"`
	Evidence []engine.Evidence `json:"evidence,omitempty"`
}

const decisionTTL = 30 * 24 * time.Hour

// The store cannot list records: the console searches this index of the
// recent decisions instead, kept as long as the records and capped.
const (
	decisionIndex    = "decisions"
	decisionIndexMax = 100_000
)

// decisionEntry is a decision's line in the index: what a search matches
// on and lists, never message content.
type decisionEntry struct {
	From       string   `json:"f,omitempty"`
	HeaderFrom string   `json:"hf,omitempty"`
	Rcpts      []string `json:"r,omitempty"`
	Phase      string   `json:"p,omitempty"`
	Action     string   `json:"a"`
	Code       int      `json:"c,omitempty"`
	Rule       string   `json:"ru,omitempty"`
	Fired      []string `json:"fi,omitempty"`
	User       string   `json:"u,omitempty"`
	IP         string   `json:"ip,omitempty"`
}

func (s *Server) recordDecision(d Decision) {
	s.countDecision(d)
	d.At = s.opts.Now().UTC()
	b, _ := json.Marshal(d)
	ctx, cancel := storeCtx(context.Background())
	defer cancel()
	if err := s.store.Put(ctx, "decision", d.ID, b, decisionTTL); err != nil {
		s.metrics.StoreError("write")
		s.log.Warn("store: decision record", "id", d.ID, "err", err.Error())
		return
	}
	ie := decisionEntry{From: d.From, HeaderFrom: d.HeaderFrom, Rcpts: d.Rcpts, Phase: d.Phase, Action: d.Action,
		Code: d.Code, Rule: d.Rule, User: d.User, IP: d.IP}
	for _, h := range d.Fired {
		if !slices.Contains(ie.Fired, h.Rule) {
			ie.Fired = append(ie.Fired, h.Rule)
		}
	}
	b, _ = json.Marshal(ie)
	if err := s.store.IndexAdd(ctx, decisionIndex, store.IndexEntry{At: d.At, ID: d.ID, Data: b}, decisionIndexMax, decisionTTL); err != nil {
		s.metrics.StoreError("write")
		s.log.Warn("store: decision index", "id", d.ID, "err", err.Error())
	}
}

// addChecks puts into d what the checks computed for the current message
// and the DNS answers they used.
func (ci *connInfo) addChecks(d *Decision) {
	outbound := ci.in.Outbound
	d.Outbound = &outbound
	d.DNS = ci.dns.Log()
	if ci.txn == nil {
		return
	}
	m := ci.txn.Message()
	d.Auth = authRecord(m)
	if m.Input().Raw != nil {
		d.HeaderFrom = m.Header().From()
	}
	if f, ok := ci.s.reg.Fact("rdns"); ok && m.Known(f) {
		if name, ok := m.Value(f).(string); ok {
			d.RDNS = &name
		}
	}
}

func authRecord(m *builtins.Message) *DecisionAuth {
	spf, dkim, dmarc, arc := m.AuthResults()
	if spf == nil && dkim == nil && dmarc == nil && arc == nil {
		return nil
	}
	a := &DecisionAuth{}
	if spf != nil {
		a.SPF = &AuthCheck{Result: spf.Result, Domain: spf.Domain, Detail: spf.Detail}
	}
	if dkim != nil {
		a.DKIM = &AuthCheck{Result: dkim.Result, Domains: dkim.Domains}
		for _, sig := range dkim.Signatures {
			a.DKIM.Signatures = append(a.DKIM.Signatures, AuthCheck{Result: sig.Result, Domain: sig.Domain, Selector: sig.Selector, Detail: sig.Detail})
		}
	}
	if dmarc != nil {
		a.DMARC = &AuthCheck{Result: dmarc.Result, Domain: dmarc.Domain, Policy: dmarc.Policy, Detail: dmarc.Detail}
	}
	if arc != nil {
		a.ARC = &AuthCheck{Result: arc.Result, Domains: arc.Domains, Detail: arc.Detail}
	}
	return a
}

func hitsOf(hs []engine.Hit) []DecisionHit {
	var out []DecisionHit
	for _, h := range hs {
		out = append(out, DecisionHit{Rule: h.Rule, Phase: h.Phase, Action: h.Action, Score: h.Score, Shadow: h.Shadow, Rcpt: h.Recipient, Evidence: h.Evidence})
	}
	return out
}

// ourID finds the queue id in our own Received header inside a returned
// message or its headers: "by HOST (sluice) with ESMTP... id ID".
var ourID = regexp.MustCompile(`\(sluice\)\s+with\s+\S+\s+id\s+([0-9A-Z]{26})`)

// report is what a DSN (RFC 3464) or feedback report (RFC 5965) says.
type report struct {
	kind     string // delivery-status or feedback-report
	failed   []failedRcpt
	feedback string // feedback type: abuse, fraud, ...
	reporter string // Reporting-MTA or the feedback report's source
	rcpts    []string
	origID   string // our queue id in the returned message
}

type failedRcpt struct{ addr, status, diag string }

// parseReport reads a multipart/report; nil if raw is not one.
func parseReport(raw []byte) *report {
	e, err := gomessage.Read(bytes.NewReader(raw))
	if e == nil || (err != nil && !gomessage.IsUnknownCharset(err) && !gomessage.IsUnknownEncoding(err)) {
		return nil
	}
	mt, params, _ := e.Header.ContentType()
	if mt != "multipart/report" {
		return nil
	}
	r := &report{kind: strings.ToLower(params["report-type"])}
	if r.kind != "delivery-status" && r.kind != "feedback-report" {
		return nil
	}
	mr := e.MultipartReader()
	if mr == nil {
		return nil
	}
	for parts := 0; parts < 20; parts++ {
		p, err := mr.NextPart()
		if err != nil {
			break
		}
		pt, _, _ := p.Header.ContentType()
		body, _ := io.ReadAll(io.LimitReader(p.Body, 1<<20))
		switch pt {
		case "message/delivery-status", "message/global-delivery-status":
			r.parseDSN(body)
		case "message/feedback-report":
			r.parseARF(body)
		case "message/rfc822", "text/rfc822-headers", "message/rfc822-headers", "message/global", "message/global-headers":
			if m := ourID.FindSubmatch(body); m != nil {
				r.origID = string(m[1])
			}
			if r.kind == "feedback-report" && len(r.rcpts) == 0 {
				if h, err := builtins.ParseHeader(body); err == nil {
					r.rcpts = h.Addresses("To")
				}
			}
		}
	}
	return r
}

// fieldBlocks reads the blank-line separated header blocks of a DSN.
func fieldBlocks(b []byte) []textproto.Header {
	var out []textproto.Header
	br := bufio.NewReader(bytes.NewReader(bytes.TrimLeft(b, "\r\n")))
	for len(out) < 1000 {
		h, err := textproto.ReadHeader(br)
		if h.Len() > 0 {
			out = append(out, h)
		}
		if err != nil {
			break
		}
		// skip extra blank lines between blocks
		for {
			c, err := br.Peek(1)
			if err != nil || (c[0] != '\r' && c[0] != '\n') {
				break
			}
			br.ReadByte()
		}
		if _, err := br.Peek(1); err != nil {
			break
		}
	}
	return out
}

// addrOf reads "rfc822; bob@example.org".
func addrOf(v string) string {
	if _, a, ok := strings.Cut(v, ";"); ok {
		v = a
	}
	return store.NormalizeKey(v)
}

func (r *report) parseDSN(b []byte) {
	blocks := fieldBlocks(b)
	if len(blocks) == 0 {
		return
	}
	r.reporter = addrOf(blocks[0].Get("Reporting-MTA"))
	for _, h := range blocks[1:] {
		status := strings.TrimSpace(h.Get("Status"))
		action := strings.ToLower(strings.TrimSpace(h.Get("Action")))
		if action != "failed" && !strings.HasPrefix(status, "5.") {
			continue
		}
		addr := addrOf(h.Get("Final-Recipient"))
		if addr == "" {
			addr = addrOf(h.Get("Original-Recipient"))
		}
		if addr != "" {
			r.failed = append(r.failed, failedRcpt{addr, status, strings.Join(strings.Fields(h.Get("Diagnostic-Code")), " ")})
		}
	}
}

func (r *report) parseARF(b []byte) {
	blocks := fieldBlocks(b)
	if len(blocks) == 0 {
		return
	}
	h := blocks[0]
	r.feedback = strings.ToLower(strings.TrimSpace(h.Get("Feedback-Type")))
	r.reporter = strings.TrimSpace(h.Get("Reported-Domain"))
	if r.reporter == "" {
		r.reporter = strings.TrimSpace(h.Get("User-Agent"))
	}
	for _, v := range h.Values("Original-Rcpt-To") {
		if a := store.NormalizeKey(v); a != "" {
			r.rcpts = append(r.rcpts, a)
		}
	}
}

// applyReport acts on a bounce or complaint that came back to the relay:
// failed recipients go on `bounces`, a complainant on `unsubscribes`, and
// the original sender, when the returned message is one of ours, is
// charged for it (bounce_rate, unknown_recipients, complaint_rate).
func (s *Server) applyReport(id string, raw []byte) {
	r := parseReport(raw)
	if r == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	now := s.opts.Now()
	var charge []string
	sender, unsubList := "", "unsubscribes"
	if r.origID != "" {
		if b, err := s.store.Get(ctx, "decision", r.origID); err == nil && b != nil {
			var rec Decision
			if json.Unmarshal(b, &rec) == nil {
				sender = senderKey(rec.User, rec.IP)
				if u := s.cfg.Load().users[rec.User]; u != nil {
					unsubList = accountList("unsubscribes", u.account.Name) // a complaint is about this account's mail
				}
			}
		}
	}
	switch r.kind {
	case "delivery-status":
		for _, f := range r.failed {
			if !strings.HasPrefix(f.status, "5.1.") && !strings.HasPrefix(f.status, "5.0.") {
				continue // a policy or content refusal says nothing of the address
			}
			e := store.Entry{List: "bounces", Key: f.addr, Reason: strings.TrimSpace(f.status + " " + f.diag), Source: "DSN from " + orDash(r.reporter) + " (" + id + ")", Added: now}
			if err := s.store.ListAdd(ctx, e); err != nil {
				s.log.Error("store: bounce list", "rcpt", f.addr, "err", err.Error())
			}
			if sender != "" {
				charge = append(charge, "bounced:"+sender, "unknown_rcpt:"+sender)
			}
		}
	case "feedback-report":
		for _, a := range r.rcpts {
			e := store.Entry{List: unsubList, Key: a, Reason: "complaint (" + orDash(r.feedback) + ")", Source: "feedback report from " + orDash(r.reporter) + " (" + id + ")", Added: now}
			if err := s.store.ListAdd(ctx, e); err != nil {
				s.log.Error("store: unsubscribe list", "rcpt", a, "err", err.Error())
			}
		}
		if sender != "" {
			charge = append(charge, "complaints:"+sender)
		}
	}
	if len(charge) > 0 {
		s.store.Count(ctx, now, 1, charge, nil)
	}
	s.log.Info("report applied", "id", id, "kind", r.kind, "failed", len(r.failed), "complainants", len(r.rcpts), "original", r.origID, "sender", sender)
}

func orDash(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
