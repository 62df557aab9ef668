package server

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/sluicemail/sluice/queue"
	"github.com/sluicemail/sluice/store/storetest"
)

// TestStateIsPrivate runs a relay under the usual umask 022 and checks that
// nothing under its state directory (store, spool, holding area, delivered
// mail, keys, admin socket) is open to other local users: it holds
// envelopes and addresses.
func TestStateIsPrivate(t *testing.T) {
	old := syscall.Umask(0o022)
	t.Cleanup(func() { syscall.Umask(old) })

	k := newSink(t)
	cfg := testConfig(t, k)
	cfg.StateDir = filepath.Join(t.TempDir(), "state")
	cfg.Delivery = Delivery{Mode: "local"}
	cfg.Unsubscribe = UnsubscribeConfig{Listen: "127.0.0.1:0", URL: "http://relay.test/u"}
	r := startRelay(t, cfg, testRules)
	c := r.dial(t, "plain")
	if _, err := send(c, "app@example.com", []string{"bob@local.test"}, message("app@example.com", "bob@local.test", "hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := send(c, "app@example.com", []string{"bob@local.test"}, message("app@example.com", "bob@local.test", "[review] me")); err != nil {
		t.Fatal(err)
	}
	mail := filepath.Join(cfg.StateDir, "mail")
	for deadline := time.Now().Add(10 * time.Second); ; {
		if ms, _ := filepath.Glob(filepath.Join(mail, "*", "*")); len(ms) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no message delivered into", mail)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if held, _ := r.srv.Spool().List(queue.AreaHold); len(held) != 1 {
		t.Fatalf("held: %v, want one message", held)
	}
	storetest.AssertPrivate(t, cfg.StateDir, 10)
}
