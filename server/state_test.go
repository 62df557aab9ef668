package server

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sluicemail/sluice/queue"
	"github.com/sluicemail/sluice/store"
	"github.com/sluicemail/sluice/store/storetest"
)

const limitRules = `rules:
  - hourly-limit: 'hourly_sent >= 300 => block 421 4.7.1 "Rate limit: 300 messages per hour"'
  - bounce-list: 'in_list("bounces", rcpt) => block 550 5.1.1 "Email address is on account''s Bounce list."'
  - blocked-sender: 'in_list("blocked", mail_from) => block 550 5.7.1 "Your address was blocked"'
`

// TestTwoRelaysShareOneLimit: two relays on one redis-server enforce one
// limit of 300 per hour for a user across both.
func TestTwoRelaysShareOneLimit(t *testing.T) {
	rs := storetest.StartRedis(t)
	k := newSink(t)
	var relays []*relay
	for range 2 {
		cfg := testConfig(t, k)
		cfg.Store = StoreConfig{Kind: "redis", Redis: RedisConfig{Addrs: []string{rs.Addr}}}
		cfg.Limits.HardErrorLimit = 1000 // 20 refusals a session are the point here
		relays = append(relays, startRelayWith(t, cfg, limitRules, Options{}))
	}
	var clients []*smtp.Client
	for _, r := range relays {
		c := r.dial(t, "submission")
		login(t, c, "ops")
		clients = append(clients, c)
	}
	accepted, limited := 0, 0
	for i := range 340 {
		_, err := send(clients[i%2], "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", fmt.Sprint("m", i)))
		switch code, enh, _ := smtpCode(err); {
		case err == nil:
			accepted++
		case code == 421 && enh == "4.7.1":
			limited++
		default:
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if accepted != 300 || limited != 40 {
		t.Errorf("accepted %d, limited %d; want 300 and 40 across both relays", accepted, limited)
	}
}

// TestStoreDownTempfails stops redis-server mid-run: a rule that needs a
// counter answers 451 4.3.0 (never a count of zero), and the relay
// recovers when Redis is back, without a restart.
func TestStoreDownTempfails(t *testing.T) {
	rs := storetest.StartRedis(t)
	k := newSink(t)
	cfg := testConfig(t, k)
	cfg.Store = StoreConfig{Kind: "redis", Redis: RedisConfig{Addrs: []string{rs.Addr}, Timeout: Duration(200 * time.Millisecond)}}
	r := startRelayWith(t, cfg, limitRules, Options{})
	c := r.dial(t, "submission")
	login(t, c, "ops")
	if _, err := send(c, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", "before")); err != nil {
		t.Fatal(err)
	}
	rs.Stop()
	_, err := send(c, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", "during"))
	code, enh, text := smtpCode(err)
	if code != 451 || enh != "4.3.0" || !idInReply.MatchString(text) {
		t.Fatalf("with redis down: %d %s %q, want 451 4.3.0", code, enh, text)
	}
	m := scrapeMetrics(t, r)
	if m[`sluice_store_errors_total{op=read}`] < 1 || m[`sluice_decisions_total{action=tempfail}`] != 1 {
		t.Errorf("with redis down: store read errors %v, tempfail decisions %v; want >= 1 and 1",
			m[`sluice_store_errors_total{op=read}`], m[`sluice_decisions_total{action=tempfail}`])
	}
	rs.Start()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := send(c, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", "after"))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after redis came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestBouncesFeedTheList: a hard bounce puts the address on the bounce
// list, and the next message to it is refused at RCPT; three soft bounces
// do the same.
func TestBouncesFeedTheList(t *testing.T) {
	k := newSink(t)
	k.rcptAnswer = func(to string) error {
		switch {
		case strings.HasPrefix(to, "gone@"):
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		case strings.HasPrefix(to, "full@"):
			return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full"}
		}
		return nil
	}
	cfg := testConfig(t, k)
	cfg.Delivery.MaxAge = Duration(time.Hour)
	r := startRelay(t, cfg, limitRules)
	c := r.dial(t, "submission")
	login(t, c, "ops")
	if _, err := send(c, "x@acme.test", []string{"gone@example.org", "full@example.org"}, message("x@acme.test", "gone@example.org", "first")); err != nil {
		t.Fatal(err)
	}
	waitListed := func(addr string) *store.Entry {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if e, _ := r.srv.store.ListGet(context.Background(), "bounces", addr, time.Now()); e != nil {
				return e
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("%s not on the bounce list", addr)
		return nil
	}
	e := waitListed("gone@example.org")
	if !strings.Contains(e.Reason, "550 5.1.1") || !strings.HasPrefix(e.Source, "delivery of ") {
		t.Errorf("entry %+v", e)
	}
	e = waitListed("full@example.org") // retried every 200ms: the third soft bounce lists it
	if !strings.Contains(e.Reason, "3 soft bounces") {
		t.Errorf("entry %+v", e)
	}
	_, err := send(c, "x@acme.test", []string{"gone@example.org"}, message("x@acme.test", "gone@example.org", "again"))
	if code, enh, text := smtpCode(err); code != 550 || enh != "5.1.1" || !strings.HasPrefix(text, "Email address is on account's Bounce list.") {
		t.Errorf("to a bounced address: %v", err)
	}
	// An operator's block applies at once.
	r.srv.store.ListAdd(context.Background(), store.Entry{List: "blocked", Key: "x@acme.test", Reason: "abuse", Source: "operator", Added: time.Now()})
	err = c.Mail("x@acme.test", nil)
	if code, _, _ := smtpCode(err); code != 550 {
		t.Errorf("blocked sender: %v", err)
	}
}

// TestAdminSocketLists: `sluice list` reaches a running relay that holds
// the embedded store through its admin socket, and a change applies at once.
func TestAdminSocketLists(t *testing.T) {
	k := newSink(t)
	cfg := testConfig(t, k)
	r := startRelay(t, cfg, limitRules)
	a, ok := DialAdmin(AdminSocket(cfg))
	if !ok {
		t.Fatal("no admin socket")
	}
	ctx := context.Background()
	if err := a.ListAdd(ctx, store.Entry{List: "blocked", Key: "X@acme.test", Reason: "abuse", Source: "operator"}); err != nil {
		t.Fatal(err)
	}
	es, err := a.ListEntries(ctx, "blocked", time.Now())
	if err != nil || len(es) != 1 || es[0].Key != "x@acme.test" || es[0].Added.IsZero() {
		t.Fatalf("entries %+v %v", es, err)
	}
	c := r.dial(t, "submission")
	login(t, c, "ops")
	if code, _, _ := smtpCode(c.Mail("x@acme.test", nil)); code != 550 {
		t.Error("the block did not apply")
	}
	if ok, err := a.ListRemove(ctx, "blocked", "x@acme.test"); !ok || err != nil {
		t.Errorf("remove: %v %v", ok, err)
	}
	if e, err := a.ListGet(ctx, "blocked", "x@acme.test", time.Now()); e != nil || err != nil {
		t.Errorf("after remove: %+v %v", e, err)
	}
	c.Reset()
	if err := c.Mail("x@acme.test", nil); err != nil {
		t.Errorf("after the block was lifted: %v", err)
	}
}

// TestEscalationToALastingBlock: a client that keeps sending into the 421
// is put on a list by a rule, and from then on refused with a 550 (seeds
// 000 and 003).
func TestEscalationToALastingBlock(t *testing.T) {
	k := newSink(t)
	r := startRelay(t, testConfig(t, k), `rules:
  - blocked-user: 'in_list("blocked_users", smtp_user) => block 550 5.7.1 "Sending blocked"'
  - escalate: 'hourly_attempts > 5 => list blocked_users smtp_user for 1h "kept sending into the limit"'
  - limit: 'hourly_sent >= 3 => block 421 4.7.1 "Rate limit"'
`)
	c := r.dial(t, "submission")
	login(t, c, "ops")
	var codes []int
	for i := range 8 {
		_, err := send(c, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", fmt.Sprint("n", i)))
		code, _, _ := smtpCode(err)
		if err == nil {
			code = 250
		}
		codes = append(codes, code)
	}
	if fmt.Sprint(codes) != "[250 250 250 421 421 421 550 550]" {
		t.Errorf("replies %v, want 3 accepted, 3 throttled, then blocked", codes)
	}
	e, err := r.srv.store.ListGet(context.Background(), "blocked_users", "ops", time.Now())
	if err != nil || e == nil {
		t.Fatalf("not listed: %v", err)
	}
	if e.Reason != "kept sending into the limit" || !strings.HasPrefix(e.Source, "rule escalate (decision ") || e.Expires.Sub(e.Added) != time.Hour {
		t.Errorf("entry %+v", e)
	}
}

// TestAbuseSignals: the seeds' abuse signals computed from the store.
func TestAbuseSignals(t *testing.T) {
	k := newSink(t)
	r := startRelay(t, testConfig(t, k), `rules:
  - senders: 'distinct_senders > 2 => block 550 5.7.1 "Too many sender addresses"'
  - per-domain: 'count("rcpt_domain", domain(rcpt), "1h") >= 2 => block 450 4.7.1 "Too much for this domain"'
  - noise: 'repeated_messages >= 2 => block 421 4.7.1 "The same message again"'
`)
	try := func(user, from, to, subject string) string {
		c := r.dial(t, "submission")
		login(t, c, user)
		_, err := send(c, from, []string{to}, message(from, to, subject))
		if err == nil {
			return "250"
		}
		code, _, text := smtpCode(err)
		return fmt.Sprint(code, " ", strings.TrimSpace(idInReply.ReplaceAllString(text, "")))
	}
	// Seed 003: sender1, sender2, ... from one SMTP user.
	for i, want := range []string{"250", "250", "550 Too many sender addresses"} {
		if got := try("ops", fmt.Sprintf("sender%d@acme.test", i+1), fmt.Sprintf("u%d@d%d.test", i, i), "hello"); got != want {
			t.Errorf("sender %d: %s, want %s", i+1, got, want)
		}
	}
	// Per recipient domain, counted only once accepted.
	for i, want := range []string{"250", "250", "450 Too much for this domain"} {
		if got := try("billing", "app@acme.test", fmt.Sprintf("p%d@shop.test", i), fmt.Sprint("order ", i)); got != want {
			t.Errorf("to shop.test #%d: %s, want %s", i+1, got, want)
		}
	}
	// Cron noise that differs only in its timestamps.
	for i, want := range []string{"250", "250", "421 The same message again"} {
		if got := try("billing", "cron@acme.test", fmt.Sprintf("admin@ops%d.test", i), fmt.Sprintf("Cron <root@server1> backup at 12:0%d", i)); got != want {
			t.Errorf("cron #%d: %s, want %s", i+1, got, want)
		}
	}
}

func TestBounceRate(t *testing.T) {
	k := newSink(t)
	k.rcptAnswer = func(to string) error {
		if strings.HasPrefix(to, "gone@") {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		}
		return nil
	}
	r := startRelay(t, testConfig(t, k), `rules:
  - bounces: 'bounce_rate > 0.5 and unknown_recipients >= 1 => block 550 5.7.1 "Bounce rate too high"'
`)
	c := r.dial(t, "submission")
	login(t, c, "ops")
	if _, err := send(c, "x@acme.test", []string{"gone@example.org"}, message("x@acme.test", "gone@example.org", "one")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := c.Mail("x@acme.test", nil)
		if code, _, text := smtpCode(err); code == 550 && strings.HasPrefix(text, "Bounce rate too high") {
			break
		}
		c.Reset()
		if time.Now().After(deadline) {
			t.Fatalf("bounce rate never refused: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDecisionRecords: every decision can be looked up by the id its
// reply carried.
func TestDecisionRecords(t *testing.T) {
	k := newSink(t)
	cfg := testConfig(t, k)
	r := startRelay(t, cfg, testRules)
	c := r.dial(t, "submission")
	login(t, c, "billing")
	_, err := send(c, "app@acme.test", []string{"bob@example.org"}, message("news@acme-mail.test", "bob@example.org", "acl"))
	_, _, text := smtpCode(err)
	id := strings.Trim(idInReply.FindString(text), "[]")
	if id == "" {
		t.Fatalf("no id in %q", text)
	}
	a, ok := DialAdmin(AdminSocket(cfg))
	if !ok {
		t.Fatal("no admin socket")
	}
	d, err := a.Decision(context.Background(), id)
	if err != nil || d == nil {
		t.Fatalf("decision %s: %v", id, err)
	}
	if d.Action != "reject" || d.Code != 550 || d.Rule != "acl" || d.User != "billing" || d.From != "app@acme.test" || len(d.Fired) == 0 {
		t.Errorf("decision %+v", d)
	}
	if d, _ := a.Decision(context.Background(), "01NOSUCHIDNOSUCHIDNOSUCHID"); d != nil {
		t.Errorf("unknown id: %+v", d)
	}
}

// TestStoreDownAtEndOfData stops redis-server between RCPT and the end of
// DATA, when the message is to be counted (issue 7, item 13): under
// on_failure tempfail the client gets 451 4.3.0 and nothing is delivered,
// never a 250 for a message the limits did not see; under allow it is
// accepted and delivered.
func TestStoreDownAtEndOfData(t *testing.T) {
	for _, policy := range []string{"tempfail", "allow"} {
		t.Run(policy, func(t *testing.T) {
			rs := storetest.StartRedis(t)
			k := newSink(t)
			cfg := testConfig(t, k)
			cfg.Store = StoreConfig{Kind: "redis", OnFailure: policy, Redis: RedisConfig{Addrs: []string{rs.Addr}, Timeout: Duration(200 * time.Millisecond)}}
			cfg.Delivery.RescanInterval = Duration(5 * time.Millisecond)
			r := startRelay(t, cfg, limitRules)
			c := r.dial(t, "submission")
			login(t, c, "ops")
			if err := c.Mail("x@acme.test", nil); err != nil {
				t.Fatal(err)
			}
			if err := c.Rcpt("bob@example.org", nil); err != nil {
				t.Fatal(err)
			}
			rs.Stop()
			w, err := c.Data()
			if err != nil {
				t.Fatal(err)
			}
			w.Write([]byte(message("x@acme.test", "bob@example.org", "uncounted")))
			_, err = w.CloseWithResponse()
			if policy == "allow" {
				if err != nil {
					t.Fatalf("under allow: %v", err)
				}
				k.wait(t, 1, 10*time.Second)
				return
			}
			code, enh, text := smtpCode(err)
			if code != 451 || enh != "4.3.0" || !idInReply.MatchString(text) {
				t.Fatalf("end of DATA with redis down: %v, want 451 4.3.0 with the id", err)
			}
			time.Sleep(500 * time.Millisecond)
			if n := len(k.messages()); n != 0 {
				t.Errorf("the refused message was delivered %d times", n)
			}
			if left, _ := r.srv.spool.List(queue.AreaQueue); len(left) != 0 {
				t.Errorf("the refused message is still spooled: %v", left)
			}
		})
	}
}
