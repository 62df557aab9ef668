package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// writeMbox writes n messages of one kind into an mbox, each with its own
// Message-ID and body.
func writeMbox(t *testing.T, path, kind string, n int) {
	t.Helper()
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "From %s@example.net Mon Nov 23 10:00:00 2026\n", kind)
		switch kind {
		case "ham":
			fmt.Fprintf(&b, "From: colleague%d@partner.example\nTo: bob@local.test\nSubject: minutes of the project meeting %d\nMessage-ID: <ham%d@partner.example>\n\n"+
				"Hi Bob,\n\nattached are the minutes of meeting %d. The release schedule moves to the next sprint;\n"+
				"please review the design document before Thursday and send comments to the team.\n\nRegards,\nAnna\n\n", i, i, i, i)
		default:
			fmt.Fprintf(&b, "From: winner%d@lottery-prize.example\nTo: bob@local.test\nSubject: cheap pills and casino bonus %d\nMessage-ID: <spam%d@lottery-prize.example>\n\n"+
				"CONGRATULATIONS! You won a casino bonus of $%d. Cheap pills, viagra, no prescription.\n"+
				"Click here to claim your prize now, limited offer, act now! Unsubscribe here.\n\n", i, i, i, 1000+i)
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

var learnedRe = regexp.MustCompile(`(?m)^classifier: (\d+) ham, (\d+) spam learned$`)

// TestLearnCommand runs `sluice learn` as an operator would, against a
// running relay (through its admin socket: the relay holds the embedded
// store) and against its state once it is stopped (the store opened
// directly): mboxes, a Maildir, a message learned twice, moved to the other
// class and forgotten, a path that cannot be read (exit 2), no state (exit
// 1). With enough learned, scan and explain --config show
// spam_probability from that classifier, with its tokens.
func TestLearnCommand(t *testing.T) {
	bin := buildSluice(t)
	rules, _ := filepath.Abs("../../rules.d")
	etc := t.TempDir()
	cfg := filepath.Join(etc, "sluice.yaml")
	os.WriteFile(cfg, []byte("listen: [{addr: '127.0.0.1:0'}]\nstate_dir: state\nrules_dir: "+rules+"\nlocal_domains: [local.test]\n"), 0o644)
	state := filepath.Join(etc, "state")
	mail := t.TempDir()
	writeMbox(t, filepath.Join(mail, "ham.mbox"), "ham", 210)
	writeMbox(t, filepath.Join(mail, "spam.mbox"), "spam", 205)
	md := filepath.Join(mail, "Maildir")
	for _, d := range []string{"cur", "new", "tmp"} {
		os.MkdirAll(filepath.Join(md, d), 0o700)
	}
	spamMsg := "From: winner999@lottery-prize.example\nTo: bob@local.test\nSubject: cheap pills and casino bonus 999\nMessage-ID: <spam999@lottery-prize.example>\n\n" +
		"CONGRATULATIONS! You won a casino bonus of $1999. Cheap pills, viagra, no prescription.\nClick here to claim your prize now, limited offer, act now! Unsubscribe here.\n"
	os.WriteFile(filepath.Join(md, "cur", "1.eml"), []byte(spamMsg), 0o600)
	os.WriteFile(filepath.Join(md, "new", "2.eml"), []byte(strings.Replace(spamMsg, "999", "998", -1)), 0o600)
	os.WriteFile(filepath.Join(md, "tmp", "3.eml"), []byte("not a delivered message"), 0o600) // tmp/ is not read
	ops := t.TempDir()
	learn := func(args ...string) (int, string, string) {
		return sluiceIn(t, bin, ops, []string{"SLUICE_CONFIG=" + cfg}, append([]string{"learn"}, args...)...)
	}

	// No state yet: said, exit 1, nothing created.
	code, out, errs := learn("ham", filepath.Join(mail, "ham.mbox"))
	if code != 1 || !strings.Contains(errs, "no relay state at "+state) || out != "" {
		t.Fatalf("learn without a state: exit %d\n%s%s", code, out, errs)
	}
	if _, err := os.Stat(state); err == nil {
		t.Fatal("learn created the state")
	}

	relay := startServe(t, bin, t.TempDir(), nil, "--config", cfg)
	via := "state: " + state + " (via the running relay)\n"
	code, out, errs = learn("ham", filepath.Join(mail, "ham.mbox"))
	if code != 0 || errs != via || !strings.HasPrefix(out, "learned 210 as ham, already known 0, moved 0, errors 0\nclassifier: 210 ham, 0 spam learned\n") ||
		!strings.Contains(out, "spam_probability stays 0.5 until at least 200 ham and 200 spam are learned") {
		t.Fatalf("learn ham through the relay: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = learn("spam", filepath.Join(mail, "spam.mbox"), md)
	if code != 0 || out != "learned 207 as spam, already known 0, moved 0, errors 0\nclassifier: 210 ham, 207 spam learned\n" {
		t.Fatalf("learn spam through the relay: exit %d\n%s%s", code, out, errs)
	}
	// Twice counts once; the other class moves it; a path that cannot be
	// read is said and exits 2, the rest is learned.
	code, out, errs = learn("spam", filepath.Join(md, "cur", "1.eml"), filepath.Join(mail, "missing"))
	if code != 2 || !strings.Contains(errs, "missing: no such file or directory") || out != "learned 0 as spam, already known 1, moved 0, errors 0\nclassifier: 210 ham, 207 spam learned\n" {
		t.Fatalf("learn again with a missing path: exit %d\n%s%s", code, out, errs)
	}

	// With at least 200 of each, scan and explain --config judge with the
	// relay's classifier, through its admin socket.
	probe := filepath.Join(mail, "probe.eml")
	os.WriteFile(probe, []byte(strings.Replace(spamMsg, "999", "4242", -1)), 0o644)
	ctxFile := filepath.Join(mail, "ctx.yaml")
	os.WriteFile(ctxFile, []byte("client_ip: 198.51.100.7\nhelo: mx.example.org\nrdns: mx.example.org\n"), 0o644)
	code, out, errs = sluiceIn(t, bin, ops, nil, "explain", "--config", cfg, "--context", ctxFile, probe)
	if code != 0 || errs != via || !regexp.MustCompile(`classifier-spam +data +\+5 +.*spam_probability=[01][.0-9]* spam_tokens=\[`).MatchString(out) {
		t.Errorf("explain --config through the relay: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = sluiceIn(t, bin, ops, nil, "scan", "--config", cfg, "--context", ctxFile, probe)
	if code != 0 || !strings.Contains(out, "classifier-spam") {
		t.Errorf("scan --config through the relay: exit %d\n%s%s", code, out, errs)
	}
	// Without --config there is no classifier: 0.5, nothing fires.
	code, out, _ = sluiceIn(t, bin, ops, nil, "explain", "--rules", rules, "--context", ctxFile, probe)
	if code != 0 || strings.Contains(out, "classifier-") {
		t.Errorf("explain without --config: exit %d\n%s", code, out)
	}

	relay.stop(t)
	direct := "state: " + state + " (no relay running: opened directly)\n"
	code, out, errs = learn("ham", filepath.Join(md, "new", "2.eml"))
	if code != 0 || errs != direct || out != "learned 0 as ham, already known 0, moved 1, errors 0\nclassifier: 211 ham, 206 spam learned\n" {
		t.Fatalf("move to ham, relay stopped: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = learn("forget", md, filepath.Join(mail, "probe.eml"))
	if code != 0 || errs != direct || out != "forgot 2, not learned 1, errors 0\nclassifier: 210 ham, 205 spam learned\n" {
		t.Fatalf("forget, relay stopped: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = sluiceIn(t, bin, ops, nil, "explain", "--config", cfg, "--context", ctxFile, probe)
	if code != 0 || errs != direct || !strings.Contains(out, "classifier-spam") {
		t.Errorf("explain --config, relay stopped: exit %d\n%s%s", code, out, errs)
	}
	code, _, errs = learn("junk", probe)
	if code != 2 || !strings.Contains(errs, learnUsage) {
		t.Errorf("learn junk: exit %d %s", code, errs)
	}
}
