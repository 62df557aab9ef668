package engine

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/sluicemail/sluice/builtins"
)

func TestMultiMatcher(t *testing.T) {
	tests := []struct {
		patterns []string
		text     string
		want     string // matched pattern indices
	}{
		{[]string{"he", "she", "his", "hers"}, "ushers", "0,1,3"},
		{[]string{"a", "aa", "aaa"}, "aa", "0,1"},
		{[]string{"abc", "bcd", "cde"}, "abcde", "0,1,2"},
		{[]string{"free money", "viagra", ""}, "get FREE money", "2"},
		{[]string{"x"}, "", ""},
		{[]string{"é", "日本"}, "café in 日本", "0,1"},
		{[]string{"abab", "bab"}, "ababab", "0,1"},
		{[]string{"\x00\xff", "\xff"}, "a\x00\xffb", "0,1"},
	}
	for _, tt := range tests {
		m := newMultiMatcher(tt.patterns)
		found := make([]bool, len(tt.patterns))
		m.match(tt.text, found)
		var got []string
		for i, f := range found {
			if f {
				got = append(got, fmt.Sprint(i))
			}
		}
		if strings.Join(got, ",") != tt.want {
			t.Errorf("%q in %q: matched %v, want %s", tt.patterns, tt.text, got, tt.want)
		}
	}
}

// FuzzMultiMatcher checks the automaton against strings.Contains.
func FuzzMultiMatcher(f *testing.F) {
	f.Add("he\x00she\x00his\x00hers", "ushers")
	f.Add("a\x00aa\x00aaa\x00", "baaab")
	f.Add("abab\x00bab\x00b", "abababa")
	f.Fuzz(func(t *testing.T, joined, text string) {
		patterns := strings.Split(joined, "\x00")
		if len(patterns) > 64 {
			patterns = patterns[:64]
		}
		m := newMultiMatcher(patterns)
		found := make([]bool, len(patterns))
		m.match(text, found)
		for i, p := range patterns {
			if found[i] != strings.Contains(text, p) {
				t.Fatalf("pattern %q in %q: matcher says %v", p, text, found[i])
			}
		}
	})
}

func TestFindGuard(t *testing.T) {
	tests := map[string]string{
		`from_domain == "example.com" and size > 3`: `from_domain == [example.com]`,
		`"example.com" == from_domain`:              `from_domain == [example.com]`,
		`size > 100`:                                `size > [100]`,
		`100 < size`:                                `size > [100]`,
		`size >= 1.5 and subject_caps`:              `size >= [1.5]`,
		`subject contains "free"`:                   `subject contains [free]`,
		`subject startsWith "Re:"`:                  `subject startsWith [Re:]`,
		`helo in ["localhost", "local"]`:            `helo == [localhost local]`,
		`helo == "a" or helo == "b"`:                `helo == [a b]`,
		`rdns_none`:                                 `rdns_none == true`,
		`not tls and authenticated`:                 `tls == false`,
		`tls == false`:                              `tls == false`,
		`(size > 1 and helo == "x") and tls`:        `size > [1]`,
		`helo == "a" or size > 3`:                   `none`,
		`header("x") == "y"`:                        `none`,
		`"free" contains subject`:                   `none`,
		`size > 3 or true`:                          `none`,
		`rcpt_count in [1, 2]`:                      `rcpt_count == [1 2]`,
		`let s = subject; s == "x"`:                 `none`,
		`subject == 3 or false`:                     `none`,
	}
	reg := builtins.NewRegistry()
	c := newExprCompiler(reg)
	for src, want := range tests {
		cp, errs := c.compileWhen(src)
		if errs != nil {
			if want != "none" {
				t.Errorf("%s: %v", src, errs)
			}
			continue
		}
		got := "none"
		if g := cp.guard; g != nil {
			switch {
			case g.strs != nil:
				got = fmt.Sprintf("%s %s %v", g.fact.Name, g.op, g.strs)
			case g.nums != nil:
				got = fmt.Sprintf("%s %s %v", g.fact.Name, g.op, g.nums)
			default:
				got = fmt.Sprintf("%s %s %v", g.fact.Name, g.op, g.b)
			}
		}
		if got != want {
			t.Errorf("guard of %s = %s, want %s", src, got, want)
		}
	}
}

// TestGuardsDoNotChangeVerdicts evaluates the same rules with and without
// guards and matchers over varied messages: every verdict and hit must be
// the same.
func TestGuardsDoNotChangeVerdicts(t *testing.T) {
	src := generatedRules(400) + `
  - x1: 'not tls and subject contains "keyword-8" => +1'
  - x2: 'helo in ["h6", "h14"] => block 550 5.7.1 "helo"'
  - x3: 'size >= 700 and size < 900 => hold'
  - x4: 'rdns_none == false and text contains "phrase 15" => accept'
  - x5: 'subject startsWith "keyword" or subject endsWith "-16" => +2'
  - x6: 'text contains "" => +0.5'
  - x7: 'subject_caps => +5'
  - x8: 'size > 1000 => +4'
`
	guarded := mustLoad(t, "gen.yaml", src)
	plain := mustLoad(t, "gen.yaml", src)
	for _, r := range plain.rules {
		r.compiled.guard = nil
	}
	plain.matchers = nil
	r := rand.New(rand.NewPCG(7, 9))
	fired := map[string]bool{}
	actions := map[string]bool{}
	pick := func(format string, n int) string { return fmt.Sprintf(format, r.IntN(n)) }
	for i := range 300 {
		subject := pick("keyword-%d", 60)
		if r.IntN(3) == 0 {
			subject = strings.ToUpper(subject + " and more words here")
		}
		raw := fmt.Sprintf("From: x@%s\r\nTo: y@%s\r\nSubject: %s\r\nX-Campaign: %s\r\n\r\nbody %s and %s\r\n%s\r\n",
			pick("d%d.example", 60), pick("r%d.example", 60), subject, pick("c%d", 60),
			pick("phrase %d", 60), pick("phrase %d", 60), strings.Repeat("x", r.IntN(1200)))
		in := func() *builtins.Input {
			return &builtins.Input{ClientIP: []string{"198.51.100.7", "192.0.2.1", "192.0.2.2", "192.0.2.3"}[r.IntN(4)], RDNSKnown: r.IntN(2) == 0, TLS: i%2 == 0, SMTPUser: pick("u%d", 60),
				Overrides: map[string]any{"hourly_sent": r.IntN(1100)}}
		}
		helo := pick("h%d", 20)
		from := pick("x@m%d.example", 60)
		rcpts := []string{pick("y@r%d.example", 60), "z@example.org"}
		inA, inB := in(), &builtins.Input{}
		*inB = *inA
		inB.Overrides = map[string]any{"hourly_sent": inA.Overrides["hourly_sent"]}
		env := Envelope{Helo: helo, MailFrom: from, Rcpts: rcpts, Raw: []byte(raw)}
		va := guarded.Replay(t.Context(), inA, env)
		vb := plain.Replay(t.Context(), inB, env)
		va.ID, vb.ID = "", ""
		if !reflect.DeepEqual(va, vb) {
			t.Fatalf("message %d: guarded verdict differs:\n%+v\nplain:\n%+v", i, va, vb)
		}
		for _, h := range va.Hits {
			fired[h.Rule] = true
		}
		actions[va.Action] = true
	}
	// The comparison means something only if the messages exercise the rules.
	if len(fired) < 100 || len(actions) < 4 {
		t.Errorf("only %d distinct rules fired and %d actions seen: the messages do not exercise the rules", len(fired), len(actions))
	}
}
