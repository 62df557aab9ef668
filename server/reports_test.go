package server

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestReportsComeBack: a DSN and a feedback report sent back to the relay
// put the addresses on bounces and unsubscribes and charge the original
// sender.
func TestReportsComeBack(t *testing.T) {
	k := newSink(t)
	r := startRelay(t, testConfig(t, k), "rules: []\n")
	c := r.dial(t, "submission")
	login(t, c, "ops")
	if _, err := send(c, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", "newsletter 1")); err != nil {
		t.Fatal(err)
	}
	orig := string(k.wait(t, 1, 10*time.Second)[0].Data)
	headers := orig[:strings.Index(orig, "\r\n\r\n")+2]

	dsn := "From: MAILER-DAEMON@mx.example.org\r\nTo: postmaster@local.test\r\nSubject: Undelivered Mail Returned to Sender\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n" +
		"--b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n" +
		"Final-Recipient: rfc822; bob@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n" +
		"--b1\r\nContent-Type: text/rfc822-headers\r\n\r\n" + headers + "\r\n--b1--\r\n"
	plain := r.dial(t, "plain")
	if _, err := send(plain, "", []string{"postmaster@local.test"}, dsn); err != nil {
		t.Fatal(err)
	}
	arf := "From: fbl@isp.example\r\nTo: abuse@local.test\r\nSubject: FW: newsletter 1\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report; boundary=\"b2\"\r\n\r\n" +
		"--b2\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n" +
		"--b2\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: ISP-FBL/1.0\r\nVersion: 1\r\nOriginal-Rcpt-To: carol@example.org\r\nReported-Domain: acme.test\r\n\r\n" +
		"--b2\r\nContent-Type: message/rfc822\r\n\r\n" + orig + "\r\n--b2--\r\n"
	if _, err := send(plain, "fbl@isp.example", []string{"abuse@local.test"}, arf); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now()
	e, _ := r.srv.store.ListGet(ctx, "bounces", "bob@example.org", now)
	if e == nil || !strings.Contains(e.Reason, "5.1.1") || !strings.HasPrefix(e.Source, "DSN from mx.example.org") {
		t.Errorf("bounces entry %+v", e)
	}
	e, _ = r.srv.store.ListGet(ctx, "unsubscribes:acme", "carol@example.org", now) // ops is of account acme
	if e == nil || e.Reason != "complaint (abuse)" || !strings.HasPrefix(e.Source, "feedback report from acme.test") {
		t.Errorf("unsubscribes entry %+v", e)
	}
	got, err := r.srv.store.Count(ctx, now, 0, []string{"delivered:user:ops", "bounced:user:ops", "unknown_rcpt:user:ops", "complaints:user:ops"}, []time.Duration{24 * time.Hour})
	if err != nil || fmt.Sprint(got) != "[[1] [1] [1] [1]]" {
		t.Errorf("charged to ops: %v %v, want one each", got, err)
	}
}

func TestParseReportIgnoresOtherMail(t *testing.T) {
	for _, raw := range []string{
		"Subject: hi\r\n\r\nplain mail\r\n",
		"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\nhi\r\n--x--\r\n",
		"Content-Type: multipart/report; report-type=disposition-notification; boundary=x\r\n\r\n--x--\r\n",
		"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\nContent-Type: message/delivery-status\r\n\r\ngarbage without blocks",
	} {
		if r := parseReport([]byte(raw)); r != nil && (len(r.failed) > 0 || len(r.rcpts) > 0) {
			t.Errorf("%q read as a report: %+v", raw, r)
		}
	}
}

func FuzzParseReport(f *testing.F) {
	f.Add([]byte("Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\nFinal-Recipient: rfc822; a@b\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--b--\r\n"))
	f.Add([]byte("Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n\r\n--b\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nOriginal-Rcpt-To: a@b\r\n\r\n--b--\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		parseReport(raw) // must not panic or hang
	})
}
