package engine

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
)

// Verdict action names (SPEC 2).
const (
	Accept   = "accept"
	Tag      = "tag"
	Hold     = "hold"
	Tempfail = "tempfail"
	Reject   = "reject"
)

// Verdict is the outcome of evaluating a message: what to answer, and why.
type Verdict struct {
	ID       string  `json:"id"`
	Action   string  `json:"action"`
	Code     int     `json:"code"`
	Enhanced string  `json:"enhanced"`
	Text     string  `json:"text"`
	Score    float64 `json:"score"`
	// Phase is where the decision was taken: the phase of the deciding
	// rule, or data for thresholds.
	Phase string `json:"phase"`
	// Rule is the rule that decided, "" when the thresholds (or nothing)
	// did.
	Rule       string             `json:"rule,omitempty"`
	Hits       []Hit              `json:"hits"`
	Recipients []RecipientVerdict `json:"recipients,omitempty"`
	// Errors are the problems met, one line each: facts that could not be
	// computed (which tempfail the message with 451 4.3.0, never showing
	// the detail to the client) and the RuleErrors. The relay logs a
	// verdict with errors at WARN.
	Errors []string `json:"errors,omitempty"`
	// RuleErrors are the rules whose expression failed at run time (SPEC
	// 6): a bug in the rule, which did not fire; the message went on.
	RuleErrors []RuleError `json:"rule_errors,omitempty"`
	// Lists are the list actions that fired, for the relay to apply.
	Lists []ListAdd `json:"lists,omitempty"`
}

// Refused reports whether the verdict refuses the message.
func (v *Verdict) Refused() bool { return v.Action == Reject || v.Action == Tempfail }

// Fired reports whether the named rule fired (shadow hits included).
func (v *Verdict) Fired(rule string) bool {
	for _, h := range v.Hits {
		if h.Rule == rule {
			return true
		}
	}
	return false
}

// Recipient returns the verdict for one recipient.
func (v *Verdict) Recipient(addr string) (RecipientVerdict, bool) {
	for _, r := range v.Recipients {
		if r.Addr == addr {
			return r, true
		}
	}
	return RecipientVerdict{}, false
}

// RuleError is an error of a rule's expression at run time.
type RuleError struct {
	Rule string `json:"rule"`
	// Where is FILE:LINE:COL of the failing part of the expression when
	// known, else of the rule.
	Where     string `json:"where"`
	Shadow    bool   `json:"shadow,omitempty"`
	Recipient string `json:"recipient,omitempty"`
	Err       string `json:"error"`
}

func (e RuleError) String() string {
	s := fmt.Sprintf("%s: rule %s: %s; the rule did not fire", e.Where, e.Rule, e.Err)
	if e.Recipient != "" {
		s += " for " + e.Recipient
	}
	return s
}

// Hit is one rule that fired.
type Hit struct {
	Rule  string `json:"rule"`
	Phase string `json:"phase"`
	// Action is the rule's action as an operator would write it.
	Action string `json:"action"`
	// Score is what the rule added (for a shadow rule: would have added).
	Score     float64    `json:"score"`
	Shadow    bool       `json:"shadow,omitempty"`
	Recipient string     `json:"recipient,omitempty"`
	Evidence  []Evidence `json:"evidence"`
}

// Evidence is the value of one fact (or function call) a rule read.
type Evidence struct {
	Name  string `json:"name"`
	Value any    `json:"value"`
}

// RecipientVerdict is what happened to one RCPT.
type RecipientVerdict struct {
	Addr     string `json:"addr"`
	Action   string `json:"action"`
	Code     int    `json:"code"`
	Enhanced string `json:"enhanced"`
	Text     string `json:"text"`
	Rule     string `json:"rule,omitempty"`
}

// Reply is an SMTP answer the engine decided at some phase.
type Reply struct {
	Action   string
	Code     int
	Enhanced string
	Text     string
	Rule     string
	ID       string
}

// IDSource hands out decision ids: 26 characters of Crockford base32 over a
// 48-bit millisecond time, 16 random bits naming this process and a 64-bit
// counter, so ids sort by time and never repeat within a process.
type IDSource struct {
	node    uint16
	counter atomic.Uint64
}

// NewIDSource returns a source seeded from crypto/rand.
func NewIDSource() *IDSource {
	var b [10]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	s := &IDSource{node: binary.BigEndian.Uint16(b[:2])}
	s.counter.Store(binary.BigEndian.Uint64(b[2:]) >> 1)
	return s
}

const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// Next returns a new id stamped with now.
func (s *IDSource) Next(now time.Time) string {
	var b [16]byte
	ms := uint64(now.UnixMilli())
	b[0], b[1], b[2], b[3], b[4], b[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	binary.BigEndian.PutUint16(b[6:], s.node)
	binary.BigEndian.PutUint64(b[8:], s.counter.Add(1))
	// 128 bits in 26 base32 digits: the first digit holds the top 3 bits.
	var out [26]byte
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}

// IDTime is the time an id of IDSource.Next was stamped with: its first
// ten digits hold the 48-bit millisecond time.
func IDTime(id string) (time.Time, bool) {
	if len(id) != 26 {
		return time.Time{}, false
	}
	var ms uint64
	for i := 0; i < 10; i++ {
		d := strings.IndexByte(crockford, id[i])
		if d < 0 {
			return time.Time{}, false
		}
		ms = ms<<5 | uint64(d)
	}
	return time.UnixMilli(int64(ms)), true
}
