package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const scanMsgs = "../../examples/fixtures/messages/"

// scanGolden is what SPEC 7 fixes: one tab-separated line per message, in
// input order, then the summary.
const scanGolden = scanMsgs + "phishing-paypal.eml\thold\t9.5\tcaps,phishing\n" +
	scanMsgs + "invoice.eml\taccept\t0\t-\n" +
	scanMsgs + "utf8-caps-subject.eml\ttag\t4.5\tcaps\n" +
	scanMsgs + "script-no-headers.eml\taccept\t1.25\tno-date\n" +
	scanMsgs + "link-farm.eml\taccept\t0\tmany-links\n" +
	"5 messages: 3 accept, 1 tag, 1 hold, 0 tempfail, 0 reject\n"

var scanFiles = []string{"phishing-paypal.eml", "invoice.eml", "utf8-caps-subject.eml", "script-no-headers.eml", "link-farm.eml"}

func scanArgs(extra ...string) []string {
	args := append([]string{"scan", "--rules", "testdata/scan-rules"}, extra...)
	for _, f := range scanFiles {
		args = append(args, scanMsgs+f)
	}
	return args
}

func TestScanOutput(t *testing.T) {
	for _, j := range []string{"1", "4"} {
		code, out, errs := runCLI(scanArgs("-j", j)...)
		if code != 0 || errs != "" {
			t.Fatalf("-j %s: exit %d: %s", j, code, errs)
		}
		if out != scanGolden {
			t.Errorf("-j %s: got\n%s\nwant\n%s", j, out, scanGolden)
		}
	}
}

func TestScanJSON(t *testing.T) {
	code, out, errs := runCLI(scanArgs("--json")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(scanFiles) {
		t.Fatalf("%d lines, want one per message and no summary:\n%s", len(lines), out)
	}
	var first, second map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	json.Unmarshal([]byte(lines[1]), &second)
	if first["path"] != scanMsgs+"phishing-paypal.eml" || first["action"] != "hold" || first["score"] != 9.5 ||
		len(first) != 4 || strings.Join(toStrings(first["rules"]), ",") != "caps,phishing" {
		t.Errorf("first object: %v", first)
	}
	if r, ok := second["rules"].([]any); !ok || len(r) != 0 {
		t.Errorf("no rule fired: want rules [], got %v", second["rules"])
	}
}

func toStrings(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, e := range l {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

// TestScanOrder scans many messages on 4 workers: the lines come in the
// order the messages were found.
func TestScanOrder(t *testing.T) {
	dir := t.TempDir()
	var want []string
	for i := range 60 {
		name := filepath.Join(dir, string(rune('a'+i/26))+string(rune('a'+i%26))+".eml")
		subj := "quiet words"
		if i%3 == 0 {
			subj = "SHOUTING SUBJECT LINE"
		}
		if err := os.WriteFile(name, []byte("From: a@example.com\nDate: Tue, 1 Oct 2002 10:00:00 +0000\nSubject: "+subj+"\n\nbody\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			want = append(want, name+"\ttag\t4.5\tcaps")
		} else {
			want = append(want, name+"\taccept\t0\t-")
		}
	}
	code, out, errs := runCLI("scan", "--rules", "testdata/scan-rules", "-j", "4", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	got := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if strings.Join(got[:len(got)-1], "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", out, strings.Join(want, "\n"))
	}
	if last := got[len(got)-1]; last != "60 messages: 40 accept, 20 tag, 0 hold, 0 tempfail, 0 reject" {
		t.Errorf("summary: %s", last)
	}
}

func TestScanMboxSymlinkUnreadable(t *testing.T) {
	dir := t.TempDir()
	mbox := filepath.Join(dir, "inbox.mbox")
	body := "From a@example.com Tue Oct  1 10:00:00 2002\nSubject: FIRST SHOUTING SUBJECT\n\n>From here\n\n" +
		"From b@example.com Tue Oct  1 10:00:00 2002\nDate: Tue, 1 Oct 2002 10:00:00 +0000\nSubject: second\n\nx\n\n" +
		"From c@example.com Tue Oct  1 10:00:00 2002\nDate: Tue, 1 Oct 2002 10:00:00 +0000\nSubject: third\n\nx\n"
	if err := os.WriteFile(mbox, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.eml")
	if err := os.Symlink(mustAbs(t, scanMsgs+"utf8-caps-subject.eml"), link); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.eml")
	code, out, errs := runCLI("scan", "--rules", "testdata/scan-rules", mbox, missing, link)
	if code != 2 {
		t.Errorf("exit %d, want 2 for a path that cannot be read", code)
	}
	if !strings.Contains(errs, "missing.eml") {
		t.Errorf("stderr does not name the unreadable path: %q", errs)
	}
	want := mbox + ":1\ttag\t5.75\tcaps,no-date\n" +
		mbox + ":2\taccept\t0\t-\n" +
		mbox + ":3\taccept\t0\t-\n" +
		link + "\ttag\t4.5\tcaps\n" +
		"4 messages: 2 accept, 2 tag, 0 hold, 0 tempfail, 0 reject\n"
	if out != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestScanHits(t *testing.T) {
	code, out, errs := runCLI(scanArgs("--hits")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{
		"  HITS       %  RULE\n",
		"     2   40.00  caps\n",
		"     1   20.00  many-links\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("hits table lacks %q:\n%s", want, out)
		}
	}
	if !strings.HasSuffix(out, "\n5 messages: 3 accept, 1 tag, 1 hold, 0 tempfail, 0 reject\n") {
		t.Errorf("the summary is not the last line:\n%s", out)
	}
}

func TestScanHitsLabels(t *testing.T) {
	code, out, errs := runCLI("scan", "--rules", "testdata/scan-rules", "--hits",
		"ham="+scanMsgs+"invoice.eml", "ham="+scanMsgs+"utf8-caps-subject.eml", "ham="+scanMsgs+"link-farm.eml",
		"spam="+scanMsgs+"phishing-paypal.eml", "spam="+scanMsgs+"script-no-headers.eml")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{
		scanMsgs + "invoice.eml\taccept\t0\t-\n",
		"OVERALL%    SPAM%     HAM%    S/O   RANK  SCORE  NAME\n",
		"       5        2        3  0.400   0.00   0.00  (all messages)\n",
		// phishing: 1 of 2 spam, no ham; caps: 1 of 2 spam, 1 of 3 ham.
		" 20.000  50.0000   0.0000  1.000   1.00   1.25  no-date\n  20.000  50.0000   0.0000  1.000   1.00   5.00  phishing\n",
		" 40.000  50.0000  33.3333  0.600   0.00   4.50  caps\n",
		" 20.000   0.0000  33.3333  0.000   0.50   0.50  many-links\n",
		"ham flagged (tag, hold or reject): 1 of 3, 33.33%\n",
		"spam caught (tag, hold or reject): 1 of 2, 50.00%\n",
		"ham:  3 messages: 2 accept, 1 tag, 0 hold, 0 tempfail, 0 reject\n",
		"spam: 2 messages: 1 accept, 0 tag, 1 hold, 0 tempfail, 0 reject\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if !strings.HasSuffix(out, "\n5 messages: 3 accept, 1 tag, 1 hold, 0 tempfail, 0 reject\n") {
		t.Errorf("the summary is not the last line:\n%s", out)
	}
}

func TestScanUsage(t *testing.T) {
	if code, _, _ := runCLI("scan", "--json", "--hits", scanMsgs); code != 2 {
		t.Errorf("--json --hits: exit %d, want 2", code)
	}
	if code, _, _ := runCLI("scan"); code != 2 {
		t.Errorf("no path: exit %d, want 2", code)
	}
}
