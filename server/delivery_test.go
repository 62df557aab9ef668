package server

import (
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"github.com/sluicemail/sluice/internal/dnstest"
	"github.com/sluicemail/sluice/queue"
)

// TestDeliveryToMX delivers directly: MX preference with a dead first
// host, the A record of a domain without MX, and a null MX that bounces.
func TestDeliveryToMX(t *testing.T) {
	k := newSink(t)
	_, port, _ := net.SplitHostPort(k.addr)
	res := dnstest.Serve(t, map[string][]dns.RR{
		"mx.test.":      {dnstest.RR(t, "mx.test. 60 IN MX 10 dead.mx.test."), dnstest.RR(t, "mx.test. 60 IN MX 20 live.mx.test.")},
		"dead.mx.test.": {dnstest.RR(t, "dead.mx.test. 60 IN A 127.0.0.2")}, // nothing listens there
		"live.mx.test.": {dnstest.RR(t, "live.mx.test. 60 IN A 127.0.0.1")},
		"nomx.test.":    {dnstest.RR(t, "nomx.test. 60 IN A 127.0.0.1")},
		"nullmx.test.":  {dnstest.RR(t, "nullmx.test. 60 IN MX 0 .")},
		"acme.test.":    {dnstest.RR(t, "acme.test. 60 IN MX 10 live.mx.test.")},
	}, nil)
	cfg := testConfig(t, k)
	cfg.Delivery = Delivery{Mode: "mx", Retry: []Duration{Duration(100 * time.Millisecond)}}
	var p int
	for _, c := range port {
		p = p*10 + int(c-'0')
	}
	cfg.Delivery.Port = p
	if err := cfg.finish(); err != nil {
		t.Fatal(err)
	}
	r := startRelayWith(t, cfg, testRules, Options{MXResolver: res})
	c := r.dial(t, "submission")
	login(t, c, "ops")
	if _, err := send(c, "sender@acme.test", []string{"a@mx.test", "b@nomx.test", "c@nullmx.test"}, message("sender@acme.test", "a@mx.test", "direct")); err != nil {
		t.Fatal(err)
	}
	msgs := k.wait(t, 3, 10*time.Second) // a@mx.test, b@nomx.test, and the bounce for c@nullmx.test
	var rcpts []string
	var bounce string
	for _, m := range msgs {
		if m.From == "" {
			bounce = string(m.Data)
			continue
		}
		rcpts = append(rcpts, m.Rcpts...)
	}
	if strings.Join(rcpts, ",") != "a@mx.test,b@nomx.test" && strings.Join(rcpts, ",") != "b@nomx.test,a@mx.test" {
		t.Errorf("delivered to %v", rcpts)
	}
	if !strings.Contains(bounce, "Final-Recipient: rfc822; c@nullmx.test") || !strings.Contains(bounce, "Status: 5.1.10") {
		t.Errorf("null MX bounce:\n%s", bounce)
	}
}

// TestDelayNoticeThenExpiry: a recipient that keeps answering 451 gets the
// sender one delay notice, then, at max_age, a bounce.
func TestDelayNoticeThenExpiry(t *testing.T) {
	k := newSink(t)
	k.rcptAnswer = func(to string) error {
		if to == "slow@example.org" {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "mailbox busy"}
		}
		return nil
	}
	cfg := testConfig(t, k)
	cfg.Delivery.DelayNotice = Duration(300 * time.Millisecond)
	cfg.Delivery.MaxAge = Duration(1500 * time.Millisecond)
	r := startRelay(t, cfg, testRules)
	c := r.dial(t, "submission")
	login(t, c, "ops")
	if _, err := send(c, "sender@acme.test", []string{"slow@example.org"}, message("sender@acme.test", "slow@example.org", "slow one")); err != nil {
		t.Fatal(err)
	}
	msgs := k.wait(t, 2, 10*time.Second)
	var actions []string
	for _, m := range msgs {
		if m.From != "" || m.Rcpts[0] != "sender@acme.test" {
			t.Errorf("unexpected message from <%s> to %v", m.From, m.Rcpts)
			continue
		}
		d := string(m.Data)
		switch {
		case strings.Contains(d, "Action: delayed") && strings.Contains(d, "Will-Retry-Until: "):
			actions = append(actions, "delayed")
		case strings.Contains(d, "Action: failed") && strings.Contains(d, "Status: 4.4.7") && strings.Contains(d, "mailbox busy"):
			actions = append(actions, "failed")
		default:
			t.Errorf("unexpected DSN:\n%s", d)
		}
	}
	if strings.Join(actions, ",") != "delayed,failed" {
		t.Errorf("DSNs: %v, want one delay notice then one bounce", actions)
	}
}

func TestSmarthostSTARTTLSAndAuth(t *testing.T) {
	k := newSink(t)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := selfSigned("sink.test", cert, key); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	k.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{pair}}
	k.srv.AllowInsecureAuth = false // AUTH only after STARTTLS
	k.authUser, k.authPass = "relay", "s3cret"
	cfg := testConfig(t, k)
	cfg.Delivery.Smarthost = Smarthost{Addr: k.addr, TLS: "starttls", Username: "relay", Password: "s3cret", InsecureSkipVerify: true}
	r := startRelay(t, cfg, testRules)
	c := r.dial(t, "submission")
	login(t, c, "ops")
	if _, err := send(c, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", "via smarthost")); err != nil {
		t.Fatal(err)
	}
	k.wait(t, 1, 10*time.Second)
	if k.authed[0] != "relay" {
		t.Errorf("smarthost AUTH: %v", k.authed)
	}
}

// TestEveryMessageDeliveredOnce: with the queue rescanned all the time and
// a sink that keeps up, every message the relay answered 250 for reaches
// the next hop exactly once (issue 7, item 12: the rescan used to queue a
// message whose spooling had not returned yet, and the session queued it
// again after).
func TestEveryMessageDeliveredOnce(t *testing.T) {
	k := newSink(t)
	cfg := testConfig(t, k)
	cfg.RelayNetworks = []string{"127.0.0.1/32"}
	cfg.Delivery.RescanInterval = Duration(time.Millisecond)
	r := startRelay(t, cfg, "rules:\n  - caps: 'subject_caps => +1'\n")
	const clients, each = 4, 100
	ids := make(chan string, clients*each)
	errs := make(chan error, clients)
	for n := range clients {
		go func() {
			c := r.dialOK("plain")
			if c == nil {
				errs <- fmt.Errorf("client %d: no connection", n)
				return
			}
			defer c.Close()
			for i := range each {
				subj := fmt.Sprintf("once %d-%d", n, i)
				text, err := send(c, "app@example.com", []string{"bob@example.org"}, message("app@example.com", "bob@example.org", subj))
				if err != nil {
					errs <- fmt.Errorf("%s: %v", subj, err)
					return
				}
				ids <- strings.TrimPrefix(text, "Ok: queued as ")
			}
			errs <- nil
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(ids)
	accepted := map[string]bool{}
	for id := range ids {
		accepted[id] = true
	}
	k.wait(t, len(accepted), 30*time.Second)
	// Let a second delivery of any message, the bug, reach the sink too.
	for deadline := time.Now().Add(10 * time.Second); ; {
		left, _ := r.srv.spool.List(queue.AreaQueue)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages still queued", len(left))
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	got := map[string]int{}
	for _, m := range k.messages() {
		id := ourID.FindSubmatch(m.Data)
		if id == nil {
			t.Fatalf("no queue id in\n%s", m.Data)
		}
		got[string(id[1])]++
	}
	dups := 0
	for id, n := range got {
		if n != 1 {
			dups++
			t.Errorf("%s delivered %d times", id, n)
		}
	}
	for id := range accepted {
		if got[id] == 0 {
			t.Errorf("%s accepted, never delivered", id)
		}
	}
	t.Logf("%d accepted, %d delivered, %d delivered more than once", len(accepted), len(k.messages()), dups)
}
