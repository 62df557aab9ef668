package ruletest

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicemail/sluice/builtins"
	"github.com/sluicemail/sluice/engine"
)

const rules = `thresholds: {reject: 13, hold: 8, tag: 5}
lists:
  role_locals: [noreply]
rules:
  - name: caps
    when: subject_caps
    then: +6
  - name: no-ptr
    when: rdns_none
    then: +3
  - name: rate
    when: hourly_sent > 300
    then: 'block 421 4.7.1 "Rate limit: 300 messages per hour"'
  - name: role
    when: in_list("role_locals", local_part(rcpt))
    then: block 550 5.1.1 "These can't receive email"
  - name: bounced
    when: in_list("bounces", rcpt)
    then: block 550 5.1.1 "The recipient is on the bounce list"
  - name: never
    when: helo == "never.example"
    then: +1
`

func write(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, src := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func ruleSet(t *testing.T) *engine.RuleSet {
	t.Helper()
	rs, err := engine.Load([]engine.File{{Name: "r.yaml", Src: []byte(rules)}}, builtins.NewRegistry(), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

const caps = "From: promo@spam.example\nTo: bob@example.org\nSubject: FREE MONEY FOR YOU\n\nwin\n"

func TestRunPaths(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, map[string]string{
		"messages/caps.eml": caps,
		"a.test.yaml": `cases:
  - name: caps from a host without PTR is held
    eml: messages/caps.eml
    context: {client_ip: 203.0.113.7, rdns: ""}
    expect: {action: hold, score: 9, rules: [caps, no-ptr], not_rules: [rate]}
  - name: rate limit answers MAIL
    eml: messages/caps.eml
    context: {smtp_user: alice, facts: {hourly_sent: 301}}
    expect: {action: tempfail, code: 421, enhanced: 4.7.1, text: "300 messages per hour", rules: [rate]}
  - name: recipients are judged one by one
    message: |
      From: a@example.com
      Subject: hi

      hello
    context:
      rcpts: [bob@example.org, noreply@example.org, gone@example.org]
      lists: {bounces: [GONE@example.org]}
    expect:
      action: accept
      recipients:
        bob@example.org: {action: accept}
        noreply@example.org: {action: reject, code: 550, enhanced: 5.1.1}
        gone@example.org: {action: reject, code: 550}
`,
		"sub/b.test.yml": `cases:
  - name: wrong expectations are all reported
    eml: ../messages/caps.eml
    expect: {action: reject, code: 554, score: {min: 13}, rules: [never], not_rules: [caps]}
`,
		"ignored.yaml": "not: a fixture\n",
	})
	s, err := RunPaths(context.Background(), ruleSet(t), []string{dir})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Results) != 4 || s.Passed() != 3 || s.Failed() != 1 {
		var b bytes.Buffer
		s.WriteText(&b, true)
		t.Fatalf("%d results, %d passed, %d failed:\n%s", len(s.Results), s.Passed(), s.Failed(), b.String())
	}
	var text bytes.Buffer
	s.WriteText(&text, false)
	s.WriteSummary(&text)
	out := text.String()
	for _, want := range []string{
		"wrong expectations are all reported", "sub/b.test.yml:2",
		"action: expected reject, got tag", // expected vs got
		"score", ">= 13",
		"rule never: expected it to fire, it did not", "rule caps: expected it not to fire, it did",
		"subject_caps=true", // evidence of the fired rule
		"3 passed, 1 failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if !strings.HasSuffix(out, "3 passed, 1 failed\n") {
		t.Errorf("report does not end with the summary line:\n%s", out)
	}

	var cov bytes.Buffer
	s.WriteCoverage(&cov, ruleSet(t))
	if !strings.Contains(cov.String(), "never") || strings.Contains(cov.String(), "caps") {
		t.Errorf("coverage:\n%s", cov.String())
	}

	junit := filepath.Join(dir, "junit.xml")
	if err := s.WriteJUnit(junit); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(junit)
	var suites struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
		Suites   []struct {
			Cases []struct {
				Name    string `xml:"name,attr"`
				Failure *struct {
					Body string `xml:",chardata"`
				} `xml:"failure"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(raw, &suites); err != nil {
		t.Fatalf("JUnit is not XML: %v\n%s", err, raw)
	}
	failed := 0
	for _, su := range suites.Suites {
		for _, c := range su.Cases {
			if c.Failure != nil {
				failed++
				if !strings.Contains(c.Failure.Body, "never") {
					t.Errorf("JUnit failure body lacks the detail: %q", c.Failure.Body)
				}
			}
		}
	}
	if suites.Tests != 4 || suites.Failures != 1 || failed != 1 {
		t.Errorf("JUnit: tests %d failures %d (%d failure elements)", suites.Tests, suites.Failures, failed)
	}
}

// TestRuleErrorFailsCase: a case in which a rule's expression fails fails,
// with the error, even though the verdict is what it expects.
func TestRuleErrorFailsCase(t *testing.T) {
	rs, err := engine.Load([]engine.File{{Name: "r.yaml", Src: []byte(`rules:
  - idx: 'split(from, "@")[1] == "x" => block 550'
  - s: size > 0 => +1
`)}}, builtins.NewRegistry(), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write(t, dir, map[string]string{"a.test.yaml": `cases:
  - name: no From header
    message: "To: bob@example.org\nSubject: x\n\nhi\n"
    expect: {action: accept, score: 1, rules: [s]}
  - name: with a From header
    message: "From: a@example.com\nTo: bob@example.org\nSubject: x\n\nhi\n"
    expect: {action: accept, score: 1, rules: [s]}
`})
	s, err := RunPaths(context.Background(), rs, []string{dir})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	s.WriteText(&b, false)
	s.WriteSummary(&b)
	out := b.String()
	if s.Passed() != 1 || s.Failed() != 1 {
		t.Fatalf("%d passed, %d failed:\n%s", s.Passed(), s.Failed(), out)
	}
	for _, want := range []string{"FAIL  " + filepath.Join(dir, "a.test.yaml") + ":2  no From header",
		"- error in rule: r.yaml:2:27: rule idx: index out of range", "the rule did not fire", "1 passed, 1 failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "index out of range") != 1 {
		t.Errorf("the error is printed more than once:\n%s", out)
	}
}

func TestLoadFileProblems(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, map[string]string{
		"bad.test.yaml": `cases:
  - name: ok
    message: "Subject: x\n\nhi\n"
    expect: {action: accept}
  - name: misspelt key
    message: "Subject: x\n\nhi\n"
    expect: {acton: accept}
  - name: missing message
    eml: nowhere.eml
  - name: both forms
    eml: a.eml
    message: "x"
  - eml: nameless.eml
`,
	})
	cases, errs := LoadFile(filepath.Join(dir, "bad.test.yaml"))
	if len(cases) != 1 || cases[0].Name != "ok" {
		t.Errorf("loaded %d cases", len(cases))
	}
	joined := ""
	for _, e := range errs {
		joined += e.Error() + "\n"
	}
	for _, want := range []string{"bad.test.yaml:7: unknown key acton", "nowhere.eml", "bad.test.yaml:10", "bad.test.yaml:13"} {
		if !strings.Contains(joined, want) {
			t.Errorf("problems lack %q:\n%s", want, joined)
		}
	}
	// A file with problems counts as failed, so CI goes red.
	s, err := RunPaths(context.Background(), ruleSet(t), []string{dir})
	if err != nil {
		t.Fatal(err)
	}
	if s.Failed() == 0 {
		t.Error("load problems did not fail the run")
	}
}

// TestFixturesAsOperatorsWriteThem: several documents, anchors shared
// between cases, merge keys; a rule name that does not exist fails its case
// only, with a suggestion.
func TestFixturesAsOperatorsWriteThem(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, map[string]string{"messages/caps.eml": caps, "a.test.yaml": `cases:
  - name: anchored context
    eml: messages/caps.eml
    context: &known {client_ip: 203.0.113.7, rdns: "", rcpts: [bob@example.org]}
    expect: &held {action: hold, score: 9, rules: [caps, no-ptr]}
  - name: same context by alias
    eml: messages/caps.eml
    context: *known
    expect: *held
  - name: merged context
    eml: messages/caps.eml
    context:
      <<: *known
      rdns: mail.example.com
    expect: {action: tag, score: 6, not_rules: [no-ptr]}
  - name: misspelt rule in not_rules
    eml: messages/caps.eml
    context: *known
    expect: {action: hold, not_rules: [rat]}
---
# a second document
cases:
  - name: from the second document
    eml: messages/caps.eml
    context: {<<: *known2, tls: true}
    expect: {rules: [capz]}
`})
	_, errs := LoadFile(filepath.Join(dir, "a.test.yaml"))
	// An anchor does not reach across documents: YAML says so, with the line.
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "a.test.yaml") || !strings.Contains(errs[0].Error(), "known2") {
		t.Fatalf("errors %v", errs)
	}
	write(t, dir, map[string]string{"a.test.yaml": strings.Replace(mustRead(t, filepath.Join(dir, "a.test.yaml")), "*known2", "{client_ip: 203.0.113.7, rdns: \"\"}", 1)})
	s, err := RunPaths(context.Background(), ruleSet(t), []string{dir})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	s.WriteText(&b, true)
	s.WriteSummary(&b)
	out := b.String()
	if len(s.LoadErrors) != 0 || len(s.Results) != 5 || s.Passed() != 3 {
		t.Fatalf("%d load errors, %d results, %d passed:\n%s", len(s.LoadErrors), len(s.Results), s.Passed(), out)
	}
	for _, want := range []string{
		"ok    " + filepath.Join(dir, "a.test.yaml") + ":6  same context by alias",
		"- expect.not_rules: no rule is named rat (did you mean rate?)",
		"a.test.yaml:23  from the second document",
		"- expect.rules: no rule is named capz (did you mean caps?)",
		"3 passed, 2 failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "rule capz: expected it to fire") {
		t.Errorf("an unknown rule is reported twice:\n%s", out)
	}
}

// TestFixtureKeysChecked: keys are checked through aliases and merges, with
// the file's own lines.
func TestFixtureKeysChecked(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, map[string]string{"k.test.yaml": `base: 1
cases:
  - name: anchor holder
    message: "Subject: x\n\nhi\n"
    context: &b {client_ip: 192.0.2.1}
  - name: merged misspelt key
    message: "Subject: x\n\nhi\n"
    context: {<<: *b, tsl: true}
    expect: {action: accept}
`})
	cases, errs := LoadFile(filepath.Join(dir, "k.test.yaml"))
	joined := fmt.Sprint(errs)
	if len(cases) != 1 || cases[0].Name != "anchor holder" {
		t.Errorf("an unknown top-level key kept the cases from loading: %d", len(cases))
	}
	for _, want := range []string{"k.test.yaml:1: unknown key base", "k.test.yaml:8: unknown key tsl (did you mean tls?)"} {
		if !strings.Contains(joined, want) {
			t.Errorf("errors lack %q: %s", want, joined)
		}
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestContextDefaults(t *testing.T) {
	var ctx Context
	in, env, err := ctx.Input(builtins.NewRegistry(), []byte("From: Alice <alice@example.com>\nTo: bob@example.org, Carol <carol@example.net>\nCc: dave@example.com\nSubject: x\n\nhi\n"))
	if err != nil {
		t.Fatal(err)
	}
	if in.ClientIP != "127.0.0.1" || env.Helo != "localhost" || in.TLS || in.SMTPUser != "" {
		t.Errorf("defaults: ip %q helo %q tls %v user %q", in.ClientIP, env.Helo, in.TLS, in.SMTPUser)
	}
	if env.MailFrom != "alice@example.com" || strings.Join(env.Rcpts, ",") != "bob@example.org,carol@example.net,dave@example.com" {
		t.Errorf("envelope from %q rcpts %q", env.MailFrom, env.Rcpts)
	}
	empty := ""
	ctx = Context{MailFrom: &empty, SMTPUser: "alice", Facts: map[string]any{"nope": 1}}
	if _, _, err := ctx.Input(builtins.NewRegistry(), []byte("Subject: x\n\n")); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("unknown fact override: %v", err)
	}
	ctx.Facts = map[string]any{"hourly_sent": "many"}
	if _, _, err := ctx.Input(builtins.NewRegistry(), []byte("Subject: x\n\n")); err == nil {
		t.Error("a string accepted for an int fact")
	}
}

// TestContextDNS: the checks and dnsbl() see exactly the DNS a case gives
// (SERVFAIL and TIMEOUT included), and expect.facts holds them to it.
func TestContextDNS(t *testing.T) {
	rs, err := engine.Load([]engine.File{{Name: "r.yaml", Src: []byte(`rules:
  - listed: '"127.0.0.2" in dnsbl("zen.example.net", client_ip) => +5'
  - spf-fail: 'spf == "fail" => +1'
`)}}, builtins.NewRegistry(), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write(t, dir, map[string]string{"a.test.yaml": `cases:
  - name: listed, SPF fail
    message: "From: a@example.com\nTo: bob@example.org\nSubject: x\n\nhi\n"
    context:
      client_ip: 192.0.2.10
      mail_from: a@example.com
      dns:
        "10.2.0.192.zen.example.net A": ["127.0.0.2"]
        "example.com TXT": "v=spf1 -all"
    expect: {score: 6, rules: [listed, spf-fail], facts: {spf: fail}}
  - name: not listed, SPF temperror on a timeout
    message: "From: a@example.com\nTo: bob@example.org\nSubject: x\n\nhi\n"
    context:
      client_ip: 192.0.2.11
      mail_from: a@example.com
      dns:
        "10.2.0.192.zen.example.net A": ["127.0.0.2"]
        "example.com TXT": TIMEOUT
    expect: {score: 0, facts: {spf: temperror, dkim: none}}
  - name: a wrong expectation of a fact fails the case
    message: "From: a@example.com\n\nhi\n"
    context: {mail_from: a@example.com}
    expect: {facts: {spf: pass}}
`})
	s, err := RunPaths(context.Background(), rs, []string{dir})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	s.WriteText(&b, false)
	if s.Passed() != 2 || s.Failed() != 1 || !strings.Contains(b.String(), "fact spf: expected pass, got none") {
		t.Fatalf("%d passed, %d failed:\n%s", s.Passed(), s.Failed(), b.String())
	}
}

// expect.facts on a list of records checks the count and the fields a case
// gives, not the others.
func TestCheckRecords(t *testing.T) {
	got := []builtins.Attachment{{Type: "application/zip", Name: "a.zip", Size: 10, DeclaredSize: 10, Archive: true}}
	want := func(recs ...map[string]any) any {
		l := make([]any, len(recs))
		for i, r := range recs {
			l[i] = r
		}
		return l
	}
	if f := checkRecords("attachments", builtins.AttachmentList, want(map[string]any{"type": "application/zip", "archive": true}), got); len(f) != 0 {
		t.Errorf("matching fields: %v", f)
	}
	if f := checkRecords("attachments", builtins.AttachmentList, want(map[string]any{"size": 11}), got); len(f) != 1 || !strings.Contains(f[0], "record 1: .size expected 11, got 10") {
		t.Errorf("wrong size: %v", f)
	}
	if f := checkRecords("attachments", builtins.AttachmentList, want(), got); len(f) != 1 || !strings.Contains(f[0], "expected 0 attachment records, got 1") {
		t.Errorf("wrong count: %v", f)
	}
}
