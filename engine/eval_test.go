package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicemail/sluice/builtins"
)

const plainMsg = "From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: Quarterly report\r\nX-Mailer: PHPMailer 6.1\r\n\r\nHello Bob, see https://example.com/report\r\n"

const capsMsg = "From: promo@spam.example\r\nTo: bob@example.org\r\nSubject: FREE MONEY FOR YOU NOW\r\n\r\nClick http://spam.example/win\r\n"

// replay runs one message through rs with the given envelope.
func replay(rs *RuleSet, in *builtins.Input, from string, rcpts []string, raw string) *Verdict {
	if in == nil {
		in = &builtins.Input{ClientIP: "192.0.2.10", RDNS: "mail.example.com", RDNSKnown: true}
	}
	return rs.Replay(context.Background(), in, Envelope{Helo: "mail.example.com", MailFrom: from, Rcpts: rcpts, Raw: []byte(raw)})
}

func hitNames(v *Verdict) string {
	var n []string
	for _, h := range v.Hits {
		s := h.Rule
		if h.Shadow {
			s += "(shadow)"
		}
		if h.Recipient != "" {
			s += "@" + h.Recipient
		}
		n = append(n, s)
	}
	return strings.Join(n, ",")
}

func TestVerdictPrecedence(t *testing.T) {
	const th = "thresholds: {reject: 13, hold: 8, tag: 5}\n"
	tests := []struct {
		name     string
		rules    string
		in       *builtins.Input
		raw      string
		action   string
		code     int
		enhanced string
		score    float64
		rule     string
		hits     string
	}{
		{"nothing fires: accept", th + "rules:\n  - a: size > 1000000 => +20\n", nil, plainMsg, Accept, 250, "2.0.0", 0, "", ""},
		{"scores add to tag", th + "rules:\n  - a: size > 0 => +2.5\n  - b: subject != \"\" => +2.5\n", nil, plainMsg, Tag, 250, "2.0.0", 5, "", "a,b"},
		{"threshold hold", th + "rules:\n  - a: size > 0 => +8\n", nil, plainMsg, Hold, 250, "2.0.0", 8, "", "a"},
		{"threshold reject is 554 5.7.1", th + "rules:\n  - a: size > 0 => +6.5\n  - b: size > 0 => +6.5\n", nil, plainMsg, Reject, 554, "5.7.1", 13, "", "a,b"},
		{"float scores reach the threshold exactly", th + "rules:\n  - a: size > 0 => +6.1\n  - b: size > 0 => +6.2\n  - c: size > 0 => +0.7\n", nil, plainMsg, Reject, 554, "5.7.1", 13, "", "a,b,c"},
		{"negative score", th + "rules:\n  - a: size > 0 => +6\n  - b: size > 0 => -2\n", nil, plainMsg, Accept, 250, "2.0.0", 4, "", "a,b"},
		{"first block wins within a phase", th + "rules:\n  - a: size > 0 => block 550 5.7.1 \"first\"\n  - b: size > 0 => block 554 5.7.2 \"second\"\n", nil, plainMsg, Reject, 550, "5.7.1", 0, "a", "a"},
		{"earlier phase block wins over earlier-listed data block", th + "rules:\n  - a: size > 0 => block 554\n  - b: mail_from != \"\" => block 421 4.7.1 \"slow down\"\n", nil, plainMsg, Tempfail, 421, "4.7.1", 0, "b", "b"},
		{"accept is terminal: no later rule scores", th + "rules:\n  - a: size > 0 => +3\n  - ok: from_domain == \"example.com\" => accept\n  - b: size > 0 => +20\n", nil, plainMsg, Accept, 250, "2.0.0", 3, "ok", "a,ok"},
		{"accept at mail skips data rules", th + "rules:\n  - b: size > 0 => block 550\n  - ok: mail_from == \"alice@example.com\" => accept\n", nil, plainMsg, Accept, 250, "2.0.0", 0, "ok", "ok"},
		{"hold rule is not terminal", th + "rules:\n  - h: size > 0 => hold \"review\"\n  - a: size > 0 => +1\n", nil, plainMsg, Hold, 250, "2.0.0", 1, "h", "h,a"},
		{"reject threshold beats a hold rule", th + "rules:\n  - h: size > 0 => hold\n  - a: size > 0 => +14\n", nil, plainMsg, Reject, 554, "5.7.1", 14, "", "h,a"},
		{"block after hold refuses", th + "rules:\n  - h: size > 0 => hold\n  - b: size > 0 => block 550\n", nil, plainMsg, Reject, 550, "5.7.1", 0, "b", "h,b"},
		{"shadow block does not act", th + "rules:\n  - name: s\n    when: size > 0\n    then: block 550\n    mode: shadow\n  - a: size > 0 => +1\n", nil, plainMsg, Accept, 250, "2.0.0", 1, "", "s(shadow),a"},
		{"shadow score does not count", th + "rules:\n  - name: s\n    when: size > 0\n    then: +50\n    mode: shadow\n", nil, plainMsg, Accept, 250, "2.0.0", 0, "", "s(shadow)"},
		{"no thresholds: scores never refuse", "rules:\n  - a: size > 0 => +100\n", nil, plainMsg, Accept, 250, "2.0.0", 100, "", "a"},
		{"connect-phase block", th + "rules:\n  - c: client_ip == \"192.0.2.10\" => block 554 5.7.1 \"go away\"\n", nil, plainMsg, Reject, 554, "5.7.1", 0, "c", "c"},
		{"header function", th + "rules:\n  - php: header(\"x-mailer\") startsWith \"PHPMailer\" => +6\n", nil, plainMsg, Tag, 250, "2.0.0", 6, "", "php"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := mustLoad(t, "r.yaml", tt.rules)
			v := replay(rs, tt.in, "alice@example.com", []string{"bob@example.org"}, tt.raw)
			if v.Action != tt.action || v.Code != tt.code || v.Enhanced != tt.enhanced || v.Score != tt.score || v.Rule != tt.rule || hitNames(v) != tt.hits {
				t.Errorf("got %s %d %s score %v rule %q hits %q (errors %v)\nwant %s %d %s score %v rule %q hits %q",
					v.Action, v.Code, v.Enhanced, v.Score, v.Rule, hitNames(v), v.Errors, tt.action, tt.code, tt.enhanced, tt.score, tt.rule, tt.hits)
			}
			if v.ID == "" {
				t.Error("verdict has no id")
			}
		})
	}
}

func TestPerRecipient(t *testing.T) {
	rs := mustLoad(t, "r.yaml", `
thresholds: {reject: 13}
lists:
  role_locals: [noreply, no-reply]
rules:
  - role: in_list("role_locals", local_part(rcpt)) => block 550 5.1.1 "These can't receive email"
  - bounced: in_list("bounces", rcpt) => block 550 5.1.1 "Email address is on account's Bounce list."
  - vip: rcpt == "boss@example.org" => accept
  - vipblock: rcpt == "boss@example.org" => block 550
  - per: rcpt_domain == "example.org" => +1
`)
	in := &builtins.Input{ClientIP: "192.0.2.10", Lists: mapLists{"bounces": {"gone@example.org"}}}
	v := replay(rs, in, "alice@example.com", []string{"bob@example.org", "NoReply@example.org", "gone@example.org", "boss@example.org"}, plainMsg)
	if v.Action != Accept || v.Score != 1 {
		t.Fatalf("message verdict %s score %v, want accept with 1 (bob alone reaches the scoring rule)", v.Action, v.Score)
	}
	want := map[string]string{
		"bob@example.org":     "accept 250 ",
		"NoReply@example.org": "reject 550 role",
		"gone@example.org":    "reject 550 bounced",
		"boss@example.org":    "accept 250 vip",
	}
	for addr, w := range want {
		r, ok := v.Recipient(addr)
		if got := fmt.Sprintf("%s %d %s", r.Action, r.Code, r.Rule); !ok || got != w {
			t.Errorf("recipient %s: %q, want %q", addr, got, w)
		}
	}
	if got := strings.Join(in.Rcpts, ","); got != "bob@example.org,boss@example.org" {
		t.Errorf("accepted recipients %q", got)
	}

	// Every recipient refused: the message ends as the first refusal.
	v = replay(rs, &builtins.Input{ClientIP: "192.0.2.10"}, "alice@example.com", []string{"noreply@example.org"}, plainMsg)
	if v.Action != Reject || v.Code != 550 || v.Enhanced != "5.1.1" || v.Rule != "role" {
		t.Errorf("all refused: %s %d %s %s", v.Action, v.Code, v.Enhanced, v.Rule)
	}
}

type mapLists map[string][]string

func (m mapLists) InList(_ context.Context, name, value string) (bool, error) {
	for _, v := range m[name] {
		if strings.EqualFold(v, value) {
			return true, nil
		}
	}
	return false, nil
}

type failingLists struct{}

func (failingLists) InList(context.Context, string, string) (bool, error) {
	return false, errors.New("store unreachable")
}

// countingRegistry adds facts that count how often they are computed.
func countingRegistry(t *testing.T, counts map[string]int, failing string) *builtins.Registry {
	reg := builtins.NewRegistry()
	for _, name := range []string{"costly_a", "costly_b"} {
		name := name
		if err := reg.Register(builtins.Fact{Name: name, Type: builtins.Bool, Phase: builtins.Mail, Doc: "test",
			Compute: func(*builtins.Message) (any, error) { counts[name]++; return true, nil }}); err != nil {
			t.Fatal(err)
		}
	}
	if err := reg.Register(builtins.Fact{Name: "broken", Type: builtins.Int, Phase: builtins.Mail, Doc: "test",
		Compute: func(*builtins.Message) (any, error) { return nil, errors.New(failing) }}); err != nil {
		t.Fatal(err)
	}
	return reg
}

func TestFactsAreLazyAndComputedOnce(t *testing.T) {
	counts := map[string]int{}
	reg := countingRegistry(t, counts, "boom")
	rs, err := Load([]File{{Name: "r.yaml", Src: []byte(`
rules:
  - a: size < 0 and costly_b => +1
  - b: costly_a => +1
  - c: costly_a and costly_a => +1
  - d: authenticated or costly_a => +1
`)}}, reg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		replay(rs, nil, "alice@example.com", []string{"bob@example.org"}, plainMsg)
	}
	if counts["costly_b"] != 0 {
		t.Errorf("costly_b computed %d times behind a false `and`, want 0", counts["costly_b"])
	}
	if counts["costly_a"] != 3 {
		t.Errorf("costly_a computed %d times over 3 messages, want once per message", counts["costly_a"])
	}
}

func TestErrorsTempfail(t *testing.T) {
	reg := countingRegistry(t, map[string]int{}, "lookup timed out")
	rs, err := Load([]File{{Name: "r.yaml", Src: []byte(`
rules:
  - name: shadow-broken
    when: broken > 3
    then: block 550
    mode: shadow
  - s: size > 0 => +1
  - broken-rule: broken > 3 => block 550
  - never: size > 0 => +5
`)}}, reg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	v := replay(rs, nil, "alice@example.com", []string{"bob@example.org"}, plainMsg)
	if v.Action != Tempfail || v.Code != 451 || v.Enhanced != "4.3.0" || strings.Contains(v.Text, "timed out") {
		t.Fatalf("got %s %d %s %q, want 451 4.3.0 with no internal detail", v.Action, v.Code, v.Enhanced, v.Text)
	}
	if len(v.Errors) != 2 || !strings.Contains(v.Errors[1], "broken-rule") || !strings.Contains(v.Errors[1], "lookup timed out") {
		t.Errorf("errors = %q", v.Errors)
	}
	if v.Phase != "mail" || hitNames(v) != "" {
		t.Errorf("phase %s hits %q", v.Phase, hitNames(v))
	}

	// A store failure inside in_list is an error too, never "not listed".
	rs = mustLoad(t, "r.yaml", "rules:\n  - b: in_list(\"blocked\", mail_from) => block 550\n")
	v = replay(rs, &builtins.Input{ClientIP: "192.0.2.1", Lists: failingLists{}}, "a@b.example", []string{"c@d.example"}, plainMsg)
	if v.Action != Tempfail || v.Code != 451 {
		t.Errorf("store failure: %s %d", v.Action, v.Code)
	}

	if len(v.RuleErrors) != 0 {
		t.Errorf("a fact that could not be computed counted as a rule error: %v", v.RuleErrors)
	}
}

// TestRuleErrorsDoNotTempfail: an error of the expression itself is a bug
// in the rule (SPEC 6): the rule does not fire, the error is recorded with
// its position and counted, and the message is judged by the other rules.
func TestRuleErrorsDoNotTempfail(t *testing.T) {
	const noFrom = "To: bob@example.org\r\nSubject: hello\r\nX-Pattern: ([a-\r\nX-Window: 2y\r\n\r\nbody\r\n"
	tests := []struct {
		name, rules, msg string
		action           string
		score            float64
		fired            string
		errs             []string // each a substring of one RuleError, in order
	}{
		{"index out of range on a message without From", `
  - idx: 'split(from, "@")[1] == "x" => block 550'
  - s: size > 0 => +1`, noFrom, Accept, 1, "s",
			[]string{"r.yaml:2:27: rule idx: index out of range"}},
		{"bad regexp from the sender", `
  - re: 'subject matches header("X-Pattern") => block 550'
  - s: size > 0 => +2`, noFrom, Accept, 2, "s",
			[]string{"r.yaml:2:18: rule re: error parsing regexp"}},
		{"bad count window from the sender", `
  - cw: 'count("x", subject, header("X-Window")) > 0 => block 421'
  - s: size > 0 => +1`, noFrom, Accept, 1, "s",
			[]string{"rule cw: invalid argument: count"}},
		{"full form, per recipient, later rules still refuse", `
  - name: rc
    when: split(rcpt, "+")[1] == "tag"
    then: block 550
  - b: 'subject == "hello" => block 554 5.7.1 "no"'`, noFrom, Reject, 0, "b",
			[]string{"r.yaml:3:27: rule rc: index out of range", "for bob@example.org"}},
		{"shadow rule", `
  - name: sh
    when: split(from, "@")[1] == "x"
    then: block 550
    mode: shadow`, noFrom, Accept, 0, "",
			[]string{"rule sh: index out of range"}},
		{"a rule that works on a normal message", `
  - idx: 'split(from, "@")[1] == "example.com" => +3'`, plainMsg, Accept, 3, "idx", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := mustLoad(t, "r.yaml", "rules:"+tt.rules+"\n")
			for range 2 { // the count goes up with each message
				v := replay(rs, nil, "a@b.example", []string{"bob@example.org"}, tt.msg)
				if v.Action != tt.action || v.Score != tt.score || hitNames(v) != tt.fired {
					t.Errorf("verdict %s score %v fired %q, want %s %v %q (errors %q)", v.Action, v.Score, hitNames(v), tt.action, tt.score, tt.fired, v.Errors)
				}
				if len(v.RuleErrors) != min(len(tt.errs), 1) || len(v.Errors) != len(v.RuleErrors) {
					t.Fatalf("rule errors %v, errors %q", v.RuleErrors, v.Errors)
				}
				for _, want := range tt.errs {
					if !strings.Contains(v.Errors[0], want) || !strings.Contains(v.Errors[0], "the rule did not fire") {
						t.Errorf("error %q lacks %q", v.Errors[0], want)
					}
				}
			}
			for name, n := range rs.RuleErrors() {
				if len(tt.errs) == 0 || n != 2 || name != v0(tt.errs) {
					t.Errorf("error count %s=%d", name, n)
				}
			}
		})
	}
}

// v0 is the rule name in an expected error: "... rule NAME: ...".
func v0(errs []string) string {
	_, rest, _ := strings.Cut(errs[0], "rule ")
	name, _, _ := strings.Cut(rest, ":")
	return name
}

// TestGuardPanicIsARuleError: a native call that panics inside a guard is
// reported like the same panic in the VM, as an error of the rule, and does
// not take the process down.
func TestGuardPanicIsARuleError(t *testing.T) {
	reg := builtins.NewRegistry()
	if err := reg.RegisterFunc(builtins.Func{Name: "fragile", Signature: "fragile(s) string", Phase: builtins.Connect, Doc: "test",
		Params: []builtins.Type{builtins.String}, Result: builtins.String,
		Call: func(_ *builtins.Message, a []any) any {
			s := a[0].(string)
			return s[:strings.IndexByte(s, '.')] // panics without a dot
		}}); err != nil {
		t.Fatal(err)
	}
	src := "rules:\n  - p: 'fragile(helo) == \"mail\" => +1'\n  - s: size > 0 => +1\n"
	guarded, err := Load([]File{{Name: "r.yaml", Src: []byte(src)}}, reg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if guarded.rules[0].compiled.guard == nil {
		t.Fatal("the call got no guard: the test does not test guards")
	}
	plain, _ := Load([]File{{Name: "r.yaml", Src: []byte(src)}}, reg, Options{})
	for _, r := range plain.rules {
		r.compiled.guard = nil
	}
	plain.index()
	for _, helo := range []string{"mail.example.com", "localhost"} {
		env := Envelope{Helo: helo, MailFrom: "a@b.example", Rcpts: []string{"c@d.example"}, Raw: []byte(plainMsg)}
		va := guarded.Replay(t.Context(), &builtins.Input{ClientIP: "192.0.2.1"}, env)
		vb := plain.Replay(t.Context(), &builtins.Input{ClientIP: "192.0.2.1"}, env)
		va.ID, vb.ID = "", ""
		if !reflect.DeepEqual(va, vb) {
			t.Errorf("helo %s: guarded verdict differs:\n%+v\nplain:\n%+v", helo, va, vb)
		}
		if helo == "localhost" && (va.Action != Accept || len(va.RuleErrors) != 1 || hitNames(va) != "s") {
			t.Errorf("helo %s: %s, hits %q, rule errors %v", helo, va.Action, hitNames(va), va.RuleErrors)
		}
	}
}

func TestEvidence(t *testing.T) {
	rs := mustLoad(t, "r.yaml", `
lists:
  roles: [bob]
rules:
  - caps: subject_caps and rdns_none => +2.5
  - php: header("X-Mailer") contains "PHP" or has_header("X-Nope") => +1
  - either: authenticated or mail_from_domain == "example.com" => +1
  - role: in_list("roles", local_part(rcpt)) => +1
`)
	in := &builtins.Input{ClientIP: "192.0.2.10", RDNSKnown: true}
	v := replay(rs, in, "alice@example.com", []string{"bob@example.org"}, capsMsg)
	got := map[string]string{}
	for _, h := range v.Hits {
		var parts []string
		for _, e := range h.Evidence {
			parts = append(parts, fmt.Sprintf("%s=%v", e.Name, e.Value))
		}
		got[h.Rule] = strings.Join(parts, " ")
	}
	want := map[string]string{
		"caps":   "subject_caps=true rdns_none=true",
		"either": "authenticated=false mail_from_domain=example.com",
		"role":   `rcpt=bob@example.org in_list("roles", local_part(rcpt))=true`,
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("evidence of %s = %q, want %q", k, got[k], w)
		}
	}
	if _, fired := got["php"]; fired {
		t.Errorf("php fired on a message without X-Mailer")
	}
	v = replay(rs, in, "alice@example.com", []string{"bob@example.org"}, plainMsg)
	for _, h := range v.Hits {
		if h.Rule == "php" && FormatEvidenceForTest(h.Evidence) != `header("X-Mailer")=PHPMailer 6.1 has_header("X-Nope")=false` {
			t.Errorf("php evidence = %s", FormatEvidenceForTest(h.Evidence))
		}
	}
}

func FormatEvidenceForTest(ev []Evidence) string {
	var parts []string
	for _, e := range ev {
		parts = append(parts, fmt.Sprintf("%s=%v", e.Name, e.Value))
	}
	return strings.Join(parts, " ")
}

func TestTxnPhasesAndReset(t *testing.T) {
	rs := mustLoad(t, "r.yaml", `
rules:
  - helo-bad: helo == "bad" => block 550 5.7.1 "bad helo"
  - helo-score: helo == "meh" => +1
  - limited: 'hourly_sent > 300 => block 421 4.7.1 "Rate limit: 300 messages per hour"'
  - root: mail_from == "root@localhost" => block 550 5.1.8 "Bad sender address"
`)
	in := &builtins.Input{ClientIP: "192.0.2.10", Overrides: map[string]any{}}
	tx := rs.Begin(context.Background(), in)
	defer tx.Close()
	if r := tx.Connect(); r != nil {
		t.Fatalf("connect refused: %+v", r)
	}
	if r := tx.Helo("meh"); r != nil {
		t.Fatalf("helo refused: %+v", r)
	}
	// A second EHLO (after STARTTLS) re-runs helo rules on the new name.
	if r := tx.Helo("mail.example.com"); r != nil {
		t.Fatalf("helo refused: %+v", r)
	}
	r := tx.Mail("root@localhost")
	if r == nil || r.Code != 550 || r.Enhanced != "5.1.8" || r.Rule != "root" || r.ID != tx.ID() {
		t.Fatalf("MAIL root@localhost: %+v", r)
	}
	first := tx.ID()
	tx.Reset()
	if tx.ID() == first {
		t.Error("RSET kept the decision id")
	}
	if r := tx.Mail("alice@example.com"); r != nil {
		t.Fatalf("after RSET: %+v", r)
	}
	if tx.Rcpt("bob@example.org") != nil {
		t.Fatal("rcpt refused")
	}
	v := tx.Data([]byte(plainMsg))
	if v.Action != Accept || v.Score != 0 || hitNames(v) != "" {
		t.Errorf("after RSET: %s score %v hits %q", v.Action, v.Score, hitNames(v))
	}
	tx.Reset()
	in.Overrides["hourly_sent"] = 301
	if r := tx.Mail("alice@example.com"); r == nil || r.Code != 421 || r.Action != Tempfail {
		t.Errorf("hourly limit: %+v", r)
	}
}

func TestConcurrentUse(t *testing.T) {
	rs := mustLoad(t, "r.yaml", `
thresholds: {reject: 13, tag: 2}
rules:
  - caps: subject_caps => +2.5
  - links: len(links) > 0 => +0.5
  - rcpt: rcpt_domain == "example.org" => +1
`)
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				raw, want := plainMsg, 1.5
				if (g+i)%2 == 0 {
					raw, want = capsMsg, 4.0
				}
				v := replay(rs, nil, "a@example.com", []string{"b@example.org"}, raw)
				if v.Score != want {
					errs <- fmt.Sprintf("goroutine %d message %d: score %v, want %v", g, i, v.Score, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestIDs(t *testing.T) {
	s := NewIDSource()
	base := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	var ids []string
	seen := map[string]bool{}
	for i := range 1000 {
		id := s.Next(base.Add(time.Duration(i/10) * time.Millisecond))
		if len(id) != 26 || seen[id] {
			t.Fatalf("id %q: length %d, duplicate %v", id, len(id), seen[id])
		}
		seen[id] = true
		ids = append(ids, id)
	}
	if !sort.StringsAreSorted(ids) {
		t.Error("ids do not sort in issue order")
	}
	if a, b := NewIDSource().Next(base), NewIDSource().Next(base); a == b {
		t.Error("two sources gave the same id")
	}
}

// Rules filter the record facts with expr's predicates, reading the fields
// by their expr names.
func TestRecordFacts(t *testing.T) {
	rs, err := Load([]File{{Name: "r.yaml", Src: []byte(`rules:
  - big-zip: 'any(attachments, .size > 5 and .type == "application/zip") => +1'
  - huge-zip: 'any(attachments, .size > 5e6 and .type == "application/zip") => +1'
  - lying-size: 'any(attachments, .declared_size != .size) => +1'
  - exe-name: 'any(attachments, .executable and .name endsWith ".scr") => +1'
  - utf8-part: 'len(filter(parts, .charset == "utf-8" and .depth == 1)) == 1 => +1'
  - shallow: 'all(parts, .depth < 2) => +1'
`)}}, builtins.NewRegistry(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	raw := "From: a@example.com\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n" +
		"--b\r\nContent-Type: application/zip\r\nContent-Disposition: attachment; filename=\"photo.scr\"; size=3\r\nContent-Transfer-Encoding: base64\r\n\r\nUEsDBAoAAAAAAA==\r\n" +
		"--b--\r\n"
	v := replay(rs, nil, "a@example.com", []string{"b@example.org"}, raw)
	if got := hitNames(v); got != "big-zip,lying-size,exe-name,utf8-part,shallow" {
		t.Errorf("fired %s", got)
	}
	if len(v.RuleErrors) > 0 {
		t.Errorf("rule errors: %v", v.RuleErrors)
	}
	b, err := json.Marshal(v.Hits[0].Evidence)
	if err != nil || !strings.Contains(string(b), `"name":"attachments","value":[{"type":"application/zip","name":"photo.scr","size":10,"declared_size":3,`) {
		t.Errorf("evidence as JSON: %s %v", b, err)
	}
}
