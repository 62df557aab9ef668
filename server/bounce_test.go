package server

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/sluicemail/sluice/queue"
)

// advert is a message with 200 advertising header fields and a body that a
// bounce must never carry.
func advert(from, to string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: offer\r\nMessage-ID: <offer@victim.example>\r\n", from, to)
	for i := range 200 {
		fmt.Fprintf(&b, "X-Ad-%d: buy now\r\n", i)
	}
	b.WriteString("\r\nADVERTISING-BODY-MARKER\r\n")
	return b.String()
}

// waitQueueEmpty waits until the relay has finished with every message.
func waitQueueEmpty(t *testing.T, r *relay) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if left, _ := r.srv.spool.List(queue.AreaQueue); len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the queue did not empty")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestInboundBounces (issue 7, item 9): a client that may not relay, forging
// a foreign sender, to a local recipient the next hop refuses, gets no
// bounce sent to the forged address (backscatter) unless
// delivery.inbound_bounces is headers, and then the headers only; mail from
// an authenticated user or a relay_networks client bounces as before.
func TestInboundBounces(t *testing.T) {
	cases := []struct {
		name      string
		policy    string
		mode      string
		user      string
		relayNets []string
		wantDSN   bool
	}{
		{name: "inbound-default", mode: "plain"},
		{name: "inbound-headers", policy: "headers", mode: "plain", wantDSN: true},
		{name: "outbound-authenticated", mode: "submission", user: "ops", wantDSN: true},
		{name: "outbound-relay-networks", mode: "plain", relayNets: []string{"127.0.0.1/32"}, wantDSN: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			k := newSink(t)
			k.rcptAnswer = func(to string) error {
				if to == "nobody@local.test" {
					return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
				}
				return nil
			}
			cfg := testConfig(t, k)
			cfg.Delivery.InboundBounces = tc.policy
			if tc.relayNets != nil {
				cfg.RelayNetworks = tc.relayNets
			}
			r := startRelay(t, cfg, "rules:\n  - caps: 'subject_caps => +1'\n")
			c := r.dial(t, tc.mode)
			if tc.user != "" {
				login(t, c, tc.user)
			}
			text, err := send(c, "victim@victim.example", []string{"nobody@local.test"}, advert("victim@victim.example", "nobody@local.test"))
			if err != nil {
				t.Fatal(err)
			}
			id := strings.TrimPrefix(text, "Ok: queued as ")
			waitQueueEmpty(t, r)
			if !tc.wantDSN {
				time.Sleep(200 * time.Millisecond)
				if msgs := k.messages(); len(msgs) != 0 {
					t.Fatalf("%d messages reached the next hop, want none; first to %v:\n%s", len(msgs), msgs[0].Rcpts, msgs[0].Data)
				}
				d, err := LookupDecision(context.Background(), r.srv.store, id)
				if err != nil || d == nil {
					t.Fatalf("decision %s: %v", id, err)
				}
				if !strings.Contains(d.Delivery, "not bounced") || !strings.Contains(d.Delivery, "<nobody@local.test>: 550 5.1.1") {
					t.Errorf("decision record's delivery: %q", d.Delivery)
				}
				got, err := r.srv.store.Count(context.Background(), time.Now(), 0, []string{"count:undeliverable_inbound:127.0.0.1"}, []time.Duration{time.Hour})
				if err != nil || got[0][0] != 1 {
					t.Errorf("undeliverable_inbound count: %v %v, want 1", got, err)
				}
				return
			}
			msgs := k.wait(t, 1, 10*time.Second)
			if len(msgs) != 1 || msgs[0].From != "" || strings.Join(msgs[0].Rcpts, ",") != "victim@victim.example" {
				t.Fatalf("want one DSN to the sender, got %d messages: %+v", len(msgs), msgs)
			}
			dsn := string(msgs[0].Data)
			for _, want := range []string{"Content-Type: multipart/report; report-type=delivery-status", "Content-Type: text/rfc822-headers",
				"Final-Recipient: rfc822; nobody@local.test", "Status: 5.1.1", "X-Ad-199: buy now", "Queue id: " + id} {
				if !strings.Contains(dsn, want) {
					t.Errorf("DSN lacks %q", want)
				}
			}
			if strings.Contains(dsn, "ADVERTISING-BODY-MARKER") {
				t.Errorf("the DSN carries the message body:\n%s", dsn)
			}
		})
	}
}

// TestDSNNeverCarriesTheBody: whatever the message's line endings or a
// header section that ends on a line that is not a field, the DSN holds the
// header section only.
func TestDSNNeverCarriesTheBody(t *testing.T) {
	k := newSink(t)
	r := startRelay(t, testConfig(t, k), "rules:\n  - caps: 'subject_caps => +1'\n")
	msgs := []string{
		"Subject: crlf\r\nFrom: a@b.example\r\n\r\nBODY-MARKER\r\n",
		"Subject: lf\nFrom: a@b.example\n\nBODY-MARKER\n",
		"Subject: no blank line\r\nFrom: a@b.example\r\nBODY-MARKER and no colon\r\n",
		"BODY-MARKER, no header at all\r\n",
	}
	for i, m := range msgs {
		env := &queue.Envelope{ID: fmt.Sprintf("T%025d", i), From: "a@b.example", Received: time.Now(),
			Rcpts: []queue.RcptState{{Addr: "x@y.example", Status: queue.StatusFailed, Code: 550, Enhanced: "5.1.1", Detail: "no such user"}}}
		if err := r.srv.delivery.SendDSN(env, []byte(m), "failed"); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range k.wait(t, len(msgs), 10*time.Second) {
		if strings.Contains(string(m.Data), "BODY-MARKER") {
			t.Errorf("the DSN carries the body:\n%s", m.Data)
		}
	}
}

// TestOldEnvelopesStayBounceable: an envelope spooled before the inbound
// field existed reads as outbound, whose failures are bounced as before.
func TestOldEnvelopesStayBounceable(t *testing.T) {
	cfg := &Config{Delivery: Delivery{InboundBounces: "none"}}
	var old queue.Envelope
	if err := json.Unmarshal([]byte(`{"id":"01M84JD3JDY6XMB2VN618W3HFC","from":"a@b.example","rcpts":[{"addr":"c@d.example","status":"failed"}]}`), &old); err != nil {
		t.Fatal(err)
	}
	if !queue.Bounceable(&old, cfg.Delivery.InboundBounces) {
		t.Error("an old envelope is not bounced")
	}
	old.Inbound = true
	if queue.Bounceable(&old, cfg.Delivery.InboundBounces) {
		t.Error("inbound mail bounced under inbound_bounces: none")
	}
}

// TestVerifyRecipients: with delivery.verify_recipients, an inbound
// message's local recipient the next hop refuses is refused at RCPT, and
// the answer is cached; authenticated clients are not probed for.
func TestVerifyRecipients(t *testing.T) {
	k := newSink(t)
	var mu sync.Mutex
	probes := map[string]int{}
	k.rcptAnswer = func(to string) error {
		mu.Lock()
		probes[to]++
		mu.Unlock()
		if to == "nobody@local.test" {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		}
		return nil
	}
	cfg := testConfig(t, k)
	cfg.Delivery.VerifyRecipients = true
	r := startRelay(t, cfg, "rules:\n  - caps: 'subject_caps => +1'\n")
	c := r.dial(t, "plain")
	for range 2 {
		_, err := send(c, "victim@victim.example", []string{"nobody@local.test", "bob@local.test"}, advert("victim@victim.example", "bob@local.test"))
		if code, enh, text := smtpCode(err); code != 550 || enh != "5.1.1" || !idInReply.MatchString(text) || strings.Contains(text, "no such user") {
			t.Fatalf("RCPT of an unknown local recipient: %v, want 550 5.1.1 with the id and without the next hop's text", err)
		}
	}
	msgs := k.wait(t, 2, 10*time.Second)
	for _, m := range msgs {
		if strings.Join(m.Rcpts, ",") != "bob@local.test" {
			t.Errorf("delivered to %v", m.Rcpts)
		}
	}
	mu.Lock()
	if probes["nobody@local.test"] != 1 {
		t.Errorf("nobody@local.test asked %d times, want once (cached)", probes["nobody@local.test"])
	}
	mu.Unlock()
	a := r.dial(t, "submission")
	login(t, a, "ops")
	if err := a.Mail("x@acme.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Rcpt("nobody@local.test", nil); err != nil {
		t.Errorf("an authenticated client's recipient was verified: %v", err)
	}
}
