package server

import (
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sluicemail/sluice/builtins"
	"github.com/sluicemail/sluice/queue"
)

// Recipient verification, as Postfix's reject_unverified_recipient: an
// inbound message's local recipient is probed at the next hop (EHLO, MAIL
// FROM:<>, RCPT TO, QUIT) before RCPT is answered, so that an address the
// next hop does not know is refused in the session instead of accepted
// and then failing with nobody to tell. Answers are cached: an accepted
// address for verifyPositiveTTL, a refused one for verifyNegativeTTL. A
// next hop that does not answer, or answers 4xx, is not cached and holds
// nothing up: the recipient is accepted, as without verification.
type verifyCache struct {
	mu sync.Mutex
	m  map[string]verifyEntry
}

type verifyEntry struct {
	res   result
	until time.Time
}

const (
	verifyPositiveTTL = 24 * time.Hour
	verifyNegativeTTL = time.Hour
	verifyMaxEntries  = 100_000
	probeTimeout      = 10 * time.Second
)

func (v *verifyCache) get(addr string, now time.Time) (result, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.m[addr]
	if !ok || now.After(e.until) {
		return result{}, false
	}
	return e.res, true
}

func (v *verifyCache) put(addr string, res result, until time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil || len(v.m) >= verifyMaxEntries {
		v.m = map[string]verifyEntry{} // start over rather than grow without bound
	}
	v.m[addr] = verifyEntry{res, until}
}

// verifyRecipient returns the refusal for rcpt when it is a local
// recipient of inbound mail that the next hop refuses permanently, nil
// otherwise.
func (s *Server) verifyRecipient(ci *connInfo, rcpt, id string) *smtp.SMTPError {
	cfg := s.cfg.Load()
	if !cfg.Delivery.VerifyRecipients || cfg.Delivery.Mode == "local" || ci.in.Authenticated ||
		cfg.mayRelayFrom(ci.ip) || !cfg.isLocalDomain(builtins.Domain(rcpt)) {
		return nil
	}
	addr := strings.ToLower(rcpt)
	now := s.opts.Now()
	res, cached := s.delivery.verified.get(addr, now)
	if !cached {
		res = s.delivery.deliver(cfg, &queue.Envelope{}, nil, []string{rcpt})[rcpt]
		switch {
		case res.ok:
			s.delivery.verified.put(addr, res, now.Add(verifyPositiveTTL))
		case res.perm:
			s.delivery.verified.put(addr, res, now.Add(verifyNegativeTTL))
		default:
			s.log.Warn("recipient verification: no answer, recipient accepted", "id", id, "rcpt", rcpt, "code", res.code, "detail", res.detail)
		}
	}
	if !res.perm {
		return nil
	}
	enh := res.enhanced
	if !strings.HasPrefix(enh, "5.") {
		enh = "5.1.1"
	}
	const text = "Recipient address rejected: undeliverable address"
	s.log.Info("decision", "id", id, "phase", "rcpt", "action", "reject", "code", 550, "enhanced", enh, "client_ip", ci.in.ClientIP,
		"mail_from", ci.in.MailFrom, "rcpt", rcpt, "reason", "recipient verification", "remote", res.remote, "detail", res.detail, "cached", cached)
	s.recordDecision(Decision{ID: id, IP: ci.in.ClientIP, Helo: ci.in.Helo, From: ci.in.MailFrom, Rcpts: []string{rcpt}, Phase: "rcpt",
		Action: "reject", Code: 550, Enhanced: enh, Text: text + " (next hop " + res.remote + ": " + oneLine(res.detail) + ")"})
	return &smtp.SMTPError{Code: 550, EnhancedCode: enhanced(enh), Message: replyText(text, id)}
}
