package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"

	"github.com/sluicemail/sluice/builtins"
)

// Txn evaluates one SMTP transaction (one message) against a RuleSet, phase
// by phase, as the relay and the test harness both drive it:
//
//	t := rs.Begin(ctx, in)
//	defer t.Close()
//	if r := t.Connect(); r != nil { refuse with r }
//	... t.Helo(name), t.Mail(from), t.Rcpt(addr) for each recipient ...
//	v := t.Data(raw)
//
// A phase method returns a non-nil Reply when the rules refuse at that phase.
// A Txn finishes on the RuleSet it began with, whatever reloads happen
// meanwhile. It is not safe for concurrent use.
type Txn struct {
	rs *RuleSet
	m  *builtins.Message
	vm vm.VM
	// gargs is the argument stack of guards' native calls.
	gargs []any
	// memo[i] is the result of the rule set's distinct guard call i, valid
	// while memoGen[i] == gen; gen moves on whenever facts may change.
	memo    []any
	memoGen []uint32
	gen     uint32
	in      *builtins.Input
	id      string

	ran      [builtins.NumPhases]bool
	dataDone bool

	score    float64
	hits     []Hit
	errors   []string
	ruleErrs []RuleError
	decided  *decision
	hold     *Rule

	lists       []ListAdd // list actions not yet taken
	rcpts       []RecipientVerdict
	allowlisted map[string]bool // recipients an accept rule let through

	// found[i] is which patterns of matcher i occur in its fact's value;
	// nil until a guard first asks.
	found [][]bool

	// marks[p] is the state just before phase p ran, so that a phase can
	// be run again (a second EHLO) or a transaction restarted (RSET).
	marks [builtins.NumPhases]mark
}

type mark struct {
	hits    int
	score   float64
	hold    *Rule
	decided *decision
}

// decision is a terminal outcome: a block or accept rule, or an internal error.
type decision struct {
	rule     *Rule
	phase    Phase
	internal bool
}

func newTxn(reg *builtins.Registry) any {
	return &Txn{m: reg.NewMessage()}
}

// Begin starts evaluating a message. in is read as the session fills it in;
// the engine adds each accepted recipient to in.Rcpts and sets in.Raw at DATA.
func (rs *RuleSet) Begin(ctx context.Context, in *builtins.Input) *Txn {
	t := rs.pool.Get().(*Txn)
	t.rs, t.in = rs, in
	t.m.Reset(ctx, in, rs.lists)
	t.id = rs.ids.Next(rs.now())
	t.ran = [builtins.NumPhases]bool{}
	t.dataDone = false
	t.score, t.hits, t.errors, t.ruleErrs = 0, t.hits[:0], t.errors[:0], t.ruleErrs[:0]
	t.decided, t.hold = nil, nil
	t.lists = nil
	t.rcpts = t.rcpts[:0]
	clear(t.allowlisted)
	t.resetMatches(builtins.Connect)
	if n := rs.ncalls; len(t.memo) != n {
		t.memo, t.memoGen = make([]any, n), make([]uint32, n)
	}
	t.bump()
	return t
}

// bump invalidates the memo of guard calls: facts may change.
func (t *Txn) bump() {
	t.gen++
	if t.gen == 0 { // wrapped: old stamps could match again
		clear(t.memoGen)
		t.gen = 1
	}
}

// setRcpt sets the recipient under consideration.
func (t *Txn) setRcpt(addr string) {
	t.m.SetRcpt(addr)
	t.bump()
}

// matches returns which patterns of matcher i occur in value, the current
// value of the matcher's fact, scanning it on first use.
func (t *Txn) matches(i int, value string) []bool {
	if len(t.found) != len(t.rs.matchers) {
		t.found = make([][]bool, len(t.rs.matchers))
	}
	if t.found[i] == nil {
		t.found[i] = make([]bool, t.rs.matchers[i].m.npattern)
		t.rs.matchers[i].m.match(value, t.found[i])
	}
	return t.found[i]
}

// resetMatches forgets matcher results for facts of phase p or later.
func (t *Txn) resetMatches(p Phase) {
	if len(t.found) != len(t.rs.matchers) {
		t.found = nil
		return
	}
	for i, fm := range t.rs.matchers {
		if fm.fact.Phase >= p {
			t.found[i] = nil
		}
	}
}

// Close returns the Txn to its pool; it must not be used afterwards.
func (t *Txn) Close() {
	t.in = nil
	t.m.Reset(context.Background(), &builtins.Input{}, nil)
	t.rs.pool.Put(t)
}

// RuleSet is the rule set the transaction runs on.
func (t *Txn) RuleSet() *RuleSet { return t.rs }

// ID is the decision id of the current transaction.
func (t *Txn) ID() string { return t.id }

// Message is the fact cache behind the evaluation (for explain and logs).
func (t *Txn) Message() *builtins.Message { return t.m }

// Reset starts a new transaction on the same connection (after RSET or a
// completed message): the connection's facts and the connect and helo
// phases' results stay, everything from MAIL on is forgotten.
func (t *Txn) Reset() {
	t.rewind(builtins.Mail)
	t.in.MailFrom, t.in.Rcpts, t.in.Raw = "", nil, nil
	t.id = t.rs.ids.Next(t.rs.now())
	t.errors, t.ruleErrs = t.errors[:0], t.ruleErrs[:0]
}

// rewind forgets phase p and every later one, as if they had not run.
func (t *Txn) rewind(p Phase) {
	t.m.Invalidate(p)
	t.bump()
	t.resetMatches(p)
	if t.ran[p] {
		mk := t.marks[p]
		t.hits = t.hits[:mk.hits]
		t.score, t.hold, t.decided = mk.score, mk.hold, mk.decided
	}
	for q := p; q <= builtins.Data; q++ {
		t.ran[q] = false
	}
	t.dataDone = false
	t.rcpts = t.rcpts[:0]
	clear(t.allowlisted)
}

// Connect runs the connect-phase rules.
func (t *Txn) Connect() *Reply {
	return t.advance(builtins.Connect)
}

// Helo records the HELO/EHLO name and runs the helo-phase rules. A second
// EHLO (after STARTTLS) runs them again with the new name.
func (t *Txn) Helo(name string) *Reply {
	t.rewind(builtins.Helo)
	t.in.Helo = name
	return t.advance(builtins.Helo)
}

// Mail records the envelope sender and runs the mail-phase rules.
func (t *Txn) Mail(from string) *Reply {
	t.in.MailFrom = from
	return t.advance(builtins.Mail)
}

// Rcpt runs the per-recipient rules for addr. A nil Reply accepts the
// recipient, which is then added to the Input's Rcpts.
func (t *Txn) Rcpt(addr string) *Reply {
	if r := t.advance(builtins.Rcpt); r != nil {
		t.rcpts = append(t.rcpts, recipientRefusal(addr, r))
		return r
	}
	if t.decided != nil { // accepted by an earlier accept rule
		t.acceptRcpt(addr, t.decided.rule.Name)
		return nil
	}
	t.setRcpt(addr)
	rule, refusal := t.runRecipient(t.rs.phaseRules[builtins.Rcpt].rcpt, addr)
	if refusal != nil {
		t.rcpts = append(t.rcpts, recipientRefusal(addr, refusal))
		return refusal
	}
	t.acceptRcpt(addr, rule)
	return nil
}

func (t *Txn) acceptRcpt(addr, rule string) {
	t.in.Rcpts = append(t.in.Rcpts, addr)
	t.rcpts = append(t.rcpts, RecipientVerdict{Addr: addr, Action: Accept, Code: 250, Enhanced: "2.1.5", Text: "Ok", Rule: rule})
}

func recipientRefusal(addr string, r *Reply) RecipientVerdict {
	return RecipientVerdict{Addr: addr, Action: r.Action, Code: r.Code, Enhanced: r.Enhanced, Text: r.Text, Rule: r.Rule}
}

// Data runs the data-phase rules on the message and applies the thresholds;
// the returned Verdict is final.
func (t *Txn) Data(raw []byte) *Verdict {
	t.in.Raw = raw
	t.m.Invalidate(builtins.Data)
	t.bump()
	t.resetMatches(builtins.Data)
	t.setRcpt("")
	if t.advance(builtins.Rcpt) == nil && t.decided == nil && !t.noRecipients() && !t.allRecipientsAllowlisted() {
		t.m.Prefetch(t.rs.needs[builtins.Data], t.rs.lookups[builtins.Data])
		t.runMessage(t.rs.phaseRules[builtins.Data].message)
		for _, addr := range t.in.Rcpts {
			if t.decided != nil {
				break
			}
			if t.allowlisted[addr] {
				continue
			}
			t.setRcpt(addr)
			t.runRecipient(t.rs.phaseRules[builtins.Data].rcpt, addr)
		}
	}
	t.ran[builtins.Data] = true
	t.dataDone = true
	return t.Verdict()
}

// noRecipients reports whether RCPT commands came and every one was refused.
func (t *Txn) noRecipients() bool {
	return len(t.in.Rcpts) == 0 && len(t.rcpts) > 0
}

func (t *Txn) allRecipientsAllowlisted() bool {
	if len(t.in.Rcpts) == 0 {
		return false
	}
	for _, a := range t.in.Rcpts {
		if !t.allowlisted[a] {
			return false
		}
	}
	return true
}

// advance runs every message-level phase up to and including p that has not
// run yet, and returns the refusal if a rule blocked.
func (t *Txn) advance(p Phase) *Reply {
	for q := builtins.Connect; q <= p && q < builtins.Data; q++ {
		if t.ran[q] {
			continue
		}
		t.marks[q] = mark{hits: len(t.hits), score: t.score, hold: t.hold, decided: t.decided}
		t.ran[q] = true
		if t.decided == nil {
			t.m.Prefetch(t.rs.needs[q], t.rs.lookups[q])
			t.runMessage(t.rs.phaseRules[q].message)
		}
	}
	return t.refusal()
}

// refusal is the Reply for a terminal block or internal error, nil otherwise.
func (t *Txn) refusal() *Reply {
	d := t.decided
	if d == nil {
		return nil
	}
	if d.internal {
		return &Reply{Action: Tempfail, Code: 451, Enhanced: "4.3.0", Text: internalErrorText, ID: t.id}
	}
	if d.rule.Then.Kind != ActBlock {
		return nil
	}
	a := d.rule.Then
	return &Reply{Action: blockAction(a.Code), Code: a.Code, Enhanced: a.Enhanced, Text: a.Text, Rule: d.rule.Name, ID: t.id}
}

func blockAction(code int) string {
	if code < 500 {
		return Tempfail
	}
	return Reject
}

// runMessage runs message-level rules in load order until one is terminal.
func (t *Txn) runMessage(rules []slot) {
	for i := range rules {
		if t.decided != nil {
			return
		}
		r := rules[i].rule
		if !t.fires(&rules[i], "") || r.Shadow {
			continue
		}
		switch r.Then.Kind {
		case ActScore:
			t.score += r.Then.Score
		case ActList:
			t.listAdd(r)
		case ActHold:
			if t.hold == nil {
				t.hold = r
			}
		case ActBlock, ActAccept:
			t.decided = &decision{rule: r, phase: r.Phase}
		}
	}
}

// runRecipient runs per-recipient rules for addr. A block refuses only addr
// at RCPT; after DATA a recipient can no longer be refused alone, so there
// it refuses the message. It returns the accepting rule's name, if any.
func (t *Txn) runRecipient(rules []slot, addr string) (string, *Reply) {
	for i := range rules {
		if t.decided != nil {
			return "", t.refusal()
		}
		r := rules[i].rule
		if !t.fires(&rules[i], addr) || r.Shadow {
			continue
		}
		switch r.Then.Kind {
		case ActScore:
			t.score += r.Then.Score
		case ActList:
			t.listAdd(r)
		case ActHold:
			if t.hold == nil {
				t.hold = r
			}
		case ActAccept:
			if t.allowlisted == nil {
				t.allowlisted = map[string]bool{}
			}
			t.allowlisted[addr] = true
			return r.Name, nil
		case ActBlock:
			if r.Phase == builtins.Data {
				t.decided = &decision{rule: r, phase: r.Phase}
				return "", t.refusal()
			}
			a := r.Then
			return "", &Reply{Action: blockAction(a.Code), Code: a.Code, Enhanced: a.Enhanced, Text: a.Text, Rule: r.Name, ID: t.id}
		}
	}
	return "", t.refusal()
}

// ListAdd is a list action that fired: the relay puts Key on List.
type ListAdd struct {
	List   string        `json:"list"`
	Key    string        `json:"key"`
	TTL    time.Duration `json:"ttl,omitempty"`
	Reason string        `json:"reason,omitempty"`
	Rule   string        `json:"rule"`
}

func (t *Txn) listAdd(r *Rule) {
	v, err := t.m.ValueOf(r.Then.KeyOf)
	key, _ := v.(string)
	if err != nil || key == "" {
		return
	}
	reason := r.Then.Text
	if reason == "" {
		reason = "rule " + r.Name
	}
	t.lists = append(t.lists, ListAdd{List: r.Then.List, Key: key, TTL: r.Then.TTL, Reason: reason, Rule: r.Name})
}

// TakeListAdds returns the list actions fired since the last call: the
// relay applies them whatever the verdict (an escalation rule fires
// together with a refusal).
func (t *Txn) TakeListAdds() []ListAdd {
	out := t.lists
	t.lists = nil
	return out
}

// fires reports whether the slot's rule fires, recording the hit: from its
// guard alone when that decides, else by running the rule.
func (t *Txn) fires(s *slot, rcpt string) bool {
	switch s.check(t) {
	case guardFalse:
		return false
	case guardTrue:
		if s.exact {
			t.hit(s.rule, rcpt)
			return true
		}
	}
	return t.eval(s.rule, rcpt)
}

// eval runs one rule and records a hit if it fired. Errors are of two
// kinds (SPEC 6). A fact that could not be computed at all (the store is
// down, no resolver answers) leaves the rule undecided: for an enforced rule
// the message is tempfailed, since neither passing nor refusing it would be
// a decision the operator wrote. An error of the expression itself (an index
// out of range, a bad pattern from the sender) is a bug in the rule: the
// rule does not fire and the error is recorded and counted, but the message
// goes on; one broken rule must not become an outage.
func (t *Txn) eval(r *Rule, rcpt string) bool {
	out, err := t.vm.Run(r.compiled.prog, t.m)
	if ferr := t.m.Err(); ferr != nil {
		t.m.ClearErr()
		if !errors.Is(ferr, builtins.ErrInvalidArgument) {
			t.errors = append(t.errors, fmt.Sprintf("rule %s (%s): %v", r.Name, r.Where(), ferr))
			if !r.Shadow && t.decided == nil {
				t.decided = &decision{phase: r.Phase, internal: true}
			}
			return false
		}
		err = ferr
	}
	if err == nil {
		if _, ok := out.(bool); !ok {
			err = fmt.Errorf("the expression gave %T, not true or false", out)
		}
	}
	if err != nil {
		t.ruleError(r, rcpt, err)
		return false
	}
	fired := out.(bool)
	if fired {
		t.hit(r, rcpt)
	}
	return fired
}

// ruleError records an error of r's expression: the rule did not fire.
func (t *Txn) ruleError(r *Rule, rcpt string, err error) {
	re := RuleError{Rule: r.Name, Where: r.Where(), Shadow: r.Shadow, Recipient: rcpt, Err: err.Error()}
	var fe *file.Error
	if errors.As(err, &fe) {
		// expr's message carries a snippet of the expression over several
		// lines; the position in the rules file says the same on one.
		re.Err = fe.Message
		if r.compiled.pos != nil {
			re.Where = r.compiled.pos(fe.From)
		}
	}
	t.ruleErrs = append(t.ruleErrs, re)
	t.errors = append(t.errors, re.String())
	t.rs.ruleErrors[r.Index].Add(1)
}

func (t *Txn) hit(r *Rule, rcpt string) {
	c := r.compiled
	ev := make([]Evidence, 0, len(c.facts)+len(c.evidence))
	for _, f := range c.facts {
		// Short-circuit evaluation may not have read every fact the rule
		// names; show only what was read (or known anyway).
		if t.m.Known(f) {
			ev = append(ev, Evidence{Name: f.Name, Value: t.m.Value(f)})
			if f.Detail != nil {
				if n, v := f.Detail(t.m); n != "" {
					ev = append(ev, Evidence{Name: n, Value: v})
				}
			}
		}
	}
	for _, e := range c.evidence {
		if v, err := t.vm.Run(e.prog, t.m); err == nil && t.m.Err() == nil {
			ev = append(ev, Evidence{Name: e.label, Value: v})
		}
		t.m.ClearErr()
	}
	h := Hit{Rule: r.Name, Phase: r.Phase.String(), Action: r.Then.String(), Shadow: r.Shadow, Recipient: rcpt, Evidence: ev}
	if r.Then.Kind == ActScore {
		h.Score = r.Then.Score
	}
	t.hits = append(t.hits, h)
}

// Verdict returns the verdict as it stands: final after Data, or the
// refusal decided at an earlier phase.
func (t *Txn) Verdict() *Verdict {
	v := &Verdict{
		ID:    t.id,
		Score: roundScore(t.score),
		Hits:  append([]Hit(nil), t.hits...),
		Phase: builtins.Data.String(),
	}
	if len(t.rcpts) > 0 {
		v.Recipients = append([]RecipientVerdict(nil), t.rcpts...)
	}
	if len(t.errors) > 0 {
		v.Errors = append([]string(nil), t.errors...)
	}
	if len(t.ruleErrs) > 0 {
		v.RuleErrors = append([]RuleError(nil), t.ruleErrs...)
	}
	if len(t.lists) > 0 {
		v.Lists = append([]ListAdd(nil), t.lists...)
	}
	th := t.rs.thresholds
	switch d := t.decided; {
	case d != nil && d.internal:
		v.Action, v.Code, v.Enhanced, v.Text, v.Phase = Tempfail, 451, "4.3.0", internalErrorText, d.phase.String()
	case d != nil && d.rule.Then.Kind == ActBlock:
		a := d.rule.Then
		v.Action, v.Code, v.Enhanced, v.Text = blockAction(a.Code), a.Code, a.Enhanced, a.Text
		v.Rule, v.Phase = d.rule.Name, d.phase.String()
	case d != nil: // accept
		v.Action, v.Code, v.Enhanced, v.Text = Accept, 250, "2.0.0", "Ok"
		v.Rule, v.Phase = d.rule.Name, d.phase.String()
	case t.noRecipients():
		// Nothing left to deliver: the message ends as its first refused
		// recipient did.
		r := t.rcpts[0]
		v.Action, v.Code, v.Enhanced, v.Text, v.Rule, v.Phase = r.Action, r.Code, r.Enhanced, r.Text, r.Rule, builtins.Rcpt.String()
	case t.dataDone && t.allRecipientsAllowlisted():
		v.Action, v.Code, v.Enhanced, v.Text = Accept, 250, "2.0.0", "Ok"
		v.Phase = builtins.Rcpt.String()
	case t.dataDone && th.Reject != nil && v.Score >= *th.Reject:
		v.Action, v.Code, v.Enhanced, v.Text = Reject, 554, "5.7.1", thresholdText
	case t.hold != nil:
		v.Action, v.Code, v.Enhanced, v.Text, v.Rule = Hold, 250, "2.0.0", t.hold.Then.Text, t.hold.Name
	case t.dataDone && th.Hold != nil && v.Score >= *th.Hold:
		v.Action, v.Code, v.Enhanced, v.Text = Hold, 250, "2.0.0", defaultHoldText
	case t.dataDone && th.Tag != nil && v.Score >= *th.Tag:
		v.Action, v.Code, v.Enhanced, v.Text = Tag, 250, "2.0.0", "Ok"
	default:
		v.Action, v.Code, v.Enhanced, v.Text = Accept, 250, "2.0.0", "Ok"
	}
	return v
}
