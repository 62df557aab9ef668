package server

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/sluicemail/sluice/queue"
)

// TestBrowserQueueActions: in a real browser, the operator retries one
// deferred message now (the retry table says an hour), which reaches the
// next hop, and deletes the other, which never does.
func TestBrowserQueueActions(t *testing.T) {
	exe := chromium(t)
	k := newSink(t)
	k.dataAnswer = func(n int) error {
		if n <= 2 { // each message's first attempt
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "not now"}
		}
		return nil
	}
	cfg := testConfig(t, k)
	cfg.Delivery.Retry = []Duration{Duration(time.Hour)}
	admin := freePort(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("operator pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Web = WebConfig{AdminListen: admin, Admins: []WebAdmin{{Name: "ops-admin", PasswordHash: string(hash)}}}
	r := startRelay(t, cfg, "rules: []\n")
	c := r.dial(t, "submission")
	login(t, c, "ops")
	for _, subj := range []string{"retry me", "delete me"} {
		if _, err := send(c, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", subj)); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	ids, _ := r.srv.spool.List(queue.AreaQueue) // oldest first
	if len(ids) != 2 {
		t.Fatalf("queue: %v", ids)
	}
	for _, id := range ids {
		waitAttempts(t, r.srv, id, 1)
	}
	time.Sleep(100 * time.Millisecond) // the workers let go of them

	profile, err := os.MkdirTemp("", "sluice-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for range 50 {
			if os.RemoveAll(profile) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	actx, cancel := chromedp.NewExecAllocator(context.Background(), chromedp.ExecPath(exe), chromedp.Flag("headless", true),
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true), chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(profile), chromedp.WindowSize(1100, 900))
	defer cancel()
	bctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	bctx, cancel = context.WithTimeout(bctx, 60*time.Second)
	defer cancel()
	run := func(step string, as ...chromedp.Action) {
		t.Helper()
		if err := chromedp.Run(bctx, as...); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
	}
	box := func(id string) string { return `input[name=id][value="` + id + `"]` }

	base := "http://" + admin
	var page, notice string
	run("login", chromedp.Navigate(base+"/login"), chromedp.WaitVisible("#name", chromedp.ByID),
		chromedp.SendKeys("#name", "ops-admin", chromedp.ByID), chromedp.SendKeys("#password", "operator pw", chromedp.ByID),
		chromedp.Click("#login", chromedp.ByID), chromedp.WaitVisible("nav", chromedp.ByQuery))
	run("queue page", chromedp.Navigate(base+"/queue"), chromedp.WaitVisible(box(ids[0]), chromedp.ByQuery),
		chromedp.Text("main", &page, chromedp.ByQuery))
	if !strings.Contains(page, "2 messages wait") || !strings.Contains(page, "not now") {
		t.Errorf("queue page:\n%s", page)
	}
	run("retry", chromedp.Click(box(ids[0]), chromedp.ByQuery), chromedp.Click("#queue-retry", chromedp.ByID),
		chromedp.WaitVisible(".notice", chromedp.ByQuery), chromedp.Text(".notice", &notice, chromedp.ByQuery))
	if notice != "Retried now: 1." {
		t.Errorf("after retry: %q", notice)
	}
	if got := k.wait(t, 1, 5*time.Second); !strings.Contains(string(got[0].Data), "Subject: retry me") {
		t.Errorf("retried: %s", got[0].Data)
	}
	run("delete", chromedp.Navigate(base+"/queue"), chromedp.WaitVisible(box(ids[1]), chromedp.ByQuery),
		chromedp.Click(box(ids[1]), chromedp.ByQuery), chromedp.Click("#queue-delete", chromedp.ByID),
		chromedp.WaitVisible(".notice", chromedp.ByQuery), chromedp.Text(".notice", &notice, chromedp.ByQuery),
		chromedp.Text("main", &page, chromedp.ByQuery))
	if notice != "Deleted (no bounce sent): 1." || !strings.Contains(page, "The queue is empty.") {
		t.Errorf("after delete: %q\n%s", notice, page)
	}
	if _, err := r.srv.spool.Envelope(queue.AreaQueue, ids[1]); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("deleted message still spooled: %v", err)
	}
	if n := len(k.messages()); n != 1 {
		t.Errorf("the next hop got %d messages, want 1", n)
	}
}
