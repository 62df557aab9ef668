package builtins

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"time"

	"github.com/sluicemail/sluice/mailauth"
)

// Resolver looks up PTR names; *net.Resolver satisfies it.
type Resolver interface {
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// ListSource answers in_list for lists kept outside the rules (the store's
// bounces, unsubscribes, blocked, ...).
type ListSource interface {
	InList(ctx context.Context, name, value string) (bool, error)
}

// Counters answers count() from the relay's store: events counted under
// counter and key within window. Without one, count() is 0 (fixtures give
// values with context.counts).
type Counters interface {
	Count(ctx context.Context, counter, key string, window time.Duration) (int, error)
}

// StaticLists answers in_list for the lists defined in the rules directory.
// found is false when no static list has that name.
type StaticLists interface {
	Lookup(name, value string) (in, found bool)
}

// Input is what the caller (the relay, or the test harness) knows of one
// connection and message. Fields are filled in as the SMTP session goes on.
type Input struct {
	ClientIP string
	Helo     string
	// RDNS is the PTR name of ClientIP when RDNSKnown; otherwise the
	// Resolver, if any, looks it up on first use.
	RDNS          string
	RDNSKnown     bool
	TLS           bool
	Authenticated bool
	SMTPUser      string
	MailFrom      string
	Rcpts         []string
	Raw           []byte // the message as received, nil before DATA

	// ReceivedAt is when the message was received, which the facts about
	// its Date measure against: the relay sets its own clock when DATA
	// ends. Zero is SPEC 7's rule for scan, explain and test: the time of
	// the newest Received field that carries one, else the time the fact
	// is computed (ReceiptTime).
	ReceivedAt time.Time

	// Parsed, when set, is Raw already parsed (by a caller that parsed it
	// anyway); the facts use it instead of parsing again.
	Parsed *Parsed

	// Overrides give a fact's value by name, already of the fact's Go type
	// (see Type.Convert); the harness uses them for facts a fixture cannot
	// carry, and they win over computing.
	Overrides map[string]any

	Resolver Resolver
	// DNS answers the authentication checks (SPF, DKIM, DMARC, ARC,
	// DNSBL, FCrDNS); nil is DNS in which no name exists (NXDOMAIN), so a
	// check never reaches the network unless given a resolver.
	DNS mailauth.Resolver
	// Outbound: the message is relayed for an authenticated user or a
	// relay_networks client; false for mail from outside (inbound).
	Outbound bool
	// OutboundIPs are the relay's own sending addresses, for
	// spf_authorizes_relay.
	OutboundIPs []netip.Addr
	Lists       ListSource
	Counters    Counters
	Limits      Limits
	// Classifier gives spam_probability; nil is 0.5 (nothing learned).
	Classifier Classifier

	// Session is the caller's own state for this connection (the relay's
	// session, for the facts it computes); the engine never reads it.
	Session any
}

const (
	stateUnknown uint8 = iota
	stateKnown
	stateFailed // computing failed; every read fails the same way
)

// Message is the per-message evaluation state: the input, a cache holding each
// fact computed so far, and the environment expressions run against. A
// Message is reused across messages (Reset) to keep evaluation allocation-free;
// it is not safe for concurrent use.
type Message struct {
	reg    *Registry
	ctx    context.Context
	in     *Input
	static StaticLists
	rcpt   string

	vals  []any
	state []uint8
	errs  []error // per fact, when stateFailed
	err   error

	auth authState
	// noDNS is the DNS of an input without one: no name exists.
	noDNS mailauth.Resolver
	calls callState

	hdr      *Header
	hdrErr   error
	hdrDone  bool
	body     *Body
	bodyDone bool
	hs       headerState
	// spamTokens are the classifier's evidence for spam_probability, set
	// each time it is computed.
	spamTokens []string
}

// NewMessage returns a Message bound to this registry; Reset it before use.
func (r *Registry) NewMessage() *Message {
	m := &Message{
		reg:   r,
		vals:  make([]any, len(r.facts)),
		state: make([]uint8, len(r.facts)),
		errs:  make([]error, len(r.facts)),
		ctx:   context.Background(),
		in:    &Input{},
	}
	return m
}

// Reset prepares m for a new message.
func (m *Message) Reset(ctx context.Context, in *Input, static StaticLists) {
	if ctx == nil {
		ctx = context.Background()
	}
	m.ctx, m.in, m.static = ctx, in, static
	m.rcpt = ""
	m.err = nil
	clear(m.vals)
	clear(m.state)
	clear(m.errs)
	m.hdr, m.hdrErr, m.hdrDone = nil, nil, false
	m.body, m.bodyDone = nil, false
	m.hs = headerState{}
	m.auth = authState{}
	m.calls.reset()
}

// Invalidate forgets every fact of phase p or later, for when the session
// changes what they depend on (a second EHLO after STARTTLS, AUTH, RSET).
func (m *Message) Invalidate(p Phase) {
	for _, f := range m.reg.facts {
		if f.Phase >= p {
			m.vals[f.id], m.state[f.id], m.errs[f.id] = nil, stateUnknown, nil
		}
	}
	if p <= Data {
		m.hdr, m.hdrErr, m.hdrDone = nil, nil, false
		m.body, m.bodyDone = nil, false
		m.hs = headerState{}
	}
	m.auth.invalidate(p)
	m.calls.invalidate(p)
	m.err = nil
}

// SetRcpt sets the recipient under consideration for per-recipient facts.
func (m *Message) SetRcpt(addr string) {
	m.rcpt = addr
	for _, f := range m.reg.facts {
		if f.PerRecipient {
			m.vals[f.id], m.state[f.id], m.errs[f.id] = nil, stateUnknown, nil
		}
	}
}

// Input returns what m was reset with.
func (m *Message) Input() *Input { return m.in }

// Context is the context of the current evaluation (deadline for lookups).
func (m *Message) Context() context.Context { return m.ctx }

// Rcpt is the recipient under consideration, "" outside per-recipient rules.
func (m *Message) Rcpt() string { return m.rcpt }

// Err returns the first error a fact or function met since the last
// ClearErr; the engine checks it after each rule.
func (m *Message) Err() error { return m.err }

// ClearErr forgets the recorded error.
func (m *Message) ClearErr() { m.err = nil }

// ErrInvalidArgument is wrapped by the error a function records when the
// rule gave it an argument it cannot use (a bad count() window): a bug in
// the rule, not a fact that could not be computed.
var ErrInvalidArgument = errors.New("invalid argument")

// Fail records an error met while computing a fact or running a function.
func (m *Message) Fail(err error) {
	if m.err == nil {
		m.err = err
	}
}

// Known reports whether the fact has been computed for this message.
func (m *Message) Known(f *Fact) bool { return m.state[f.id] == stateKnown }

// Value returns the fact's value, computing it if needed.
func (m *Message) Value(f *Fact) any { return m.get(f.id) }

// FactValue is Value by fact id, for compiled expressions: the value comes
// back already boxed, so reading a fact allocates nothing.
func (m *Message) FactValue(id int) any { return m.get(id) }

// ValueOf returns a fact's value by name.
func (m *Message) ValueOf(name string) (any, error) {
	f, ok := m.reg.byName[name]
	if !ok {
		return nil, fmt.Errorf("no fact %q", name)
	}
	return m.get(f.id), nil
}

func (m *Message) get(id int) any {
	switch m.state[id] {
	case stateKnown:
		return m.vals[id]
	case stateFailed:
		// Every rule that reads a failed fact fails, not just the first.
		m.Fail(m.errs[id])
		return m.vals[id]
	}
	f := m.reg.facts[id]
	var v any
	state := stateKnown
	if o, ok := m.in.Overrides[f.Name]; ok {
		v = o
	} else {
		var err error
		v, err = m.compute(f)
		if err != nil {
			err = fmt.Errorf("fact %s: %w", f.Name, err)
			m.errs[id], state, v = err, stateFailed, nil
			m.Fail(err)
		}
	}
	if v == nil {
		v = reflect.Zero(f.Type.GoType()).Interface()
	}
	m.vals[id], m.state[id] = v, state
	return v
}

// compute runs the fact's Compute, turning a panic (a bug, or input nobody
// foresaw) into an error so that one bad message cannot take the relay down.
func (m *Message) compute(f *Fact) (v any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return f.Compute(m)
}

// Parsed is a message's header and body as the facts need them.
type Parsed struct {
	Header    *Header
	HeaderErr error
	Body      *Body
	// Raw is the message they were parsed from, when the parser kept it
	// (a classifier in another process needs it).
	Raw []byte
}

// Parse parses raw once, for callers that want to keep the result.
func Parse(raw []byte, lim Limits) *Parsed {
	h, err := ParseHeader(raw)
	if lim == (Limits{}) {
		lim = DefaultLimits()
	}
	return &Parsed{Header: h, HeaderErr: err, Body: ParseBody(raw, h, lim), Raw: raw}
}

// Header returns the parsed top-level header, parsing it on first use.
func (m *Message) Header() *Header {
	if !m.hdrDone {
		if p := m.in.Parsed; p != nil && p.Header != nil {
			m.hdr, m.hdrErr = p.Header, p.HeaderErr
		} else {
			m.hdr, m.hdrErr = ParseHeader(m.in.Raw)
		}
		m.hdrDone = true
	}
	return m.hdr
}

// HeaderErr is the problem met parsing the header, if any.
func (m *Message) HeaderErr() error {
	m.Header()
	return m.hdrErr
}

// Body returns what the body facts need, walking the MIME tree on first use.
func (m *Message) Body() *Body {
	if !m.bodyDone && m.in.Parsed != nil && m.in.Parsed.Body != nil {
		m.body, m.bodyDone = m.in.Parsed.Body, true
	}
	if !m.bodyDone {
		lim := m.in.Limits
		if lim == (Limits{}) {
			lim = DefaultLimits()
		}
		m.body = ParseBody(m.in.Raw, m.Header(), lim)
		m.bodyDone = true
	}
	return m.body
}

// Problems lists what was odd about the message (malformed header, unknown
// charset, limits reached), for explain and the logs.
func (m *Message) Problems() []string {
	var out []string
	if m.hdrDone && m.hdrErr != nil {
		out = append(out, m.hdrErr.Error())
	}
	if m.bodyDone && m.body != nil {
		out = append(out, m.body.Problems...)
	}
	return out
}
