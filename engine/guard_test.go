package engine

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sluicemail/sluice/builtins"
	"github.com/sluicemail/sluice/mailauth"
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
		`from_domain == "example.com" and size > 3`:            `all(from_domain == [example.com], size > [3])`,
		`"example.com" == from_domain`:                         `from_domain == [example.com]`,
		`size > 100`:                                           `size > [100]`,
		`100 < size`:                                           `size > [100]`,
		`size >= 1.5 and subject_caps`:                         `all(size >= [1.5], subject_caps == true)`,
		`subject contains "free"`:                              `subject contains [free]`,
		`subject startsWith "Re:"`:                             `subject startsWith [Re:]`,
		`helo in ["localhost", "local"]`:                       `helo == [localhost local]`,
		`helo == "a" or helo == "b"`:                           `helo == [a b]`,
		`rdns_none`:                                            `rdns_none == true`,
		`not tls and authenticated`:                            `all(tls == false, authenticated == true)`,
		`tls == false`:                                         `tls == false`,
		`(size > 1 and helo == "x") and tls`:                   `all(size > [1], helo == [x], tls == true)`,
		`helo == "a" or size > 3`:                              `any(helo == [a], size > [3])`,
		`helo == "a" or len(links) > 3`:                        `none`,
		`size > 1 and len(links) > 3`:                          `size > [1]…`,
		`(size > 1 and len(links) > 3) or tls`:                 `any(size > [1]…, tls == true)…`,
		`(tls or (size > 1 and len(links) > 3)) and rdns_none`: `all(any(tls == true, size > [1]…)…, rdns_none == true)…`,
		`header("x") == "y"`:                                   `header() == [y]`,
		`has_header("Date")`:                                   `has_header() == true`,
		`not has_header("Date") and size > 1`:                  `all(has_header() == false, size > [1])`,
		`in_list("l", local_part(rcpt))`:                       `in_list() == true`,
		`in_list("l", subject) == false`:                       `in_list() == false`,
		`header(subject) contains "x"`:                         `header() contains [x]`,
		`len(links) > 3`:                                       `none`,
		`any(rcpts, in_list("l", #))`:                          `none`,
		`"free" contains subject`:                              `none`,
		`size > 3 or true`:                                     `none`,
		`rcpt_count in [1, 2]`:                                 `rcpt_count == [1 2]`,
		`let s = subject; s == "x"`:                            `none`,
		`subject == 3 or false`:                                `none`,
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
			got = g.String()
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
  - x9: 'has_header("X-Campaign") and subject contains "keyword-3" => +1'
  - x10: 'not has_header("X-Missing") and size > 1100 => +0.5'
  - x11: 'in_list("gen_ips", client_ip) => +1.5'
  - x12: 'header("X-Campaign") in ["c1", "c2", "c3"] => block 550'
  - x13: 'domain(rcpt) in ["r5.example", "r6.example"] => block 550 5.1.2'
  - x14: 'header("Subject") endsWith "-7" => hold'
  - x15: 'not in_list("gen_ips", client_ip) and local_part(rcpt) == "z" and subject contains "keyword-4" => +3'
  - x16: '(tls or (size > 900 and text contains "phrase 2")) and subject_caps => +1'
  - x17: '(subject contains "keyword-1" and len(rcpts) > 1) or helo == "h3" => +0.5'
  - x18: 'helo == "h4" or has_header("X-Nope") or size < 100 => +0.5'
  - x19: '"127.0.0.2" in dnsbl("zen.example.net", client_ip) => +1'
  - x20: 'not tls and len(dnsbl("bl.example.org", client_ip)) > 0 => +0.5'
  - x21: 'len(dnsbl("dbl.example.net", mail_from_domain)) > 0 => +1'
`
	guarded := mustLoad(t, "gen.yaml", src)
	plain := mustLoad(t, "gen.yaml", src)
	for _, r := range plain.rules {
		r.compiled.guard = nil
	}
	plain.index()
	dns := mailauth.NewStaticResolver(map[string][]string{
		"1.2.0.192.zen.example.net A":   {"127.0.0.2"},
		"2.2.0.192.bl.example.org A":    {"127.0.0.4"},
		"7.100.51.198.bl.example.org A": {"127.0.0.4"},
		"m1.example.dbl.example.net A":  {"127.0.1.2"},
	})
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
			return &builtins.Input{ClientIP: []string{"198.51.100.7", "192.0.2.1", "192.0.2.2", "192.0.2.3"}[r.IntN(4)], RDNSKnown: r.IntN(2) == 0, TLS: i%2 == 0, SMTPUser: pick("u%d", 60), DNS: dns,
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
	for _, x := range []string{"x9", "x10", "x11", "x12", "x13", "x14", "x15", "x16", "x17", "x18", "x19", "x20", "x21"} {
		if !fired[x] {
			t.Errorf("rule %s never fired: the messages do not exercise call guards", x)
		}
	}
	if len(fired) < 100 || len(actions) < 4 {
		t.Errorf("only %d distinct rules fired and %d actions seen: the messages do not exercise the rules", len(fired), len(actions))
	}
}

// TestGuardsDoNotChangeDefaultVerdicts replays every shipped fixture message
// through the default rules with and without guards, in a few contexts.
func TestGuardsDoNotChangeDefaultVerdicts(t *testing.T) {
	files, err := ReadDir("../rules.d")
	if err != nil {
		t.Fatal(err)
	}
	load := func() *RuleSet {
		rs, err := Load(files, builtins.NewRegistry(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	guarded, plain := load(), load()
	for _, r := range plain.rules {
		r.compiled.guard = nil
	}
	plain.index()
	emls, _ := filepath.Glob("../examples/fixtures/messages/*.eml")
	if len(emls) < 10 {
		t.Fatalf("only %d fixture messages", len(emls))
	}
	inputs := []builtins.Input{
		{ClientIP: "127.0.0.1"},
		{ClientIP: "203.0.113.200", RDNSKnown: true, Overrides: map[string]any{"spf": "fail", "hourly_sent": 301}},
		{ClientIP: "192.0.2.1", SMTPUser: "new-signup", Authenticated: true, TLS: true, Overrides: map[string]any{"domain_allowed": false}},
		{ClientIP: "192.0.2.1", SMTPUser: "monitoring", Authenticated: true, Overrides: map[string]any{"dkim": "fail", "dmarc": "fail"}},
	}
	hits := 0
	for _, path := range emls {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for i, base := range inputs {
			for _, helo := range []string{"localhost", "mail.example.com", "ylmf-pc", "[192.0.2.1]"} {
				hdr, _ := builtins.ParseHeader(raw)
				env := Envelope{Helo: helo, MailFrom: hdr.From(), Rcpts: append(hdr.Addresses("To"), "noreply@example.org", "x@localhost"), Raw: raw}
				inA, inB := base, base
				va := guarded.Replay(t.Context(), &inA, env)
				vb := plain.Replay(t.Context(), &inB, env)
				va.ID, vb.ID = "", ""
				if !reflect.DeepEqual(va, vb) {
					t.Fatalf("%s, input %d, helo %s: guarded verdict differs:\n%+v\nplain:\n%+v", path, i, helo, va, vb)
				}
				hits += len(va.Hits)
			}
		}
	}
	if hits < 200 {
		t.Errorf("only %d hits: the replay does not exercise the rules", hits)
	}
}
