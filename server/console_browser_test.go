package server

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/bcrypt"

	"github.com/sluicemail/sluice/internal/testdeps"
	"github.com/sluicemail/sluice/store"
)

// chromium finds Debian's chromium. The test skips without it only when
// nothing asked for it: `make test` installs it and sets
// SLUICE_REQUIRE_DEPS, and CI sets CI (testdeps.Missing).
func chromium(t *testing.T) string {
	for _, p := range []string{"/usr/bin/chromium", "chromium"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	testdeps.Missing(t, "chromium (/usr/bin/chromium)")
	return ""
}

// screenshots is where the browser test writes its pictures: the
// directory $SLUICE_SCREENSHOTS names, else a temporary one.
func screenshots(t *testing.T) string {
	if d := os.Getenv("SLUICE_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// TestBrowserReportReviewAndConsole is the acceptance test of issue 9 in
// a real browser: a sender follows the link of a real SMTP refusal, reads
// the reason and evidence and requests a review; the operator logs in,
// sees the review, releases a held message and removes a list entry; the
// held message is then delivered.
func TestBrowserReportReviewAndConsole(t *testing.T) {
	exe := chromium(t)
	shots := screenshots(t)
	k := newSink(t)
	cfg := testConfig(t, k)
	addr, admin := freePort(t), freePort(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("operator pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Web = WebConfig{Listen: addr, AdminListen: admin, PublicURL: "http://" + addr, PublicFacts: []string{"size", "subject"},
		Admins: []WebAdmin{{Name: "ops-admin", PasswordHash: string(hash)}}}
	r := startRelay(t, cfg, `rules:
  - name: acl-offer
    when: subject contains "offer" and size > 10
    then: 'block 550 5.7.1 "[ACL] Blocked"'
    description: Offers may only come from the marketing account.
    advice: Send offers through the marketing account's SMTP user.
  - blocked: 'in_list("blocked", mail_from) => block 550 5.7.1 "Sender blocked"'
  - review: 'subject contains "[review]" => hold "held for review"'
`)
	ctx := context.Background()
	if err := r.srv.store.ListAdd(ctx, store.Entry{List: "blocked", Key: "old@acme.test", Reason: "complaints", Source: "test", Added: time.Now()}); err != nil {
		t.Fatal(err)
	}

	// The refusal, over a real SMTP client.
	c := r.dial(t, "submission")
	login(t, c, "ops")
	_, err = send(c, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", "Our best offer"))
	code, _, text := smtpCode(err)
	m := regexp.MustCompile(`See (http://\S+/report/\S+)$`).FindStringSubmatch(text)
	if code != 550 || m == nil {
		t.Fatalf("refusal %d %q: want a report link", code, text)
	}
	// The held message.
	if _, err := send(c, "x@acme.test", []string{"carol@example.org"}, message("x@acme.test", "carol@example.org", "[review] invoice 42")); err != nil {
		t.Fatalf("held message: %v", err)
	}
	c.Close()

	// The profile directory is removed once chromium is gone: its helper
	// processes may still write there for a moment after the browser
	// context is cancelled, which t.TempDir's cleanup would take as an error.
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
	opts := []chromedp.ExecAllocatorOption{chromedp.ExecPath(exe), chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(profile), chromedp.WindowSize(1100, 900)}
	actx, cancel := chromedp.NewExecAllocator(ctx, opts...)
	defer cancel()
	bctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	bctx, cancel = context.WithTimeout(bctx, 90*time.Second)
	defer cancel()
	shot := func(name string) chromedp.Action {
		return chromedp.ActionFunc(func(ctx context.Context) error {
			var png []byte
			if err := chromedp.FullScreenshot(&png, 100).Do(ctx); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644)
		})
	}
	run := func(step string, as ...chromedp.Action) {
		t.Helper()
		if err := chromedp.Run(bctx, as...); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
	}

	// The sender reads the report and requests a review.
	var report string
	run("report page", chromedp.Navigate(m[1]), chromedp.WaitVisible("#contact", chromedp.ByID),
		chromedp.Text("main", &report, chromedp.ByQuery), shot("report"))
	for _, want := range []string{"Offers may only come from the marketing account.", "Send offers through the marketing account's SMTP user.", "Our best offer", "[ACL] Blocked"} {
		if !strings.Contains(report, want) {
			t.Errorf("report page lacks %q:\n%s", want, report)
		}
	}
	var sent string
	run("review request", chromedp.SendKeys("#contact", "x@acme.test", chromedp.ByID),
		chromedp.SendKeys("#message", "This offer went to a customer who asked for it.", chromedp.ByID),
		chromedp.Click(`form button[type=submit]`, chromedp.ByQuery),
		chromedp.WaitVisible(`p[role=status]`, chromedp.ByQuery), chromedp.Text(`p[role=status]`, &sent, chromedp.ByQuery), shot("report-review-sent"))
	if !strings.Contains(sent, "Your request was received") {
		t.Errorf("after the review request: %q", sent)
	}

	// The operator logs in and sees the review.
	base := "http://" + admin
	var reviews string
	run("login", chromedp.Navigate(base+"/login"), chromedp.WaitVisible("#name", chromedp.ByID),
		chromedp.SendKeys("#name", "ops-admin", chromedp.ByID), chromedp.SendKeys("#password", "operator pw", chromedp.ByID), shot("console-login"),
		chromedp.Click("#login", chromedp.ByID), chromedp.WaitVisible("nav", chromedp.ByQuery),
		chromedp.Text("main", &reviews, chromedp.ByQuery), shot("console-reviews"))
	if !strings.Contains(reviews, "This offer went to a customer who asked for it.") || !strings.Contains(reviews, "x@acme.test") {
		t.Fatalf("the review is not on the console's front page:\n%s", reviews)
	}
	var review string
	run("review page", chromedp.Click(`a[href^="/reviews/"]`, chromedp.ByQuery), chromedp.WaitVisible("#answer", chromedp.ByID),
		chromedp.Text("main", &review, chromedp.ByQuery), shot("console-review"))
	for _, want := range []string{"acl-offer", "by rule acl-offer at data", "subject=", "Add x@acme.test to allow"} {
		if !strings.Contains(review, want) {
			t.Errorf("review page lacks %q:\n%s", want, review)
		}
	}

	// It releases the held message from the holding area...
	var hold, notice string
	run("holding area", chromedp.Click(`a[href="/hold"]`, chromedp.ByQuery), chromedp.WaitVisible(`input[name=id]`, chromedp.ByQuery),
		chromedp.Text("main", &hold, chromedp.ByQuery), shot("console-hold"))
	if !strings.Contains(hold, "[review] invoice 42") || !strings.Contains(hold, "held for review") {
		t.Errorf("holding area:\n%s", hold)
	}
	run("release", chromedp.Click(`input[name=id]`, chromedp.ByQuery), chromedp.Click("#hold-release", chromedp.ByID),
		chromedp.WaitVisible(".notice", chromedp.ByQuery), chromedp.Text(".notice", &notice, chromedp.ByQuery), shot("console-hold-released"))
	if notice != "Released: 1." {
		t.Errorf("after release: %q", notice)
	}
	// ... and removes a list entry.
	var lists string
	run("lists", chromedp.Click(`a[href="/lists"]`, chromedp.ByQuery), chromedp.WaitVisible("#name", chromedp.ByID),
		chromedp.Click(`a[href="/lists?name=blocked"]`, chromedp.ByQuery), chromedp.WaitVisible(`button[aria-label="Remove old@acme.test"]`, chromedp.ByQuery),
		shot("console-lists"), chromedp.Click(`button[aria-label="Remove old@acme.test"]`, chromedp.ByQuery),
		chromedp.WaitVisible(".notice", chromedp.ByQuery), chromedp.Text("main", &lists, chromedp.ByQuery))
	if !strings.Contains(lists, "old@acme.test removed.") || !strings.Contains(lists, "The list is empty.") {
		t.Errorf("after removing the entry:\n%s", lists)
	}
	if e, err := r.srv.store.ListGet(ctx, "blocked", "old@acme.test", time.Now()); err != nil || e != nil {
		t.Errorf("old@acme.test still on blocked: %+v %v", e, err)
	}

	// The released message is delivered.
	got := k.wait(t, 1, 10*time.Second)
	if len(got) != 1 || !strings.Contains(string(got[0].Data), "[review] invoice 42") {
		t.Errorf("delivered: %+v", got)
	}
	t.Logf("screenshots in %s", shots)
}
