package server

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicemail/sluice/queue"
)

// TestLocalDeliveryAtOnce: with local delivery the message is in its
// recipients' folders when the 250 comes, not spooled first; a recipient
// whose folder cannot be written is spooled alone and retried, and the
// one delivered at once is not written again.
func TestLocalDeliveryAtOnce(t *testing.T) {
	k := newSink(t)
	cfg := testConfig(t, k)
	mail := filepath.Join(t.TempDir(), "mail")
	cfg.Delivery = Delivery{Mode: "local", LocalDir: mail, Retry: []Duration{Duration(100 * time.Millisecond)}}
	if err := os.MkdirAll(mail, 0o700); err != nil {
		t.Fatal(err)
	}
	// A file where the folder of blocked@example.org would go.
	if err := os.WriteFile(filepath.Join(mail, "blocked@example.org"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := startRelay(t, cfg, testRules)
	c := r.dial(t, "submission")
	login(t, c, "ops")
	text, err := send(c, "sender@acme.test", []string{"ok@example.org", "blocked@example.org"}, message("sender@acme.test", "ok@example.org", "at once"))
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimPrefix(text, "Ok: queued as ")
	okFile := filepath.Join(mail, "ok@example.org", id+".eml")
	st, err := os.Stat(okFile)
	if err != nil {
		t.Fatalf("no file for ok@example.org when the 250 came: %v", err)
	}
	env, err := r.srv.spool.Envelope(queue.AreaQueue, id)
	if err != nil {
		t.Fatalf("the message for the blocked recipient is not queued: %v", err)
	}
	for _, rc := range env.Rcpts {
		want := map[string]string{"ok@example.org": queue.StatusDelivered, "blocked@example.org": queue.StatusPending}[rc.Addr]
		if rc.Status != want {
			t.Errorf("%s: %s, want %s", rc.Addr, rc.Status, want)
		}
	}
	if err := os.Remove(filepath.Join(mail, "blocked@example.org")); err != nil {
		t.Fatal(err)
	}
	blocked := filepath.Join(mail, "blocked@example.org", id+".eml")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(blocked); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the blocked recipient's retry never delivered")
		}
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if ids, _ := r.srv.spool.List(queue.AreaQueue); len(ids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the message stays queued after its last recipient was delivered")
		}
	}
	if st2, err := os.Stat(okFile); err != nil || !st2.ModTime().Equal(st.ModTime()) {
		t.Errorf("ok@example.org's file was written again by the retry (%v)", err)
	}
}

// TestCrashLosesNothingLocal is TestCrashLosesNothing with local delivery,
// where the 250 follows the write into the recipient's folder instead of
// the spool: after 10 SIGKILLs under load every acknowledged message is
// in the folder, whole (its last line is there), and no file but a
// complete one has its final name.
func TestCrashLosesNothingLocal(t *testing.T) {
	bin := sluiceBinary(t)
	k := newSink(t)
	cfgPath, addr, _ := writeProcConfig(t, k, "rules: []\n", "")
	mail := filepath.Join(filepath.Dir(cfgPath), "mail")
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	local := regexp.MustCompile(`(?m)^  mode: smarthost\n  smarthost: .*\n`).ReplaceAllString(string(b), "  mode: local\n  local_dir: "+mail+"\n")
	if local == string(b) {
		t.Fatal("the test config has no smarthost delivery to replace")
	}
	if err := os.WriteFile(cfgPath, []byte(local), 0o644); err != nil {
		t.Fatal(err)
	}
	// About 40 KB a message, so that a kill can land mid-write.
	body := strings.Repeat("a line of the message body, long enough to take a few pages\r\n", 650) + "LAST LINE\r\n"
	p, attempts, acked := killUnderLoad(t, bin, cfgPath, addr, "local", body, 4)
	if len(acked) < 50 {
		t.Fatalf("only %d messages acknowledged: the test did not exercise the relay", len(acked))
	}
	time.Sleep(500 * time.Millisecond) // the last relay retries what a folder failure spooled
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		t.Errorf("SIGTERM: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(mail, "bob@example.org", "*.eml"))
	got := map[string]int{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(string(data), "LAST LINE\r\n") {
			t.Errorf("%s is cut short (%d bytes)", filepath.Base(f), len(data))
		}
		if m := regexp.MustCompile(`(?m)^Subject: (\S+)\r$`).FindStringSubmatch(string(data)); m != nil {
			got[m[1]]++
		}
	}
	var lost []string
	for s := range acked {
		if got[s] == 0 {
			lost = append(lost, s)
		}
	}
	t.Logf("local crash test: %d attempts, %d acknowledged, %d files, %d lost", attempts, len(acked), len(files), len(lost))
	if len(lost) > 0 {
		t.Errorf("%d acknowledged messages not in the folder: %v", len(lost), lost)
	}
}
