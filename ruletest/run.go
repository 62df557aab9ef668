package ruletest

import (
	"context"
	"fmt"
	"math"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sluicemail/sluice/builtins"
	"github.com/sluicemail/sluice/engine"
)

// Result is the outcome of one case.
type Result struct {
	Case     *Case
	Verdict  *engine.Verdict // nil when the case could not run
	Failures []string        // what did not hold; empty when the case passed
	Duration time.Duration
}

// Passed reports whether every expectation held.
func (r *Result) Passed() bool { return len(r.Failures) == 0 }

// Run replays one case through rs.
func Run(ctx context.Context, rs *engine.RuleSet, c *Case) *Result {
	start := time.Now()
	res := &Result{Case: c}
	in, env, err := c.Context.Input(rs.Registry(), c.Message)
	if err != nil {
		res.Failures = []string{err.Error()}
		return res
	}
	res.Verdict = rs.Replay(ctx, in, env)
	expect, unknown := knownRules(&c.Expect, rs)
	res.Failures = append(unknown, Check(&expect, res.Verdict)...)
	res.Failures = append(res.Failures, checkFacts(ctx, rs, c, env)...)
	// An error in a rule's expression is a bug in the rule (SPEC 6): the
	// case fails even when the verdict happens to be the expected one.
	for _, re := range res.Verdict.RuleErrors {
		res.Failures = append(res.Failures, "error in rule: "+re.String())
	}
	res.Duration = time.Since(start)
	return res
}

// checkFacts compares expect.facts with the facts as computed for the
// message, on a fresh evaluation of the same input (facts are computed once
// per message, so this sees what the rules saw).
func checkFacts(ctx context.Context, rs *engine.RuleSet, c *Case, env engine.Envelope) []string {
	if len(c.Expect.Facts) == 0 {
		return nil
	}
	reg := rs.Registry()
	in, _, err := c.Context.Input(reg, c.Message)
	if err != nil {
		return []string{err.Error()}
	}
	in.Helo, in.MailFrom, in.Rcpts, in.Raw = env.Helo, env.MailFrom, env.Rcpts, env.Raw
	m := reg.NewMessage()
	m.Reset(ctx, in, nil)
	var out []string
	names := make([]string, 0, len(c.Expect.Facts))
	for n := range c.Expect.Facts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		f, ok := reg.Fact(n)
		if !ok {
			out = append(out, fmt.Sprintf("expect.facts: no fact is named %s", n))
			continue
		}
		want, err := f.Type.Convert(c.Expect.Facts[n])
		if err != nil {
			out = append(out, fmt.Sprintf("expect.facts.%s: %v", n, err))
			continue
		}
		got := m.Value(f)
		if f.Type.Record() != "" {
			out = append(out, checkRecords(n, f.Type, c.Expect.Facts[n], got)...)
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			out = append(out, fmt.Sprintf("fact %s: expected %v, got %v", n, want, got))
		}
	}
	return out
}

// checkRecords compares a list of records with what a fixture expects of
// it: as many records, and in each the fields the fixture gives (the others
// may be anything), so a case states what it is about.
func checkRecords(name string, t builtins.Type, want any, got any) []string {
	wl, _ := want.([]any) // Convert accepted it: a list of maps
	gv := reflect.ValueOf(got)
	if gv.Len() != len(wl) {
		return []string{fmt.Sprintf("fact %s: expected %d %s records, got %d: %+v", name, len(wl), t.Record(), gv.Len(), got)}
	}
	fields := t.Fields()
	var out []string
	for i, w := range wl {
		rec, _ := w.(map[string]any)
		keys := make([]string, 0, len(rec))
		for k := range rec {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			j := slices.IndexFunc(fields, func(f builtins.Field) bool { return f.Name == k })
			wv, _ := fields[j].Type.Convert(rec[k])
			if g := gv.Index(i).Field(j).Interface(); fmt.Sprint(g) != fmt.Sprint(wv) {
				out = append(out, fmt.Sprintf("fact %s: record %d: .%s expected %v, got %v", name, i+1, k, wv, g))
			}
		}
	}
	return out
}

// knownRules returns e without the rule names rs does not have, and a
// failure for each: a typo in not_rules would otherwise pass forever.
func knownRules(e *Expect, rs *engine.RuleSet) (Expect, []string) {
	var out []string
	var names []string
	keep := func(key string, list []string) []string {
		var kept []string
		for _, r := range list {
			if _, ok := rs.Rule(r); ok {
				kept = append(kept, r)
				continue
			}
			if names == nil {
				for _, rule := range rs.Rules() {
					names = append(names, rule.Name)
				}
			}
			out = append(out, fmt.Sprintf("expect.%s: no rule is named %s%s", key, r, engine.DidYouMean(r, names)))
		}
		return kept
	}
	k := *e
	k.Rules = keep("rules", e.Rules)
	k.NotRules = keep("not_rules", e.NotRules)
	return k, out
}

// Check returns what of e does not hold of v.
func Check(e *Expect, v *engine.Verdict) []string {
	var out []string
	if e.Action != "" && !strings.EqualFold(e.Action, v.Action) {
		out = append(out, fmt.Sprintf("action: expected %s, got %s", e.Action, v.Action))
	}
	if e.Code != 0 && e.Code != v.Code {
		out = append(out, fmt.Sprintf("code: expected %d, got %d", e.Code, v.Code))
	}
	if e.Enhanced != "" && e.Enhanced != v.Enhanced {
		out = append(out, fmt.Sprintf("enhanced: expected %s, got %s", e.Enhanced, v.Enhanced))
	}
	if e.Text != "" && !strings.Contains(v.Text, e.Text) {
		out = append(out, fmt.Sprintf("text: expected it to contain %q, got %q", e.Text, v.Text))
	}
	if s := e.Score; s != nil {
		const eps = 1e-6
		switch {
		case s.Exact != nil && math.Abs(*s.Exact-v.Score) > eps:
			out = append(out, fmt.Sprintf("score: expected %s, got %g", s, v.Score))
		case s.Min != nil && v.Score < *s.Min-eps, s.Max != nil && v.Score > *s.Max+eps:
			out = append(out, fmt.Sprintf("score: expected %s, got %g", s, v.Score))
		}
	}
	for _, r := range e.Rules {
		if !v.Fired(r) {
			out = append(out, fmt.Sprintf("rule %s: expected it to fire, it did not", r))
		}
	}
	for _, r := range e.NotRules {
		if v.Fired(r) {
			out = append(out, fmt.Sprintf("rule %s: expected it not to fire, it did", r))
		}
	}
	for addr, re := range e.Recipients {
		got, ok := v.Recipient(addr)
		if !ok {
			out = append(out, fmt.Sprintf("recipient %s: not among the case's recipients (or the session ended before RCPT)", addr))
			continue
		}
		if re.Action != "" && !strings.EqualFold(re.Action, got.Action) {
			out = append(out, fmt.Sprintf("recipient %s: expected %s, got %s %d %s", addr, re.Action, got.Action, got.Code, got.Enhanced))
		}
		if re.Code != 0 && re.Code != got.Code {
			out = append(out, fmt.Sprintf("recipient %s: expected code %d, got %d", addr, re.Code, got.Code))
		}
		if re.Enhanced != "" && re.Enhanced != got.Enhanced {
			out = append(out, fmt.Sprintf("recipient %s: expected enhanced %s, got %s", addr, re.Enhanced, got.Enhanced))
		}
	}
	return out
}

// Summary is the outcome of a run over many fixture files.
type Summary struct {
	Results []*Result
	// LoadErrors are fixture files or cases that could not be read; each
	// counts as a failure.
	LoadErrors []error
}

// Passed and Failed count cases; a fixture that could not load is a failure.
func (s *Summary) Passed() int {
	n := 0
	for _, r := range s.Results {
		if r.Passed() {
			n++
		}
	}
	return n
}

// Failed counts failed cases plus load errors.
func (s *Summary) Failed() int { return len(s.Results) - s.Passed() + len(s.LoadErrors) }

// RunPaths finds, loads and runs every fixture under paths.
func RunPaths(ctx context.Context, rs *engine.RuleSet, paths []string) (*Summary, error) {
	files, err := Find(paths)
	if err != nil {
		return nil, err
	}
	s := &Summary{}
	for _, f := range files {
		cases, errs := LoadFile(f)
		s.LoadErrors = append(s.LoadErrors, errs...)
		for _, c := range cases {
			s.Results = append(s.Results, Run(ctx, rs, c))
		}
	}
	return s, nil
}

// Unfired returns the rules no case fired, in load order.
func (s *Summary) Unfired(rs *engine.RuleSet) []*engine.Rule {
	fired := map[string]bool{}
	for _, r := range s.Results {
		if r.Verdict == nil {
			continue
		}
		for _, h := range r.Verdict.Hits {
			fired[h.Rule] = true
		}
	}
	var out []*engine.Rule
	for _, r := range rs.Rules() {
		if !fired[r.Name] {
			out = append(out, r)
		}
	}
	return out
}
