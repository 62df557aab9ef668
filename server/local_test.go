package server

import (
	"os"
	"path/filepath"
	"strings"
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
