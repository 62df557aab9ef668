package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/sluicemail/sluice/builtins"
	"github.com/sluicemail/sluice/engine"
	"github.com/sluicemail/sluice/internal/canon"
	"github.com/sluicemail/sluice/internal/smtpaddr"
	"github.com/sluicemail/sluice/mailauth"
	"github.com/sluicemail/sluice/queue"
)

// connInfo is one connection's evaluation state: the engine input and the
// transaction, which lives from connect to the end of the connection and is
// begun again on a newer rule set between messages.
type connInfo struct {
	// mu guards txn and in: with BDAT, go-smtp runs Data in a goroutine of
	// its own, which an abort (RSET, a closed socket, a refused chunk)
	// leaves running while the connection's goroutine resets or closes
	// the transaction.
	mu      sync.Mutex
	s       *Server
	ip      netip.Addr
	mode    string
	in      *builtins.Input
	txn     *engine.Txn
	refused *engine.Reply // connect or helo phase refusal
	// dns records the checks' lookups for the decision record: those of
	// the connect and helo phases (Mark) and the current message's.
	dns *mailauth.Recorder
	// counts caches hourly_sent and daily_sent for transaction countsFor.
	countsFor string
	counts    []int
	// pending are the count() keys read for the current message, with the
	// recipient each was read for ("" for the message).
	pending map[string]string
}

func (s *Server) newConnInfo(ip netip.Addr, mode string) *connInfo {
	ci := &connInfo{s: s, ip: ip, mode: mode, dns: mailauth.NewRecorder(s.dns)}
	ci.in = &builtins.Input{ClientIP: ip.String(), Resolver: s.opts.Resolver, DNS: ci.dns, Lists: storeLists{s: s, ci: ci}, Counters: ci, Session: ci}
	if ci.in.Resolver == nil {
		ci.in.Resolver = s.ptr
	}
	if s.cls != nil {
		ci.in.Classifier = s.cls
	}
	return ci
}

// connect begins the transaction and runs the connect phase.
func (ci *connInfo) connect() *engine.Reply {
	ci.dns.Reset()
	ci.txn = ci.s.rules.Current().Begin(context.Background(), ci.in)
	ci.refused = ci.txn.Connect()
	ci.dns.Mark()
	ci.flush()
	if ci.refused != nil {
		ci.s.logRefusal(ci, "connect", ci.refused)
	}
	return ci.refused
}

// flush applies the list actions fired so far.
func (ci *connInfo) flush() {
	if ci.txn != nil {
		ci.s.applyLists(ci.txn.ID(), ci.txn.TakeListAdds())
	}
}

func (ci *connInfo) close() {
	ci.mu.Lock()
	defer ci.mu.Unlock()
	ci.closeTxn()
}

func (ci *connInfo) closeTxn() {
	if ci.txn != nil {
		ci.txn.Close()
		ci.txn = nil
	}
}

// renew begins the transaction again on the live rule set, if it changed,
// replaying the connect and helo phases.
func (ci *connInfo) renew() *engine.Reply {
	if ci.txn != nil && ci.txn.RuleSet() == ci.s.rules.Current() {
		return ci.refused
	}
	ci.closeTxn()
	if r := ci.connect(); r != nil {
		return r
	}
	if ci.in.Helo != "" {
		ci.refused = ci.txn.Helo(ci.in.Helo)
	}
	return ci.refused
}

type backend struct {
	s    *Server
	mode string
}

// NewSession is called at the first HELO/EHLO.
func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	tc := connOf(c.Conn())
	if tc == nil {
		return nil, errors.New("internal error: unknown connection")
	}
	ci := tc.info
	if ci.refused != nil {
		return nil, b.s.smtpError(ci.refused)
	}
	sess := &session{s: b.s, c: c, ci: ci, mode: b.mode, tc: tc}
	ci.mu.Lock()
	defer ci.mu.Unlock()
	if ci.txn == nil {
		return nil, errors.New("connection closed")
	}
	if r := sess.helo(); r != nil {
		return nil, b.s.smtpError(r)
	}
	return sess, nil
}

type session struct {
	s     *Server
	tc    *trackedConn
	c     *smtp.Conn
	ci    *connInfo
	mode  string
	user  *User
	from  string
	rcpts []string
	inTxn bool // MAIL was accepted
	utf8  bool // MAIL asked for SMTPUTF8
	// errors counts refused commands since the last accepted message.
	errors int
	// gen moves on at every reset: a Data that began under another
	// generation belongs to an aborted transfer and must not touch the
	// transaction.
	gen atomic.Uint64
	// dataMu serialises Data calls (an aborted BDAT's goroutine may still
	// be returning when the next transfer starts) and guards the buffers.
	dataMu sync.Mutex
	buf    *bytes.Buffer // from the server's dataBufs while a message is read; see releaseBuf
	canon  []byte
}

// helo runs the helo phase for the client's current HELO name.
func (ss *session) helo() *engine.Reply {
	name := ss.c.Hostname()
	if ss.ci.in.Helo == name && ss.ci.txn != nil {
		return ss.ci.refused
	}
	ss.ci.dns.Rewind()
	ss.ci.refused = ss.ci.txn.Helo(name)
	ss.ci.dns.Mark()
	ss.ci.flush()
	if ss.ci.refused != nil {
		ss.s.logRefusal(ss.ci, "helo", ss.ci.refused)
	}
	return ss.ci.refused
}

func enhanced(s string) smtp.EnhancedCode {
	var e smtp.EnhancedCode
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return smtp.NoEnhancedCode
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			return smtp.NoEnhancedCode
		}
		e[i] = n
	}
	return e
}

func (ss *session) tlsOn() bool {
	_, ok := ss.c.TLSConnectionState()
	return ok
}

// AuthMechanisms offers PLAIN and LOGIN under TLS, or without TLS to a
// loopback client when allow_insecure_auth is set; never when no user is
// configured.
func (ss *session) AuthMechanisms() []string {
	cfg := ss.s.cfg.Load()
	if len(cfg.users) == 0 {
		return nil
	}
	if ss.tlsOn() || (cfg.AllowInsecureAuth && ss.ci.ip.IsLoopback()) {
		return []string{sasl.Plain, sasl.Login}
	}
	return nil
}

var errAuthThrottled = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many failed authentications from your address; try again later"}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	if len(ss.AuthMechanisms()) == 0 {
		return nil, smtp.ErrAuthUnsupported
	}
	if ss.s.throttle.Load().refused(ss.ci.ip) {
		return nil, errAuthThrottled
	}
	check := func(username, password string) error {
		if ss.timedOut() {
			return errTimeout
		}
		u, err := ss.s.login(ss.ci.ip, username, password) // auth.go
		if err != nil {
			return ss.refuse(err)
		}
		ss.ci.mu.Lock()
		ss.user = u
		ss.ci.in.SMTPUser, ss.ci.in.Authenticated = u.Name, true
		ss.ci.mu.Unlock()
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, username, password string) error {
			if identity != "" && identity != username {
				return smtp.ErrAuthFailed
			}
			return check(username, password)
		}), nil
	case sasl.Login:
		return newLoginServer(check), nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// Replies for addresses that cannot be taken as given.
var (
	errAddrControl = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "Bad address syntax: control characters are not allowed"}
	errAddrUTF8    = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "Bad address syntax: not valid UTF-8"}
	errAddrSyntax  = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "Bad address syntax"}
	errAddrASCII   = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 6, 7}, Message: "Non-ASCII address without SMTPUTF8"}
	errTimeout     = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Timeout exceeded, closing connection"}
	errAborted     = errors.New("message transfer aborted")
)

// envelopeAddr checks an address from MAIL or RCPT and returns its wire
// form: what is judged, spooled, retried and bounced, byte for byte.
func envelopeAddr(addr string, utf8OK bool) (string, *smtp.SMTPError) {
	c, err := smtpaddr.Canonical(addr)
	switch {
	case errors.Is(err, smtpaddr.ErrControl):
		return "", errAddrControl
	case errors.Is(err, smtpaddr.ErrUTF8):
		return "", errAddrUTF8
	case err != nil:
		return "", errAddrSyntax
	}
	if !utf8OK {
		for i := 0; i < len(c); i++ {
			if c[i] >= 0x80 { // RFC 6531 3.5
				return "", errAddrASCII
			}
		}
	}
	return c, nil
}

// refuse counts a refused command. Past the soft limit each refusal waits
// first; at the hard limit the reply is a 421 that ends the session.
func (ss *session) refuse(err error) error {
	ss.errors++
	l := ss.s.cfg.Load().Limits
	if ss.errors >= l.HardErrorLimit {
		ss.s.log.Warn("too many refused commands: session closed", "client_ip", ss.ci.in.ClientIP, "errors", ss.errors)
		ss.tc.closeAfter.Store(true)
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many errors, closing connection"}
	}
	if ss.errors > l.SoftErrorLimit {
		time.Sleep(l.ErrorSleep.D())
	}
	return err
}

// timedOut reports whether the connection hit a deadline: a command cut
// off by the timeout is never carried out, and the session ends.
func (ss *session) timedOut() bool {
	if ss.tc.timedOut.Load() {
		ss.tc.closeAfter.Store(true)
		return true
	}
	return false
}

func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	if ss.timedOut() {
		return errTimeout
	}
	ss.ci.mu.Lock()
	defer ss.ci.mu.Unlock()
	if ss.ci.txn == nil {
		return errAborted
	}
	if r := ss.ci.renew(); r != nil {
		return ss.refuse(ss.s.smtpError(r))
	}
	if r := ss.helo(); r != nil { // a later EHLO may have changed the name
		return ss.refuse(ss.s.smtpError(r))
	}
	cfg := ss.s.cfg.Load()
	id := ss.ci.txn.ID()
	from, bad := envelopeAddr(from, opts != nil && opts.UTF8)
	if bad != nil {
		return ss.refuse(&smtp.SMTPError{Code: bad.Code, EnhancedCode: bad.EnhancedCode, Message: replyText(bad.Message, id)})
	}
	if ss.mode == "submission" && ss.user == nil {
		return ss.refuse(&smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: replyText("Authentication required", id)})
	}
	if ss.user != nil { // re-read at each transaction: a reload may have changed the user (authguard.go)
		u, err := ss.s.liveUser(ss.ci, ss.user, from, id)
		if err != nil {
			return ss.refuse(err)
		}
		ss.user = u
		if off, text := ss.user.disabled(); off {
			ss.s.log.Info("decision", "id", id, "phase", "mail", "action", "reject", "code", 550, "user", ss.user.Name, "mail_from", from, "reason", "account disabled")
			ss.s.recordDecision(Decision{ID: id, User: ss.user.Name, IP: ss.ci.in.ClientIP, Helo: ss.ci.in.Helo, From: from, Phase: "mail",
				Action: "reject", Code: 550, Enhanced: "5.7.1", Text: text + " (account " + ss.user.account.Name + " is disabled)"})
			return ss.refuse(&smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: ss.s.ruleText(text, id)})
		}
	}
	if opts != nil && opts.Size > cfg.Limits.MaxMessageBytes {
		return ss.refuse(&smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: replyText(fmt.Sprintf("Message too big: the limit is %d bytes", cfg.Limits.MaxMessageBytes), id)})
	}
	ss.ci.in.TLS = ss.tlsOn()
	ss.ci.in.Outbound = ss.user != nil || cfg.mayRelayFrom(ss.ci.ip)
	ss.ci.in.OutboundIPs = cfg.outboundIPs
	clear(ss.ci.pending)
	ss.ci.dns.Rewind()
	r := ss.ci.txn.Mail(from)
	ss.ci.flush()
	if r != nil {
		ss.s.logRefusal(ss.ci, "mail", r)
		ss.ci.txn.Reset()
		return ss.refuse(ss.s.smtpError(r))
	}
	ss.from, ss.rcpts, ss.inTxn, ss.utf8 = from, nil, true, opts != nil && opts.UTF8
	ss.tc.busy.Store(true)
	return nil
}

func (ss *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if ss.timedOut() {
		return errTimeout
	}
	ss.ci.mu.Lock()
	defer ss.ci.mu.Unlock()
	if ss.ci.txn == nil || !ss.inTxn {
		return errAborted
	}
	id := ss.ci.txn.ID()
	to, bad := envelopeAddr(to, ss.utf8)
	if bad != nil {
		return ss.refuse(&smtp.SMTPError{Code: bad.Code, EnhancedCode: bad.EnhancedCode, Message: replyText(bad.Message, id)})
	}
	if !ss.mayRelayTo(to) {
		ss.s.log.Info("decision", "id", id, "phase", "rcpt", "action", "reject", "code", 554, "client_ip", ss.ci.ip.String(), "mail_from", ss.from, "rcpt", to, "reason", "relay access denied")
		ss.s.recordDecision(Decision{ID: id, IP: ss.ci.in.ClientIP, Helo: ss.ci.in.Helo, From: ss.from, Rcpts: []string{to}, Phase: "rcpt",
			Action: "reject", Code: 554, Enhanced: "5.7.1", Text: "Relay access denied (not authenticated, not in relay_networks, not a local domain, or a routed local part)"})
		return ss.refuse(&smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: replyText("Relay access denied", id)})
	}
	if err := ss.s.verifyRecipient(ss.ci, to, id); err != nil {
		return ss.refuse(err)
	}
	r := ss.ci.txn.Rcpt(to)
	ss.ci.flush()
	if r != nil {
		ss.s.logRefusal(ss.ci, "rcpt", r, "rcpt", to)
		return ss.refuse(ss.s.smtpError(r))
	}
	ss.rcpts = append(ss.rcpts, to)
	return nil
}

// mayRelayTo is the open-relay check: authenticated users and clients in
// relay_networks may send anywhere, anyone else only to local domains, and
// not through a local part that routes on (user%host, host!user,
// "user@host"), which a host behind the relay might honour.
func (ss *session) mayRelayTo(rcpt string) bool {
	cfg := ss.s.cfg.Load()
	if ss.user != nil || cfg.mayRelayFrom(ss.ci.ip) {
		return true
	}
	return cfg.isLocalDomain(builtins.Domain(rcpt)) && !smtpaddr.Routed(rcpt)
}

// Data reads the message, brings it to canonical form and judges it. With
// BDAT it runs in a goroutine of go-smtp's while the connection's goroutine
// reads the chunks, and an abort leaves it to find its reader closed: it
// then returns without touching the transaction, which the abort's reset
// (or the connection's close) takes care of.
func (ss *session) Data(r io.Reader) error {
	ss.dataMu.Lock()
	defer ss.dataMu.Unlock()
	gen := ss.gen.Load()
	if _, bdat := r.(*io.PipeReader); !bdat {
		// The whole message must arrive within data_timeout (BDAT chunks
		// are read by go-smtp under the command timeout, each).
		ss.c.Conn().SetReadDeadline(time.Now().Add(ss.s.cfg.Load().Limits.DataTimeout.D()))
	}
	// A buffer from the server's pool (clients that send one message per
	// connection would otherwise grow a new one to the message's size
	// every time): nothing keeps the raw bytes past this transaction, and
	// Reset hands it back.
	if ss.buf == nil {
		ss.buf = ss.s.dataBufs.get()
	}
	buf := ss.buf
	buf.Reset()
	if _, err := buf.ReadFrom(r); err != nil {
		var se *smtp.SMTPError
		switch {
		case ss.timedOut():
			return errTimeout
		case errors.As(err, &se):
			return se // too big: go-smtp's 552
		}
		return errAborted // the transfer was aborted; the reset cleans up
	}
	if ss.timedOut() {
		return errTimeout
	}
	cfg := ss.s.cfg.Load()
	raw, changes := canon.Message(buf.Bytes(), cfg.Hostname, ss.canon)
	if changes.Changed() {
		ss.canon = raw[:0]
	}
	ss.ci.mu.Lock()
	defer ss.ci.mu.Unlock()
	if ss.gen.Load() != gen || ss.ci.txn == nil || !ss.inTxn {
		return errAborted
	}
	id := ss.ci.txn.ID()
	if changes.Changed() {
		ss.s.log.Info("message normalised", "id", id, "bare_cr", changes.BareCR, "bare_lf", changes.BareLF, "lines_split", changes.Split, "fields_removed", changes.Removed)
	}
	ss.ci.in.ReceivedAt = ss.s.opts.Now() // the Date facts measure against the relay's clock
	v := ss.ci.txn.Data(raw)
	ss.ci.flush()
	ss.s.logDecision(ss.ci, v, ss.from, ss.rcpts, len(raw))
	ss.s.autolearn(ss.ci.in, v, raw)
	if v.Refused() {
		return ss.refuse(&smtp.SMTPError{Code: v.Code, EnhancedCode: enhanced(v.Enhanced), Message: ss.s.ruleText(v.Text, v.ID)})
	}
	msg := ss.s.stamp(ss, v, raw)
	env := &queue.Envelope{
		ID: v.ID, From: ss.from, Received: ss.s.opts.Now().UTC(), User: ss.ci.in.SMTPUser,
		ClientIP: ss.ci.in.ClientIP, Helo: ss.ci.in.Helo, Size: len(msg),
		Action: v.Action, Score: v.Score, NextAttempt: ss.s.opts.Now().UTC(),
	}
	for _, h := range v.Hits {
		env.Rules = append(env.Rules, h.Rule)
	}
	for _, rc := range ss.rcpts {
		env.Rcpts = append(env.Rcpts, queue.RcptState{Addr: rc, Status: queue.StatusPending})
	}
	area := queue.AreaQueue
	if v.Action == engine.Hold {
		area, env.Reason = queue.AreaHold, v.Text
	}
	if err := ss.s.commitMessage(ss.ci, area, env, msg, ss.rcpts); err != nil {
		return err
	}
	ss.errors = 0 // a client that delivers is not flooding
	if ss.from == "" || ss.toLocal() {
		ss.s.applyReport(v.ID, raw) // a bounce or complaint coming back
	}
	if area == queue.AreaQueue {
		return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as " + v.ID}
	}
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: replyText(v.Text, v.ID)}
}

// toLocal reports whether a recipient is in a local domain.
func (ss *session) toLocal() bool {
	cfg := ss.s.cfg.Load()
	for _, r := range ss.rcpts {
		if cfg.isLocalDomain(builtins.Domain(r)) {
			return true
		}
	}
	return false
}

func (ss *session) Reset() {
	ss.gen.Add(1)
	ss.ci.mu.Lock()
	if ss.inTxn && ss.ci.txn != nil {
		ss.ci.txn.Reset()
	}
	ss.from, ss.rcpts, ss.inTxn = "", nil, false
	ss.tc.busy.Store(false)
	ss.ci.mu.Unlock()
	ss.releaseBuf()
}

// Logout hands the DATA buffer back when the connection closes.
func (ss *session) Logout() error {
	ss.releaseBuf()
	return nil
}

// releaseBuf gives the DATA buffer back to the server's pool once the
// transaction that read it is over (the engine's Reset has dropped the
// raw message and the facts drawn from it). A Data still running, an
// aborted BDAT's goroutine, holds dataMu: the buffer then stays with the
// session until the next Reset or Logout.
func (ss *session) releaseBuf() {
	if !ss.dataMu.TryLock() {
		return
	}
	defer ss.dataMu.Unlock()
	if ss.buf != nil {
		ss.s.dataBufs.put(ss.buf)
		ss.buf = nil
	}
}

// stamp prepends the trace and result headers to an accepted message.
func (s *Server) stamp(ss *session, v *engine.Verdict, raw []byte) []byte {
	cfg := s.cfg.Load()
	in := ss.ci.in
	var h bytes.Buffer
	proto := "ESMTP"
	if ss.tlsOn() {
		proto += "S"
	}
	if in.Authenticated {
		proto += "A"
	}
	rdns := "unknown"
	if m := ss.ci.txn.Message(); m != nil {
		if f, ok := s.reg.Fact("rdns"); ok && m.Known(f) {
			if name, _ := m.Value(f).(string); name != "" {
				rdns = name
			}
		}
	}
	fmt.Fprintf(&h, "Received: from %s (%s [%s])\r\n\tby %s (sluice) with %s id %s", sanitize(in.Helo), sanitize(rdns), in.ClientIP, cfg.Hostname, proto, v.ID)
	if len(ss.rcpts) == 1 {
		fmt.Fprintf(&h, "\r\n\tfor <%s>", sanitize(ss.rcpts[0]))
	}
	fmt.Fprintf(&h, "; %s\r\n", s.opts.Now().Format(time.RFC1123Z))
	results := authResults(in, ss.ci.txn.Message())
	fmt.Fprintf(&h, "Authentication-Results: %s; %s\r\n", cfg.Hostname, strings.Join(results, ";\r\n\t"))
	if cfg.Unsubscribe.Stamp && len(ss.rcpts) == 1 && ss.from != "" {
		if !ss.ci.txn.Message().Header().Has("List-Unsubscribe") { // parsed once, for the rules
			account := ""
			if ss.user != nil {
				account = ss.user.account.Name
			}
			h.WriteString(s.unsubscribeHeaders(ss.rcpts[0], account))
		}
	}
	th := ss.ci.txn.RuleSet().Thresholds()
	if v.Action == engine.Tag || (v.Action == engine.Hold && th.Tag != nil && v.Score >= *th.Tag) {
		var rules []string
		for _, hit := range v.Hits {
			if !hit.Shadow && hit.Score != 0 {
				rules = append(rules, hit.Rule)
			}
		}
		tag := ""
		if th.Tag != nil {
			tag = " required=" + strconv.FormatFloat(*th.Tag, 'f', -1, 64)
		}
		score := strconv.FormatFloat(v.Score, 'f', -1, 64)
		fmt.Fprintf(&h, "X-Spam-Flag: YES\r\nX-Spam-Score: %s\r\nX-Spam-Status: Yes, score=%s%s rules=%s id=%s\r\n", score, score, tag, strings.Join(rules, ","), v.ID)
	}
	out := make([]byte, 0, h.Len()+len(raw)+600)
	out = append(out, h.Bytes()...)
	out = append(out, raw...)
	return s.sign(cfg, ss, out, v.ID)
}

// sanitize keeps client-supplied text from breaking a header.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '(' || r == ')' || r == ';' {
			return '_'
		}
		return r
	}, s)
}

func (s *Server) logRefusal(ci *connInfo, phase string, r *engine.Reply, kv ...any) {
	d := Decision{ID: r.ID, User: ci.in.SMTPUser, IP: ci.in.ClientIP, Helo: ci.in.Helo, From: ci.in.MailFrom, Phase: phase,
		Action: r.Action, Code: r.Code, Enhanced: r.Enhanced, Text: r.Text, Rule: r.Rule}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i] == "rcpt" {
			d.Rcpts = []string{fmt.Sprint(kv[i+1])}
		}
	}
	if ci.txn != nil {
		v := ci.txn.Verdict()
		d.Fired, d.Score = hitsOf(v.Hits), v.Score
	}
	ci.addChecks(&d)
	s.recordDecision(d)
	args := []any{"id", r.ID, "phase", phase, "action", r.Action, "code", r.Code, "enhanced", r.Enhanced, "rule", r.Rule,
		"client_ip", ci.in.ClientIP, "helo", ci.in.Helo, "user", ci.in.SMTPUser, "mail_from", ci.in.MailFrom}
	s.log.Info("decision", append(args, kv...)...)
}

// firedRule is one hit in the decision log line: the JSON of a map with
// these keys, without building a map per hit for every message.
type firedRule struct {
	Rule   string  `json:"rule"`
	Score  float64 `json:"score"`
	Shadow bool    `json:"shadow"`
}

func (s *Server) logDecision(ci *connInfo, v *engine.Verdict, from string, rcpts []string, size int) {
	d := Decision{ID: v.ID, User: ci.in.SMTPUser, IP: ci.in.ClientIP, Helo: ci.in.Helo, From: from, Rcpts: rcpts,
		Phase: v.Phase, Action: v.Action, Code: v.Code, Enhanced: v.Enhanced, Text: v.Text, Score: v.Score, Rule: v.Rule, Fired: hitsOf(v.Hits)}
	ci.addChecks(&d)
	s.recordDecision(d)
	fired := make([]firedRule, 0, len(v.Hits))
	for _, h := range v.Hits {
		fired = append(fired, firedRule{h.Rule, h.Score, h.Shadow})
	}
	lvl := slog.LevelInfo
	if len(v.Errors) > 0 {
		lvl = slog.LevelWarn
	}
	s.log.Log(context.Background(), lvl, "decision", "id", v.ID, "phase", v.Phase, "action", v.Action, "code", v.Code,
		"enhanced", v.Enhanced, "score", v.Score, "rule", v.Rule, "client_ip", ci.in.ClientIP, "helo", ci.in.Helo,
		"user", ci.in.SMTPUser, "mail_from", from, "rcpts", rcpts, "size", size, "fired", fired, "errors", v.Errors)
}
