package server

import (
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/sluicemail/sluice/builtins"
)

// Recipient verification, as Postfix's reject_unverified_recipient: an
// inbound message's local recipient is probed at the next hop (EHLO, MAIL
// FROM:<>, RCPT TO, QUIT; queue.Deliverer.Verify, which caches answers)
// before RCPT is answered, so that an address the next hop does not know
// is refused in the session instead of accepted and then failing with
// nobody to tell. A next hop that does not answer, or answers 4xx, holds
// nothing up: the recipient is accepted, as without verification.

// verifyRecipient returns the refusal for rcpt when it is a local
// recipient of inbound mail that the next hop refuses permanently, nil
// otherwise.
func (s *Server) verifyRecipient(ci *connInfo, rcpt, id string) *smtp.SMTPError {
	cfg := s.cfg.Load()
	if !cfg.Delivery.VerifyRecipients || cfg.Delivery.Mode == "local" || ci.in.Authenticated ||
		cfg.mayRelayFrom(ci.ip) || !cfg.isLocalDomain(builtins.Domain(rcpt)) {
		return nil
	}
	res, cached := s.delivery.Verify(rcpt)
	if !res.OK && !res.Perm {
		s.log.Warn("recipient verification: no answer, recipient accepted", "id", id, "rcpt", rcpt, "code", res.Code, "detail", res.Detail)
	}
	if !res.Perm {
		return nil
	}
	enh := res.Enhanced
	if !strings.HasPrefix(enh, "5.") {
		enh = "5.1.1"
	}
	const text = "Recipient address rejected: undeliverable address"
	s.log.Info("decision", "id", id, "phase", "rcpt", "action", "reject", "code", 550, "enhanced", enh, "client_ip", ci.in.ClientIP,
		"mail_from", ci.in.MailFrom, "rcpt", rcpt, "reason", "recipient verification", "remote", res.Remote, "detail", res.Detail, "cached", cached)
	s.recordDecision(Decision{ID: id, IP: ci.in.ClientIP, Helo: ci.in.Helo, From: ci.in.MailFrom, Rcpts: []string{rcpt}, Phase: "rcpt",
		Action: "reject", Code: 550, Enhanced: enh, Text: text + " (next hop " + res.Remote + ": " + oneLine(res.Detail) + ")"})
	return &smtp.SMTPError{Code: 550, EnhancedCode: enhanced(enh), Message: replyText(text, id)}
}
