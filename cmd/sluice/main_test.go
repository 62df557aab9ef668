package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

var posRe = regexp.MustCompile(`(?m)^testdata/broken/[0-9a-z-]+\.yaml:\d+:\d+: `)

func TestCheckBroken(t *testing.T) {
	code, out, errs := runCLI("check", "testdata/broken")
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, out, errs)
	}
	if n := len(posRe.FindAllString(errs, -1)); n != 3 {
		t.Errorf("%d FILE:LINE:COL messages, want 3:\n%s", n, errs)
	}
	for _, want := range []string{
		"testdata/broken/10-a.yaml:3:16: invalid operation: > (mismatched types int and string)",
		"testdata/broken/10-a.yaml:5:5: unknown name subjet_caps (did you mean subject_caps?)",
		"testdata/broken/20-b.yaml:2:",
		"quote the whole rule",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
	if out != "" {
		t.Errorf("stdout should be empty on errors, got %q", out)
	}
}

func TestCheckGood(t *testing.T) {
	code, out, errs := runCLI("check", "testdata/good")
	if code != 0 || errs != "" {
		t.Fatalf("exit %d\n%s", code, errs)
	}
	for _, want := range []string{
		"testdata/good: 7 rules in 2 files; thresholds: reject >= 13, hold >= 8, tag >= 5; lists: role_locals",
		"\nhelo (1)\n", "\nmail (2)\n", "\nrcpt (1)\n", "\ndata (3)\n",
		"role  testdata/good/10-rules.yaml:13:5  block 550 5.1.1 \"These can't receive email\" [per recipient]",
		"[per recipient]", "[shadow]", "\nok\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestCheckEmpty: a directory that yields no rules is an error for check,
// as it is for the relay: the policy would silently vanish.
func TestCheckEmpty(t *testing.T) {
	dir := t.TempDir()
	code, out, errs := runCLI("check", dir)
	if code != 1 || out != "" || !strings.Contains(errs, dir+": no rules files (*.yaml, *.yml) in the directory") || !strings.Contains(errs, "rules not loaded") {
		t.Errorf("empty directory: exit %d\nstdout %q\nstderr %s", code, out, errs)
	}
	if err := os.Symlink("gone.yaml", filepath.Join(dir, "10-rules.yaml")); err != nil {
		t.Fatal(err)
	}
	code, _, errs = runCLI("check", dir)
	if code != 1 || !strings.Contains(errs, "10-rules.yaml: cannot read") {
		t.Errorf("dangling symlink: exit %d\n%s", code, errs)
	}
	os.Remove(filepath.Join(dir, "10-rules.yaml"))
	if err := os.WriteFile(filepath.Join(dir, "00-none.yaml"), []byte("rules: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := runCLI("check", dir); code != 0 || !strings.Contains(out, "0 rules in 1 file") {
		t.Errorf("rules: [] on purpose: exit %d\n%s%s", code, out, errs)
	}
}

func TestTestCommand(t *testing.T) {
	junit := filepath.Join(t.TempDir(), "report.xml")
	code, out, errs := runCLI("test", "--rules", "testdata/good", "testdata/fixtures", "--junit", junit, "--coverage")
	if code != 1 {
		t.Fatalf("exit %d with a failing case, want 1\n%s%s", code, out, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if last := lines[len(lines)-1]; last != "5 passed, 1 failed" {
		t.Errorf("last line %q\n%s", last, out)
	}
	for _, want := range []string{
		"FAIL  testdata/fixtures/failing.test.yaml:2  wrong expectation",
		"expected: reject, rules [spf-fail]",
		"got:      accept 250 2.0.0",
		"- action: expected reject, got accept",
		"- rule spf-fail: expected it to fire, it did not",
		"coverage: 6 of 7 rules fired",
		"not fired: never (testdata/good/10-rules.yaml:18:5)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	b, err := os.ReadFile(junit)
	if err != nil {
		t.Fatal(err)
	}
	var report struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
		Suites   []struct {
			Cases []struct {
				Name    string    `xml:"name,attr"`
				Failure *struct{} `xml:"failure"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b, &report); err != nil {
		t.Fatalf("junit: %v\n%s", err, b)
	}
	if report.Tests != 6 || report.Failures != 1 || len(report.Suites) != 2 {
		t.Errorf("junit: %d tests %d failures %d suites", report.Tests, report.Failures, len(report.Suites))
	}

	code, out, _ = runCLI("test", "--rules", "testdata/good", "testdata/fixtures/basic.test.yaml")
	if code != 0 || !strings.HasSuffix(out, "5 passed, 0 failed\n") {
		t.Errorf("passing run: exit %d\n%s", code, out)
	}
	code, _, errs = runCLI("test", "--rules", "testdata/broken", "testdata/fixtures")
	if code != 1 || !strings.Contains(errs, "did you mean subject_caps") {
		t.Errorf("broken rules: exit %d\n%s", code, errs)
	}
}

func TestExplain(t *testing.T) {
	ctx := filepath.Join(t.TempDir(), "ctx.yaml")
	if err := os.WriteFile(ctx, []byte("client_ip: 203.0.113.7\nrdns: \"\"\nfacts:\n  spf: fail\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCLI("explain", "--rules", "testdata/good", "--context", ctx, "testdata/fixtures/messages/caps.eml")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{
		`verdict:  reject 554 5.7.1 "Spam message rejected"`,
		"score:    14 (reject at 13)",
		"decided:  by thresholds after data",
		"RULE", "EVIDENCE",
		"caps-no-rdns", "subject_caps=true rdns_none=true",
		"spf-fail", `spf="fail"`,
		"candidate (shadow)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("explain output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = runCLI("explain", "--json", "--rules", "testdata/good", "--context", ctx, "testdata/fixtures/messages/caps.eml")
	var v struct {
		Action string  `json:"action"`
		Score  float64 `json:"score"`
		Hits   []struct {
			Rule     string `json:"rule"`
			Evidence []struct {
				Name string `json:"name"`
			} `json:"evidence"`
		} `json:"hits"`
	}
	if err := json.Unmarshal([]byte(out), &v); code != 0 || err != nil || v.Action != "reject" || v.Score != 14 || len(v.Hits) != 3 {
		t.Errorf("explain --json: exit %d err %v %+v", code, err, v)
	}
}

// TestRulesDirWithFixtures: a rules file of several documents loads whole,
// and fixtures kept in the rules directory are run by test, not loaded as
// rules by check.
func TestRulesDirWithFixtures(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"10-r.yaml":   "rules:\n  - caps: 'subject_caps => +6'\n---\nrules:\n  - big: 'size > 100000 => +1'\n",
		"r.test.yaml": "cases:\n  - name: caps\n    message: \"Subject: FREE MONEY NOW\\n\\nhi\\n\"\n    expect: {score: 6, rules: [caps], not_rules: [big]}\n",
	}
	for name, src := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if code, out, errs := runCLI("check", dir); code != 0 || !strings.Contains(out, "2 rules in 1 file") {
		t.Errorf("check: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs := runCLI("test", "--rules", dir, dir); code != 0 || !strings.HasSuffix(out, "1 passed, 0 failed\n") {
		t.Errorf("test: exit %d\n%s%s", code, out, errs)
	}
}

// TestExplainRuleError: explain shows the error of a rule whose
// expression fails, and the verdict the other rules gave.
func TestExplainRuleError(t *testing.T) {
	dir := t.TempDir()
	rules := "rules:\n  - idx: 'split(from, \"@\")[1] == \"x\" => block 550'\n  - s: size > 0 => +1\n"
	if err := os.WriteFile(filepath.Join(dir, "10-r.yaml"), []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	msg := filepath.Join(dir, "m.eml")
	if err := os.WriteFile(msg, []byte("To: bob@example.org\nSubject: x\n\nhi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCLI("explain", "--rules", dir, msg)
	want := "error:    " + filepath.Join(dir, "10-r.yaml") + ":2:27: rule idx: index out of range"
	if code != 0 || !strings.Contains(out, "verdict:  accept 250") || !strings.Contains(out, want) {
		t.Errorf("exit %d, stdout lacks %q:\n%s%s", code, want, out, errs)
	}
	code, out, _ = runCLI("explain", "--json", "--rules", dir, msg)
	if code != 0 || !strings.Contains(out, `"rule_errors"`) || !strings.Contains(out, `"rule": "idx"`) {
		t.Errorf("explain --json: exit %d\n%s", code, out)
	}
}

// TestBinary runs the built command as an operator would.
func TestBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "sluice")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "check", "testdata/broken")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("check of a broken directory: %v, want exit status 1", err)
	}
	if n := len(posRe.FindAllString(stderr.String(), -1)); n != 3 {
		t.Errorf("%d FILE:LINE:COL messages:\n%s", n, stderr.String())
	}
	out, err := exec.Command(bin, "test", "--rules", "testdata/good", "testdata/fixtures/basic.test.yaml").Output()
	if err != nil || !strings.HasSuffix(string(out), "5 passed, 0 failed\n") {
		t.Errorf("test: %v\n%s", err, out)
	}
	if err := exec.Command(bin, "nonsense").Run(); err == nil {
		t.Error("an unknown command exited 0")
	}
}
