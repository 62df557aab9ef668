package engine

import (
	"context"
	"testing"
	"time"

	"github.com/sluicemail/sluice/builtins"
)

// A list action fires with the refusal it escalates, takes its phase from
// its key fact, and is reported in the verdict for the relay to apply.
func TestListAction(t *testing.T) {
	rs := mustLoad(t, "r.yaml", `rules:
  - escalate: 'hourly_sent > 1000 => list blocked_users smtp_user for 7d "sustained abuse"'
  - throttle: 'hourly_sent > 300 => block 421 4.7.1 "Rate limit"'
  - mark-rcpt: 'subject == "x" => list seen rcpt'
`)
	if r, _ := rs.Rule("mark-rcpt"); r.Phase != builtins.Data || !r.PerRecipient {
		t.Errorf("mark-rcpt: phase %s, per recipient %v", r.Phase, r.PerRecipient)
	}
	in := &builtins.Input{ClientIP: "192.0.2.1", SMTPUser: "app", Authenticated: true, Overrides: map[string]any{"hourly_sent": 1500}}
	v := rs.Replay(context.Background(), in, Envelope{Helo: "h.test", MailFrom: "a@b.test", Rcpts: []string{"c@d.test"}, Raw: []byte("Subject: x\r\n\r\n")})
	if v.Action != Tempfail || v.Code != 421 || len(v.Lists) != 1 {
		t.Fatalf("verdict %+v", v)
	}
	if l := v.Lists[0]; l.List != "blocked_users" || l.Key != "app" || l.TTL != 7*24*time.Hour || l.Reason != "sustained abuse" || l.Rule != "escalate" {
		t.Errorf("list add %+v", l)
	}
	in = &builtins.Input{ClientIP: "192.0.2.1", Overrides: map[string]any{"hourly_sent": 5}}
	v = rs.Replay(context.Background(), in, Envelope{Helo: "h.test", MailFrom: "a@b.test", Rcpts: []string{"c@d.test", "e@f.test"}, Raw: []byte("Subject: x\r\n\r\n")})
	if len(v.Lists) != 2 || v.Lists[0].Key != "c@d.test" || v.Lists[1].Key != "e@f.test" || v.Lists[0].Reason != "rule mark-rcpt" {
		t.Errorf("per-recipient list adds %+v", v.Lists)
	}
}
