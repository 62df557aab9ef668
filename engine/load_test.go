package engine

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicemail/sluice/builtins"
)

// loadFiles loads name/content pairs.
func loadFiles(t testing.TB, pairs ...string) (*RuleSet, error) {
	t.Helper()
	var files []File
	for i := 0; i+1 < len(pairs); i += 2 {
		files = append(files, File{Name: pairs[i], Src: []byte(pairs[i+1])})
	}
	return Load(files, builtins.NewRegistry(), Options{})
}

func mustLoad(t testing.TB, pairs ...string) *RuleSet {
	t.Helper()
	rs, err := loadFiles(t, pairs...)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return rs
}

func problems(t *testing.T, pairs ...string) []string {
	t.Helper()
	rs, err := loadFiles(t, pairs...)
	if err == nil {
		t.Fatalf("load succeeded with %d rules, want problems", len(rs.Rules()))
	}
	var le *LoadError
	if !errors.As(err, &le) {
		t.Fatalf("error is %T, want *LoadError: %v", err, err)
	}
	var out []string
	for _, p := range le.Problems {
		out = append(out, p.String())
	}
	return out
}

func TestParseAction(t *testing.T) {
	tests := []struct {
		in   string
		want string // Action.String(), or "error: substring"
	}{
		{"+2.5", "+2.5"},
		{"-1", "-1"},
		{"3", "+3"},
		{"+0.25", "+0.25"},
		{"accept", "accept"},
		{"ACCEPT", "accept"},
		{"hold", `hold "Message accepted and held for review"`},
		{`hold "Held for review by support"`, `hold "Held for review by support"`},
		{"block 550", `block 550 5.7.1 "Message refused by policy"`},
		{"block 421", `block 421 4.7.1 "Temporary policy failure, please try again later"`},
		{`block 421 4.7.1 "Rate limit: 300 messages per hour"`, `block 421 4.7.1 "Rate limit: 300 messages per hour"`},
		{`block 550 5.1.1 "Email address is on account's Bounce list."`, `block 550 5.1.1 "Email address is on account's Bounce list."`},
		{`block 554 "quoted \"inner\""`, `block 554 5.7.1 "quoted \"inner\""`},
		{`block 550 5.7.1 [ACL] Blocked`, `block 550 5.7.1 "[ACL] Blocked"`},
		{"", "error: missing action"},
		{"block", "error: needs a reply code"},
		{"block 250", "error: want a 4xx"},
		{"block 55", "error: want a 4xx"},
		{"block 550 4.7.1", "error: does not match the class"},
		{"block 450 9.9.9", "error: enhanced code"},
		{`block 550 "unterminated`, "error: missing closing quote"},
		{`block 550 "a" b`, `error: unexpected "b"`},
		{"reject", "error: did you mean block?"},
		{"blokc 550", "error: did you mean block?"},
		{"accept now", "error: accept takes nothing"},
		{"+1e400", "error: unknown action"},
		{"block 550 5.7.1 \"a\x01b\"", "error: control character"},
		{"list blocked smtp_user", "list blocked smtp_user"},
		{`list blocked smtp_user for 7d "sustained abuse"`, `list blocked smtp_user for 7d "sustained abuse"`},
		{"list blocked_ips client_ip for 90m", "list blocked_ips client_ip for 1h30m0s"},
		{"list blocked", "error: needs a list name and a fact"},
		{"list blocked mail_from for soon", `error: duration "soon"`},
		{"list bad/name mail_from", "error: letters, digits"},
		{"list blocked mail_from why", `error: unexpected "why"`},
		{"lsit blocked mail_from", "error: did you mean list?"},
	}
	for _, tt := range tests {
		a, err := ParseAction(tt.in)
		got := a.String()
		if err != nil {
			got = "error: " + err.Error()
		}
		if strings.HasPrefix(tt.want, "error: ") {
			if err == nil || !strings.Contains(got, strings.TrimPrefix(tt.want, "error: ")) {
				t.Errorf("ParseAction(%q) = %q, want an error containing %q", tt.in, got, strings.TrimPrefix(tt.want, "error: "))
			}
			continue
		}
		if got != tt.want {
			t.Errorf("ParseAction(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestLoadRuleForms(t *testing.T) {
	rs := mustLoad(t, "rules.d/10-access.yaml", `
thresholds:
  reject: 13
  hold: 8
  tag: 5
lists:
  role_locals: [noreply, No-Reply]
rules:
  - subject_caps and rdns_none => +2.5
  - hourly-limit: 'hourly_sent > 300 => block 421 4.7.1 "Rate limit: 300 messages per hour"'
  - name: acl-from-domain
    when: not domain_allowed
    then: block 550 5.7.1 "[ACL] Blocked"
    description: The From domain is not authorized for this SMTP user.
    mode: shadow
  - name: number-then
    when: size > 100
    then: +2
  - when: helo == ""
    then: -1
`, "rules.d/20-more.yml", `
rules:
  - in_list("role_locals", local_part(rcpt)) => block 550 5.1.1 "Role address"
`)
	want := []struct {
		name, phase, action string
		perRcpt, shadow     bool
	}{
		{"10-access#1", "data", "+2.5", false, false},
		{"hourly-limit", "mail", `block 421 4.7.1 "Rate limit: 300 messages per hour"`, false, false},
		{"acl-from-domain", "data", `block 550 5.7.1 "[ACL] Blocked"`, false, true},
		{"number-then", "data", "+2", false, false},
		{"10-access#5", "helo", "-1", false, false},
		{"20-more#1", "rcpt", `block 550 5.1.1 "Role address"`, true, false},
	}
	if len(rs.Rules()) != len(want) {
		t.Fatalf("got %d rules, want %d", len(rs.Rules()), len(want))
	}
	for i, w := range want {
		r := rs.Rules()[i]
		if r.Name != w.name || r.Phase.String() != w.phase || r.Then.String() != w.action || r.PerRecipient != w.perRcpt || r.Shadow != w.shadow || r.Index != i {
			t.Errorf("rule %d = {%s %s %s rcpt=%v shadow=%v idx=%d}, want %+v", i, r.Name, r.Phase, r.Then, r.PerRecipient, r.Shadow, r.Index, w)
		}
	}
	if r, _ := rs.Rule("acl-from-domain"); r.Description != "The From domain is not authorized for this SMTP user." || r.Line != 11 || r.Col != 5 {
		t.Errorf("acl-from-domain: description %q at %d:%d", r.Description, r.Line, r.Col)
	}
	th := rs.Thresholds()
	if *th.Reject != 13 || *th.Hold != 8 || *th.Tag != 5 {
		t.Errorf("thresholds = %v %v %v", *th.Reject, *th.Hold, *th.Tag)
	}
	if in, found := rs.lists.Lookup("role_locals", "no-reply"); !in || !found {
		t.Errorf("static list lookup is not case-insensitive")
	}
}

func TestLoadProblems(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // each a prefix "file:line:col: " plus a substring of the message
	}{
		{"unknown fact with suggestion", "rules:\n  - subjet_caps => +1\n",
			[]string{"r.yaml:2:5: unknown name subjet_caps (did you mean subject_caps?)"}},
		{"type error inside a quoted one-liner", "rules:\n  - x: 'size > \"big\" => +1'\n",
			[]string{"r.yaml:2:14: invalid operation: > (mismatched types int and string)"}},
		{"YAML syntax error holding =>", "rules:\n  - hourly_sent > 300 => block 421 4.7.1 \"Rate limit: 300\": x\n  - y\n",
			[]string{"r.yaml:2:"}},
		{"rule read as a mapping because of ': '", "rules:\n  - hourly_sent > 300 => block 421 4.7.1 \"Rate limit: 300 messages per hour\"\n",
			[]string{`r.yaml:2:5: YAML read this rule as a mapping because it holds ": "; quote the whole rule, as in`, `- 'hourly_sent > 300 => block 421 4.7.1 "Rate limit: 300 messages per hour"'`}},
		{"unquoted then holding ': '", "rules:\n  - name: h\n    when: hourly_sent > 300\n    then: block 421 4.7.1 \"Rate limit: 300 messages per hour\"\n",
			[]string{`r.yaml:4:`, `quote the whole value, as in`, `then: 'block 421 4.7.1 "Rate limit: 300 messages per hour"'`}},
		{"unquoted # cut by YAML as a comment", "rules:\n  - name: n\n    when: any(links, # contains \"bit.ly\")\n    then: +1\n",
			[]string{`r.yaml:3:`, `YAML took "# contains "bit.ly")" as a comment and cut the value there: quote the whole value`}},
		{"unquoted # in a one-liner", "rules:\n  - any(links, # contains \"x\") => +1\n",
			[]string{`r.yaml:2:5: a one-line rule is written`, `YAML took "# contains "x") => +1" as a comment`}},
		{"a prose comment gets no hint", "rules:\n  - name: n\n    when: size > \"x\" # too big\n    then: +1\n",
			[]string{`r.yaml:3:16: invalid operation: > (mismatched types int and string)`}},
		{"list action with an unknown fact", "rules:\n  - x: 'size > 1 => list blocked mail_frm for 7d'\n",
			[]string{`r.yaml:2:34: unknown fact mail_frm (did you mean mail_from?)`}},
		{"list action with a non-string fact", "rules:\n  - x: 'size > 1 => list blocked size'\n",
			[]string{`r.yaml:2:34: list blocked size: size is not a fact of type string`}},
		{"unknown field of a record", "rules:\n  - name: n\n    when: any(attachments, .sizee > 5e6)\n    then: +1\n",
			[]string{"r.yaml:3:29: attachment records have no field sizee (did you mean size?); their fields: type, name, size,"}},
		{"record field of the wrong type", "rules:\n  - x: 'any(parts, .depth == \"2\") => +1'\n",
			[]string{"r.yaml:2:27: invalid operation: == (mismatched types int and string)"}},
		{"not a bool", "rules:\n  - name: n\n    when: size + 1\n    then: +1\n",
			[]string{"r.yaml:3:11: the expression must be true or false, but it gives int"}},
		{"literal block error line", "rules:\n  - name: n\n    when: |\n      subject_caps and\n        size > \"x\"\n    then: +1\n",
			[]string{"r.yaml:5:14: invalid operation: >"}},
		{"double-quoted escapes", "rules:\n  - \"header(\\\"X-A\\\") == 'a' and nope => +1\"\n",
			[]string{"r.yaml:2:33: unknown name nope"}},
		{"single-quoted doubled quote", "rules:\n  - 'header(''X-A'') == ''a'' and nope => +1'\n",
			[]string{"r.yaml:2:35: unknown name nope"}},
		{"syntax error in expression", "rules:\n  - subject_caps and and => +1\n",
			[]string{"r.yaml:2:22: "}},
		{"unknown function", "rules:\n  - hedaer(\"x\") == \"\" => +1\n",
			[]string{"r.yaml:2:5: unknown function hedaer (did you mean header?)"}},
		{"fact called as function", "rules:\n  - subject_caps() => +1\n",
			[]string{"r.yaml:2:5: subject_caps is a fact, not a function"}},
		{"bad action position", "rules:\n  - size > 1 => block 650\n",
			[]string{"r.yaml:2:23: block code \"650\""}},
		{"no arrow", "rules:\n  - size > 1\n", []string{"r.yaml:2:5: a one-line rule is written"}},
		{"unknown top key", "rule:\n  - size > 1 => +1\n", []string{"r.yaml:1:1: unknown key \"rule\": a rules file holds thresholds, lists and rules (did you mean rules?)"}},
		{"unknown rule key", "rules:\n  - name: a\n    when: size > 1\n    than: +1\n",
			[]string{"r.yaml:2:5: rule \"a\" has no then", "r.yaml:4:5: unknown rule key \"than\""}},
		{"bad mode", "rules:\n  - name: a\n    when: size > 1\n    then: +1\n    mode: shadw\n",
			[]string{"r.yaml:5:11: mode \"shadw\": want enforce or shadow (did you mean shadow?)"}},
		{"duplicate name", "rules:\n  - a: size > 1 => +1\n  - a: size > 2 => +1\n",
			[]string{"r.yaml:3:5: duplicate rule name \"a\": already used at r.yaml:2:5"}},
		{"threshold order", "thresholds: {reject: 5, tag: 8}\n", []string{"r.yaml:1:1: threshold tag (8) is above reject (5)"}},
		{"threshold not a number", "thresholds:\n  reject: lots\n", []string{"r.yaml:2:11: threshold reject: want a number"}},
		{"let hides a fact", "rules:\n  - let size = 1; size > 0 => +1\n", []string{"hides the fact size"}},
		{"bad list", "lists:\n  l: 3\n", []string{"r.yaml:2:6: list \"l\": want a sequence"}},
		{"every problem reported", "rules:\n  - nope1 => +1\n  - nope2 => +1\n  - size > 1 => boom\n",
			[]string{"r.yaml:2:5: unknown name nope1", "r.yaml:3:5: unknown name nope2", "r.yaml:4:17: unknown action \"boom\""}},
		{"tab in YAML", "rules:\n\t- size > 1 => +1\n", []string{"r.yaml:2:1: YAML: found character that cannot start any token"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := problems(t, "r.yaml", tt.src)
			joined := strings.Join(got, "\n")
			for _, w := range tt.want {
				if !strings.Contains(joined, w) {
					t.Errorf("problems:\n%s\nwant one containing %q", joined, w)
				}
			}
		})
	}
}

func TestLoadAcrossFiles(t *testing.T) {
	got := problems(t,
		"a.yaml", "thresholds: {reject: 13}\nlists:\n  l: [a]\nrules:\n  - x: size > 1 => +1\n",
		"b.yaml", "thresholds: {reject: 10}\nlists:\n  l: [b]\nrules:\n  - x: size > 1 => +1\n")
	joined := strings.Join(got, "\n")
	for _, w := range []string{
		"b.yaml:1:1: thresholds are already defined at a.yaml:1:1",
		`b.yaml:3:3: list "l" is already defined at a.yaml:3:3`,
		`b.yaml:5:5: duplicate rule name "x": already used at a.yaml:5:5`,
	} {
		if !strings.Contains(joined, w) {
			t.Errorf("problems:\n%s\nwant %q", joined, w)
		}
	}
}

func TestLoadDirOrderAndSkips(t *testing.T) {
	dir := t.TempDir()
	write := func(name, src string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("20-b.yaml", "rules:\n  - b: size > 1 => +1\n")
	write("10-a.yml", "rules:\n  - a: size > 1 => +1\n")
	write(".10-a.yaml.swp", "garbage: [")
	write("notes.txt", "not yaml")
	write("empty.yaml", "# all commented out\n")
	write("10-a.test.yaml", "cases:\n  - name: fixtures live next to the rules they test\n")
	if err := os.Mkdir(filepath.Join(dir, "..data"), 0o755); err != nil {
		t.Fatal(err)
	}
	rs, err := LoadDir(dir, builtins.NewRegistry(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.Rules()) != 2 || rs.Rules()[0].Name != "a" || rs.Rules()[1].Name != "b" {
		t.Fatalf("rules = %v, want a then b", rs.Rules())
	}
	sum := rs.Checksum()
	write("20-b.yaml", "rules:\n  - b: size > 2 => +1\n")
	rs2, err := LoadDir(dir, builtins.NewRegistry(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rs2.Checksum() == sum {
		t.Error("checksum did not change with the content")
	}
	if _, err := LoadDir(filepath.Join(dir, "missing"), builtins.NewRegistry(), Options{}); err == nil {
		t.Error("a missing directory loaded")
	}
}

func TestPhaseInference(t *testing.T) {
	tests := []struct {
		expr    string
		phase   string
		perRcpt bool
	}{
		{`client_ip == "1.2.3.4"`, "connect", false},
		{`rdns_none`, "connect", false},
		{`in_list("x", client_ip)`, "connect", false},
		{`helo == "localhost"`, "helo", false},
		{`rdns_none and helo == ""`, "helo", false},
		{`hourly_sent > 300`, "mail", false},
		{`authenticated and tls`, "mail", false},
		{`local_part(mail_from) == "root"`, "mail", false},
		{`rcpt == "a@b"`, "rcpt", true},
		{`in_list("bounces", rcpt)`, "rcpt", true},
		{`rcpt_domain == "x" and hourly_sent > 3`, "rcpt", true},
		{`rcpt_count > 50`, "data", false},
		{`header("X-Mailer") contains "PHP"`, "data", false},
		{`has_header("List-Unsubscribe")`, "data", false},
		{`any(links, {# contains "bit.ly"})`, "data", false},
		{`let d = domain(mail_from); d == from_domain`, "data", false},
		{`rcpt == from`, "data", true},
		{`true`, "connect", false},
	}
	for _, tt := range tests {
		rs := mustLoad(t, "r.yaml", "rules:\n  - '"+strings.ReplaceAll(tt.expr, "'", "''")+" => +1'\n")
		r := rs.Rules()[0]
		if r.Phase.String() != tt.phase || r.PerRecipient != tt.perRcpt {
			t.Errorf("%s: phase %s per-recipient %v, want %s %v", tt.expr, r.Phase, r.PerRecipient, tt.phase, tt.perRcpt)
		}
	}
}

func TestLintWarnings(t *testing.T) {
	rs := mustLoad(t, "r.yaml", `
rules:
  - trusted: from_domain == "example.com" => accept
  - blocked: in_list("blocked", mail_from) => block 550
  - rcpt_data: rcpt == from => +1
  - typo: in_list("bounce", rcpt) => block 550
  - score: size > 10 => +1
`)
	joined := ""
	for _, w := range rs.Warnings() {
		joined += w.String() + "\n"
	}
	for _, w := range []string{
		"r.yaml:3:5: warning: accept rule trusted runs at data and cannot override block rule blocked (r.yaml:4:5), which runs earlier, at mail",
		"r.yaml:5:5: warning: rule rcpt_data reads rcpt and facts known only after DATA",
		`r.yaml:6:5: warning: rule typo uses list "bounce"`, "(did you mean bounces?)",
		"no thresholds are defined",
	} {
		if !strings.Contains(joined, w) {
			t.Errorf("warnings:\n%swant %q", joined, w)
		}
	}
}

func TestSuggest(t *testing.T) {
	cands := []string{"subject_caps", "subject", "rdns_none", "hourly_sent", "daily_sent"}
	for in, want := range map[string]string{
		"subjet_caps": "subject_caps", "rdsn_none": "rdns_none", "hourly_snet": "hourly_sent",
		"caps": "subject_caps", "zzzzzz": "",
	} {
		if got := suggest(in, cands); got != want {
			t.Errorf("suggest(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestEveryProblemAtOnce: a YAML syntax error does not hide the other
// problems of the same file, and recovery adds no spurious ones.
func TestEveryProblemAtOnce(t *testing.T) {
	got := problems(t, "r.yaml", `thresholds:
  reject: 13
rules:
  - name: typed
    when: size > "big"
    then: +1
  - broken: x: y
  - name: unknown
    when: subjet_caps
    then: +1
  - name: fine
    when: size > 10
    then: +1
  - name: broken-inside
    when: a: b
    then: +1
`)
	want := []string{
		"r.yaml:5:16: invalid operation: > (mismatched types int and string)",
		"r.yaml:7:14: YAML: mapping values are not allowed in this context",
		"r.yaml:9:11: unknown name subjet_caps (did you mean subject_caps?)",
		"r.yaml:15:12: YAML: mapping values are not allowed in this context",
	}
	if len(got) != len(want) {
		t.Fatalf("problems:\n%s\nwant %d", strings.Join(got, "\n"), len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w) {
			t.Errorf("problem %d = %q, want prefix %q", i, got[i], w)
		}
	}
}

// TestYAMLAsOperatorsWriteIt: several documents in one file, anchors and
// aliases, merge keys: everything YAML offers loads, and errors keep their
// FILE:LINE:COL.
func TestYAMLAsOperatorsWriteIt(t *testing.T) {
	rs := mustLoad(t, "r.yaml", `thresholds: &th {reject: 13, hold: 8}
lists:
  base: &base [noreply, no-reply]
  more: [*base, mailer-daemon]
  same: *base
rules:
  - &caps caps: 'subject_caps => +2'
  - name: base-block
    <<: &blk
      then: block 550 5.7.1 "no"
      description: shared
    when: helo == "a"
---
# a second document: its rules load too, and derived names count on
rules:
  - size > 10 => +1
  - name: merged
    <<: *blk
    when: helo == "b"
    then: +3
---
rules:
  - name: two-merges
    <<: [{when: 'helo == "c"'}, {when: 'helo == "d"', then: +4}]
`)
	var names []string
	for _, r := range rs.Rules() {
		names = append(names, r.Name)
	}
	if got := strings.Join(names, ","); got != "caps,base-block,r#3,merged,two-merges" {
		t.Fatalf("rules %s", got)
	}
	if th := rs.Thresholds(); th.Reject == nil || *th.Reject != 13 || th.Hold == nil || *th.Hold != 8 {
		t.Errorf("thresholds from a flow mapping with an anchor: %+v", th)
	}
	b, _ := rs.Rule("base-block")
	m, _ := rs.Rule("merged")
	two, _ := rs.Rule("two-merges")
	if b.Then.Code != 550 || b.Description != "shared" || m.Then.Kind != ActScore || m.Then.Score != 3 || m.Description != "shared" {
		t.Errorf("merge keys: base-block %v %q, merged %v %q", b.Then, b.Description, m.Then, m.Description)
	}
	if two.When != `helo == "c"` || two.Then.Score != 4 {
		t.Errorf("of two merged mappings the first wins: when %q then %v", two.When, two.Then)
	}
	if r, _ := rs.Rule("r#3"); r.Line != 16 {
		t.Errorf("rule of the second document at line %d, want 16", r.Line)
	}
	for list, in := range map[string]string{"more": "mailer-daemon", "same": "no-reply"} {
		if ok, found := rs.lists.Lookup(list, in); !ok || !found {
			t.Errorf("list %s lacks %s", list, in)
		}
	}
	if ok, _ := rs.lists.Lookup("more", "noreply"); !ok {
		t.Error("an alias of a list inside a list is not expanded")
	}

	// Problems in a later document point at their own lines.
	got := strings.Join(problems(t, "r.yaml", "rules:\n  - a: size > 1 => +1\n---\nrules:\n  - b: sise > 1 => +1\n---\nrulez: []\n"), "\n")
	for _, want := range []string{"r.yaml:5:8: unknown name sise (did you mean size?)", `r.yaml:7:1: unknown key "rulez"`} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %q:\n%s", want, got)
		}
	}
	// Two documents defining thresholds are two definitions.
	got = strings.Join(problems(t, "r.yaml", "thresholds: {reject: 5}\nrules: []\n---\nthresholds: {reject: 6}\n"), "\n")
	if !strings.Contains(got, "r.yaml:4:1: thresholds are already defined at r.yaml:1:1") {
		t.Errorf("thresholds twice: %s", got)
	}
}

func TestRuleAdviceAndClass(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "r.yaml"), []byte("rules:\n  - name: a\n    when: size > 1\n    then: block 550 5.7.1 \"no\"\n    advice: Send less.\n    class: rate\n"), 0o644)
	rs, err := LoadDir(dir, builtins.NewRegistry(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := rs.Rule("a"); r.Advice != "Send less." || r.Class != "rate" {
		t.Errorf("rule %+v", r)
	}
	os.WriteFile(filepath.Join(dir, "r.yaml"), []byte("rules:\n  - name: a\n    when: size > 1\n    then: block 550 5.7.1 \"no\"\n    class: spammy\n"), 0o644)
	if _, err := LoadDir(dir, builtins.NewRegistry(), Options{}); err == nil || !strings.Contains(err.Error(), `r.yaml:5:12: class "spammy"`) {
		t.Errorf("bad class: %v", err)
	}
}

func TestIDTime(t *testing.T) {
	now := time.UnixMilli(1767225600123)
	got, ok := IDTime(NewIDSource().Next(now))
	if !ok || !got.Equal(now) {
		t.Errorf("IDTime = %v %v, want %v", got, ok, now)
	}
	if _, ok := IDTime("not-an-id"); ok {
		t.Error("IDTime accepted a bad id")
	}
}
