package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/sluicemail/sluice/builtins"
)

// fixedClassifier answers spam_probability with a set value and counts how
// often it was asked.
type fixedClassifier struct {
	p      float64
	tokens []string
	err    error
	calls  int
	subj   string // the subject of the parse it was given
}

func (c *fixedClassifier) SpamProbability(_ context.Context, p *builtins.Parsed) (float64, []string, error) {
	c.calls++
	c.subj = p.Header.Subject()
	return c.p, c.tokens, c.err
}

const classifierRules = `
rules:
  - sure: spam_probability > 0.99 => +5
  - also: spam_probability > 0.9 and not outbound => +1
  - ham: spam_probability < 0.01 => -2
`

// TestSpamProbability: the fact asks the classifier once per message over
// the shared parse, is 0.5 without one, gives way to an override, carries
// the tokens as evidence next to it, and a classifier that fails makes the
// rules that read it fail rather than guess.
func TestSpamProbability(t *testing.T) {
	rs := mustLoad(t, "r.yaml", classifierRules)
	evidence := func(v *Verdict, rule string) string {
		for _, h := range v.Hits {
			if h.Rule == rule {
				return FormatEvidenceForTest(h.Evidence)
			}
		}
		return "(did not fire)"
	}

	v := replay(rs, &builtins.Input{ClientIP: "192.0.2.10"}, "a@example.com", []string{"b@example.org"}, capsMsg)
	if len(v.Hits) != 0 || v.Score != 0 {
		t.Errorf("no classifier: hits %s score %g, want none (0.5)", hitNames(v), v.Score)
	}

	c := &fixedClassifier{p: 0.999, tokens: []string{"subject:viagra=0.99", "body:cheap=0.97"}}
	v = replay(rs, &builtins.Input{ClientIP: "192.0.2.10", Classifier: c}, "a@example.com", []string{"b@example.org"}, capsMsg)
	if hitNames(v) != "sure,also" || v.Score != 6 {
		t.Errorf("p=0.999: hits %q score %g", hitNames(v), v.Score)
	}
	if c.calls != 1 || c.subj == "" {
		t.Errorf("the classifier was asked %d times (want once) with subject %q", c.calls, c.subj)
	}
	want := "spam_probability=0.999 spam_tokens=[subject:viagra=0.99 body:cheap=0.97]"
	if got := evidence(v, "sure"); got != want {
		t.Errorf("evidence of sure = %s, want %s", got, want)
	}
	if got := evidence(v, "also"); !strings.HasPrefix(got, want) {
		t.Errorf("evidence of also = %s, want it to start with %s", got, want)
	}

	// A fixture's value wins, and no stale tokens show with it.
	in := &builtins.Input{ClientIP: "192.0.2.10", Classifier: c, Overrides: map[string]any{"spam_probability": 0.001}}
	v = replay(rs, in, "a@example.com", []string{"b@example.org"}, capsMsg)
	if hitNames(v) != "ham" || evidence(v, "ham") != "spam_probability=0.001" || c.calls != 1 {
		t.Errorf("override: hits %q evidence %s calls %d", hitNames(v), evidence(v, "ham"), c.calls)
	}

	bad := &fixedClassifier{err: errors.New("store down")}
	v = replay(rs, &builtins.Input{ClientIP: "192.0.2.10", Classifier: bad}, "a@example.com", []string{"b@example.org"}, capsMsg)
	if len(v.Hits) != 0 || v.Action != Tempfail || !strings.Contains(fmt.Sprint(v.Errors), "classifier: store down") {
		t.Errorf("failing classifier: action %s hits %q errors %v, want a tempfail naming it", v.Action, hitNames(v), v.Errors)
	}
}
