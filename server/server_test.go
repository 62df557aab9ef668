package server

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/sluicemail/sluice/queue"
)

var idInReply = regexp.MustCompile(`\[[0-9A-Z]{26}\]$`)

func TestAuthOnlyUnderTLS(t *testing.T) {
	k := newSink(t)
	r := startRelay(t, testConfig(t, k), testRules)

	// Plain connection: STARTTLS offered, AUTH not.
	c := r.dial(t, "plain")
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Error("STARTTLS not offered on the plain listener")
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("AUTH offered without TLS")
	}
	if err := c.Auth(sasl.NewPlainClient("", "billing", testPassword)); err == nil {
		t.Error("AUTH succeeded without TLS")
	}
	for _, ext := range []string{"SIZE", "PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"} {
		if ok, _ := c.Extension(ext); !ok {
			t.Errorf("%s not advertised", ext)
		}
	}

	// Submission under STARTTLS: AUTH PLAIN and LOGIN, then relay.
	for _, mech := range []string{"PLAIN", "LOGIN"} {
		c := r.dial(t, "submission")
		if _, ok := c.TLSConnectionState(); !ok {
			t.Fatal("no TLS after STARTTLS")
		}
		var a sasl.Client = sasl.NewPlainClient("", "billing", testPassword)
		if mech == "LOGIN" {
			a = sasl.NewLoginClient("billing", testPassword)
		}
		if err := c.Auth(a); err != nil {
			t.Fatalf("AUTH %s: %v", mech, err)
		}
		reply, err := send(c, "app@acme.test", []string{"bob@example.org"}, message("app@acme.test", "bob@example.org", "invoice "+mech))
		if err != nil {
			t.Fatalf("send after AUTH %s: %v", mech, err)
		}
		if !strings.HasPrefix(reply, "Ok: queued as ") {
			t.Errorf("reply %q", reply)
		}
	}
	msgs := k.wait(t, 2, 10*time.Second)
	for _, m := range msgs {
		s := string(m.Data)
		if !strings.Contains(s, "with ESMTPSA id ") || !strings.Contains(s, "Authentication-Results: relay.test; auth=pass smtp.auth=billing") {
			t.Errorf("trace headers missing:\n%s", s)
		}
	}

	// Implicit TLS.
	c = r.dial(t, "tls")
	login(t, c, "ops")
	if _, err := send(c, "x@acme-mail.test", []string{"carol@example.org"}, message("x@acme-mail.test", "carol@example.org", "over tls")); err != nil {
		t.Fatal(err)
	}
	k.wait(t, 3, 10*time.Second)

	// A wrong password is refused.
	c = r.dial(t, "submission")
	if err := c.Auth(sasl.NewPlainClient("", "billing", "wrong")); err == nil {
		t.Error("wrong password accepted")
	}
	// Submission without AUTH may not send.
	c = r.dial(t, "submission")
	err := c.Mail("app@acme.test", nil)
	if code, _, _ := smtpCode(err); code != 530 {
		t.Errorf("MAIL without AUTH on submission: %v", err)
	}
}

func TestNoOpenRelay(t *testing.T) {
	k := newSink(t)
	r := startRelay(t, testConfig(t, k), testRules) // relay_networks empty: loopback is a stranger
	c := r.dial(t, "plain")
	if err := c.Mail("spammer@example.net", nil); err != nil {
		t.Fatal(err)
	}
	err := c.Rcpt("victim@example.org", nil)
	code, enh, text := smtpCode(err)
	if code != 554 || enh != "5.7.1" || !strings.HasPrefix(text, "Relay access denied") || !idInReply.MatchString(text) {
		t.Fatalf("relay to a foreign domain: %d %s %q", code, enh, text)
	}
	// Mail for a local domain is taken from anyone.
	if err := c.Rcpt("postmaster@local.test", nil); err != nil {
		t.Fatalf("local domain refused: %v", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(w, message("spammer@example.net", "postmaster@local.test", "hello local"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	msgs := k.wait(t, 1, 10*time.Second)
	if len(msgs[0].Rcpts) != 1 || msgs[0].Rcpts[0] != "postmaster@local.test" {
		t.Errorf("sink got %v", msgs[0].Rcpts)
	}
}

func TestACLFromDomain(t *testing.T) {
	k := newSink(t)
	r := startRelay(t, testConfig(t, k), testRules)
	// billing is "assigned" acme.test only: acme-mail.test (its account's)
	// is refused after end of data, as in seed 001.
	c := r.dial(t, "submission")
	login(t, c, "billing")
	_, err := send(c, "app@acme.test", []string{"bob@example.org"}, message("news@acme-mail.test", "bob@example.org", "acl"))
	code, enh, text := smtpCode(err)
	if code != 550 || enh != "5.7.1" || !strings.HasPrefix(text, "[ACL] Blocked [") || !idInReply.MatchString(text) {
		t.Fatalf("From outside the assigned domains: %d %s %q", code, enh, text)
	}
	// Subdomains of an allowed domain pass; ops ("account") may use both.
	if _, err := send(c, "app@acme.test", []string{"bob@example.org"}, message("a@mail.acme.test", "bob@example.org", "sub")); err != nil {
		t.Fatal(err)
	}
	c = r.dial(t, "submission")
	login(t, c, "ops")
	if _, err := send(c, "x@acme-mail.test", []string{"bob@example.org"}, message("x@acme-mail.test", "bob@example.org", "ops")); err != nil {
		t.Fatal(err)
	}
	k.wait(t, 2, 10*time.Second)
}

func TestDisabledAccount(t *testing.T) {
	k := newSink(t)
	r := startRelay(t, testConfig(t, k), testRules)
	c := r.dial(t, "submission")
	login(t, c, "frozen-app")
	err := c.Mail("a@frozen.test", nil)
	code, enh, text := smtpCode(err)
	if code != 550 || enh != "5.7.1" || !strings.HasPrefix(text, "This account cannot currently send emails.") {
		t.Fatalf("disabled account: %d %s %q", code, enh, text)
	}
}

func TestHourlyLimitAtMail(t *testing.T) {
	k := newSink(t)
	r := startRelay(t, testConfig(t, k), testRules)
	c := r.dial(t, "submission")
	login(t, c, "ops")
	for i := range 3 {
		if _, err := send(c, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", fmt.Sprint("n", i))); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	err := c.Mail("x@acme.test", nil)
	code, enh, text := smtpCode(err)
	if code != 421 || enh != "4.7.1" || !strings.HasPrefix(text, "Rate limit: 3 messages per hour [") {
		t.Fatalf("4th message: %d %s %q", code, enh, text)
	}
	// A refused message did not count: another user is not affected.
	c2 := r.dial(t, "submission")
	login(t, c2, "billing")
	if _, err := send(c2, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", "other user")); err != nil {
		t.Fatal(err)
	}
}

func TestPerRecipientRefusal(t *testing.T) {
	k := newSink(t)
	r := startRelay(t, testConfig(t, k), testRules)
	c := r.dial(t, "submission")
	login(t, c, "ops")
	_, err := send(c, "x@acme.test", []string{"bob@example.org", "noreply@example.org", "carol@example.org"},
		message("x@acme.test", "bob@example.org", "three rcpts"))
	code, enh, text := smtpCode(err)
	if code != 550 || enh != "5.1.1" || !idInReply.MatchString(text) {
		t.Fatalf("noreply@: %d %s %q", code, enh, text)
	}
	m := k.wait(t, 1, 10*time.Second)[0]
	if strings.Join(m.Rcpts, ",") != "bob@example.org,carol@example.org" {
		t.Errorf("delivered to %v", m.Rcpts)
	}
}

func TestThresholdRejectAndTag(t *testing.T) {
	k := newSink(t)
	r := startRelay(t, testConfig(t, k), testRules)
	c := r.dial(t, "submission")
	login(t, c, "ops")
	_, err := send(c, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", "CHEAP VIAGRA FOR EVERYONE"))
	code, enh, text := smtpCode(err)
	if code != 554 || enh != "5.7.1" || !strings.HasPrefix(text, "Spam message rejected") || !idInReply.MatchString(text) {
		t.Fatalf("score 15: %d %s %q", code, enh, text)
	}
	if _, err := send(c, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", "[tag] newsletter")); err != nil {
		t.Fatal(err)
	}
	m := k.wait(t, 1, 10*time.Second)[0]
	if !strings.Contains(string(m.Data), "X-Spam-Flag: YES\r\nX-Spam-Score: 5\r\n") {
		t.Errorf("tagged message lacks X-Spam headers:\n%s", m.Data)
	}
}

func TestHoldThenRelease(t *testing.T) {
	k := newSink(t)
	r := startRelay(t, testConfig(t, k), testRules)
	c := r.dial(t, "submission")
	login(t, c, "ops")
	reply, err := send(c, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", "[review] first mail"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(reply, "held for review [") {
		t.Errorf("hold reply %q", reply)
	}
	ids, _ := r.srv.spool.List(queue.AreaHold)
	if len(ids) != 1 {
		t.Fatalf("hold area: %v", ids)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(k.messages()); n != 0 {
		t.Fatalf("a held message was delivered")
	}
	if err := r.srv.spool.Release(ids[0], time.Now()); err != nil {
		t.Fatal(err)
	}
	m := k.wait(t, 1, 10*time.Second)[0] // picked up by the queue rescan
	if !strings.Contains(string(m.Data), "[review] first mail") {
		t.Errorf("released message:\n%s", m.Data)
	}
	if ids, _ := r.srv.spool.List(queue.AreaHold); len(ids) != 0 {
		t.Errorf("still held: %v", ids)
	}
}

func TestRetryAfter451(t *testing.T) {
	k := newSink(t)
	k.dataAnswer = func(n int) error {
		if n == 1 {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again"}
		}
		return nil
	}
	r := startRelay(t, testConfig(t, k), testRules)
	c := r.dial(t, "submission")
	login(t, c, "ops")
	reply, err := send(c, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", "retried"))
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimPrefix(reply, "Ok: queued as ")
	k.wait(t, 1, 10*time.Second)
	k.mu.Lock()
	tries := k.datas
	k.mu.Unlock()
	if tries != 2 {
		t.Errorf("sink saw %d DATA attempts, want 2", tries)
	}
	waitGone(t, r.srv.spool, queue.AreaQueue, id)
}

func waitGone(t *testing.T, sp *queue.Spool, area, id string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := sp.Envelope(area, id); err == queue.ErrNotFound {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("%s still in %s", id, area)
}

func TestBounceOnPermanentFailure(t *testing.T) {
	k := newSink(t)
	k.rcptAnswer = func(to string) error {
		if strings.HasPrefix(to, "gone@") {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		}
		return nil
	}
	r := startRelay(t, testConfig(t, k), testRules)
	c := r.dial(t, "submission")
	login(t, c, "ops")
	if _, err := send(c, "sender@acme.test", []string{"gone@example.org", "bob@example.org"}, message("sender@acme.test", "bob@example.org", "half bounces")); err != nil {
		t.Fatal(err)
	}
	msgs := k.wait(t, 2, 10*time.Second)
	var dsn *sinkMsg
	for i := range msgs {
		if msgs[i].From == "" {
			dsn = &msgs[i]
		}
	}
	if dsn == nil {
		t.Fatalf("no bounce from the null sender: %+v", msgs)
	}
	d := string(dsn.Data)
	for _, want := range []string{"multipart/report; report-type=delivery-status", "Final-Recipient: rfc822; gone@example.org",
		"Action: failed", "Status: 5.1.1", "Diagnostic-Code: smtp; 550 RCPT TO: no such user", "Subject: half bounces"} {
		if !strings.Contains(d, want) {
			t.Errorf("bounce lacks %q:\n%s", want, d)
		}
	}
	if dsn.Rcpts[0] != "sender@acme.test" || strings.Contains(d, "Final-Recipient: rfc822; bob@") {
		t.Errorf("bounce to %v:\n%s", dsn.Rcpts, d)
	}
}

func TestBounceNeverToNullSender(t *testing.T) {
	k := newSink(t)
	k.rcptAnswer = func(string) error {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	}
	cfg := testConfig(t, k)
	r := startRelay(t, cfg, testRules)
	c := r.dial(t, "submission")
	login(t, c, "ops")
	reply, err := send(c, "", []string{"gone@example.org"}, message("MAILER-DAEMON@acme.test", "gone@example.org", "a bounce"))
	if err != nil {
		t.Fatal(err)
	}
	waitGone(t, r.srv.spool, queue.AreaQueue, strings.TrimPrefix(reply, "Ok: queued as "))
	time.Sleep(300 * time.Millisecond)
	if ids, _ := r.srv.spool.List(queue.AreaQueue); len(ids) != 0 {
		t.Errorf("a bounce of a bounce was queued: %v", ids)
	}
}

func TestConnectionLimitPerIP(t *testing.T) {
	k := newSink(t)
	cfg := testConfig(t, k)
	cfg.Limits.MaxConnectionsPerIP = 2
	r := startRelay(t, cfg, testRules)
	var open []net.Conn
	for range 2 {
		conn, err := net.Dial("tcp", r.addrs["plain"])
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, conn)
		line, _ := bufio.NewReader(conn).ReadString('\n')
		if !strings.HasPrefix(line, "220 ") {
			t.Fatalf("greeting %q", line)
		}
	}
	conn, err := net.Dial("tcp", r.addrs["plain"])
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(conn).ReadString('\n')
	if !strings.HasPrefix(line, "421 4.7.0 Too many connections from your address") {
		t.Errorf("third connection: %q", line)
	}
	conn.Close()
	open[0].Close()
	time.Sleep(100 * time.Millisecond)
	conn, err = net.Dial("tcp", r.addrs["plain"])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	line, _ = bufio.NewReader(conn).ReadString('\n')
	if !strings.HasPrefix(line, "220 ") {
		t.Errorf("after a slot freed: %q", line)
	}
	open[1].Close()
}

func TestAuthThrottle(t *testing.T) {
	k := newSink(t)
	cfg := testConfig(t, k)
	cfg.Limits.AuthSlowAfter, cfg.Limits.AuthRefuseAfter = 100, 3
	r := startRelay(t, cfg, testRules)
	c := r.dial(t, "submission")
	for range 3 {
		c.Auth(sasl.NewPlainClient("", "ops", "guess"))
	}
	err := c.Auth(sasl.NewPlainClient("", "ops", testPassword))
	if code, enh, _ := smtpCode(err); code != 454 || enh != "4.7.0" {
		t.Fatalf("after 3 failures even the right password must wait: %v", err)
	}
}

func TestConnectPhaseRefusal(t *testing.T) {
	k := newSink(t)
	cfg := testConfig(t, k)
	r := startRelay(t, cfg, `rules:
  - banned: 'client_ip == "127.0.0.1" => block 554 5.7.1 "Your address is blocked"'
`)
	conn, err := net.Dial("tcp", r.addrs["plain"])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	line, _ := bufio.NewReader(conn).ReadString('\n')
	if !strings.HasPrefix(line, "554 5.7.1 Your address is blocked [") {
		t.Errorf("greeting %q", line)
	}
}

func TestLocalDelivery(t *testing.T) {
	cfg := &Config{Listen: []Listener{{Addr: "127.0.0.1:0"}}, StateDir: t.TempDir()}
	cfg.RulesDir = filepath.Join(cfg.StateDir, "rules.d")
	r := startRelay(t, cfg, "rules: []\n")
	c := r.dial(t, "plain") // loopback relays without AUTH in the default
	reply, err := send(c, "app@example.com", []string{"Bob@Example.org"}, message("app@example.com", "bob@example.org", "local"))
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimPrefix(reply, "Ok: queued as ")
	path := filepath.Join(cfg.StateDir, "mail", "bob@example.org", id+".eml")
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			if !strings.HasPrefix(string(b), "Return-Path: <app@example.com>\r\nDelivered-To: Bob@Example.org\r\nReceived: from client.test") {
				t.Errorf("delivered file:\n%s", b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not delivered to %s", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSlowClients(t *testing.T) {
	k := newSink(t)
	cfg := testConfig(t, k)
	cfg.Limits.CommandTimeout = Duration(300 * time.Millisecond)
	cfg.Limits.DataTimeout = Duration(500 * time.Millisecond)
	r := startRelay(t, cfg, testRules)
	// Idle after the greeting: dropped with 421.
	conn, err := net.Dial("tcp", r.addrs["plain"])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	br.ReadString('\n')
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	line, _ := br.ReadString('\n')
	if !strings.HasPrefix(line, "421 4.4.2") {
		t.Errorf("idle client: %q", line)
	}
	// Stalled in DATA: dropped, and the half message is not accepted.
	conn2, err := net.Dial("tcp", r.addrs["plain"])
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	br2 := bufio.NewReader(conn2)
	br2.ReadString('\n')
	for _, cmd := range []string{"EHLO slow.test", "MAIL FROM:<a@b.test>", "RCPT TO:<x@local.test>", "DATA"} {
		fmt.Fprintf(conn2, "%s\r\n", cmd)
		for {
			l, err := br2.ReadString('\n')
			if err != nil {
				t.Fatalf("%s: %v", cmd, err)
			}
			if len(l) < 4 || l[3] != '-' {
				break
			}
		}
		time.Sleep(100 * time.Millisecond) // slow, but within the command timeout
	}
	fmt.Fprintf(conn2, "Subject: half\r\n\r\nthe rest never comes")
	conn2.SetReadDeadline(time.Now().Add(3 * time.Second))
	line, _ = br2.ReadString('\n')
	if strings.HasPrefix(line, "250") {
		t.Errorf("a message cut off in DATA was accepted: %q", line)
	}
	time.Sleep(200 * time.Millisecond)
	if ids, _ := r.srv.spool.List(queue.AreaQueue); len(ids) != 0 || len(k.messages()) != 0 {
		t.Errorf("spooled %v, delivered %d", ids, len(k.messages()))
	}
}

func TestConfigReload(t *testing.T) {
	k := newSink(t)
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "rules.d"), 0o755)
	os.WriteFile(filepath.Join(dir, "rules.d", "r.yaml"), []byte(testRules), 0o644)
	write := func(users string) string {
		p := filepath.Join(dir, "sluice.yaml")
		os.WriteFile(p, []byte(fmt.Sprintf("listen: [{addr: '127.0.0.1:0', mode: submission}]\nstate_dir: %s\nrules_dir: %s\nrelay_networks: []\ndelivery: {mode: smarthost, smarthost: {addr: '%s', tls: none}}\naccounts:\n  - name: a\n    domains: [acme.test]\n    users:\n%s",
			dir, filepath.Join(dir, "rules.d"), k.addr, users)), 0o644)
		return p
	}
	p := write(fmt.Sprintf("      - {name: first, password_hash: '%s'}\n", testHash))
	cfg, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, p, Options{Log: quietLog(t), Resolver: noPTR{}})
	if err != nil {
		t.Fatal(err)
	}
	ls, err := srv.Start(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(t.Context())
	r := &relay{srv: srv, addrs: map[string]string{"submission": ls[0].Addr.String()}}
	c := r.dial(t, "submission")
	if c.Auth(plainAuth("second")) == nil {
		t.Fatal("unknown user authenticated")
	}
	write(fmt.Sprintf("      - {name: first, password_hash: '%s'}\n      - {name: second, password_hash: '%s'}\n", testHash, testHash))
	if err := srv.ReloadConfig(); err != nil {
		t.Fatal(err)
	}
	c = r.dial(t, "submission")
	login(t, c, "second")
	// A broken config is refused and the live one stays.
	write("      - {name: third, password_hash: plain-text}\n")
	if err := srv.ReloadConfig(); err == nil || !strings.Contains(err.Error(), "bcrypt") {
		t.Errorf("broken config: %v", err)
	}
	c = r.dial(t, "submission")
	login(t, c, "second")
}
