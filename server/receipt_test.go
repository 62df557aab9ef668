package server

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestReceiptTimeIsTheRelaysClock: in the relay, the facts about a
// message's Date measure against the relay's clock (Options.Now) when DATA
// ends, never against the Received fields the client wrote.
func TestReceiptTimeIsTheRelaysClock(t *testing.T) {
	k := newSink(t)
	// A month ahead of the wall clock: only Options.Now can explain a skew
	// measured from it.
	shift := 30 * 24 * time.Hour
	now := func() time.Time { return time.Now().Add(shift) }
	r := startRelayWith(t, testConfig(t, k), `rules:
  - stale: 'date_skew_hours < -48 => block 550 5.7.1 "stale date"'
`, Options{Now: now, Log: quietLog(t)})
	msg := func(subject string, date, received time.Time) string {
		return "Received: from mx.example.net by mx.local.test; " + received.Format(time.RFC1123Z) + "\r\n" +
			"From: a@example.net\r\nTo: postmaster@local.test\r\nSubject: " + subject + "\r\n" +
			"Date: " + date.Format(time.RFC1123Z) + "\r\nMessage-ID: <" + subject + "@example.net>\r\n\r\nHello.\r\n"
	}
	at := now()
	cases := []struct {
		name           string
		date, received time.Time
		refused        bool
	}{
		// Three days before the relay's clock, an hour before its Received.
		{"old", at.Add(-72 * time.Hour), at.Add(-71 * time.Hour), true},
		// An hour before the relay's clock, three days before its Received.
		{"fresh", at.Add(-time.Hour), at.Add(71 * time.Hour), false},
	}
	for _, tc := range cases {
		c := r.dial(t, "plain")
		_, err := send(c, "a@example.net", []string{"postmaster@local.test"}, msg(tc.name, tc.date, tc.received))
		code, _, text := smtpCode(err)
		if refused := code == 550 && strings.HasPrefix(text, "stale date"); refused != tc.refused {
			t.Errorf("%s: refused %v (%s), want %v", tc.name, refused, fmt.Sprint(err), tc.refused)
		}
	}
	if got := k.wait(t, 1, 10*time.Second); len(got) != 1 {
		t.Errorf("sink got %d messages, want the fresh one", len(got))
	}
}
