package ruletest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicemail/sluice/builtins"
	"github.com/sluicemail/sluice/engine"
)

type got struct{ name, raw string }

func collect(t *testing.T, path string) ([]got, []error) {
	t.Helper()
	var out []got
	var errs []error
	for f, err := range Messages(path) {
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, got{f.Name(), string(f.Raw)})
	}
	return out, errs
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

const msgA = "From: a@example.com\nSubject: a\n\nbody a\n"

func TestMessagesMbox(t *testing.T) {
	dir := t.TempDir()
	one := filepath.Join(dir, "one.mbox")
	writeFile(t, one, "From a@example.com Mon Jan  1 00:00:00 2002\n"+msgA)
	three := filepath.Join(dir, "three.mbox")
	writeFile(t, three, "From a@example.com Mon Jan  1 00:00:00 2002\n"+msgA+"\n"+
		"From b@example.com Mon Jan  1 00:00:00 2002\nSubject: b\n\n>From the start\n>>From quoted\nFrom inside, no blank line before\n\n"+
		"From c@example.com Mon Jan  1 00:00:00 2002\r\nSubject: c\r\n\r\nbody c\r\n\r\n")
	gs, errs := collect(t, one)
	if len(errs) > 0 || len(gs) != 1 || gs[0].name != one || gs[0].raw != msgA {
		t.Fatalf("one-message mbox: %q %v", gs, errs)
	}
	gs, errs = collect(t, three)
	want := []got{
		{three + ":1", msgA},
		{three + ":2", "Subject: b\n\nFrom the start\n>From quoted\nFrom inside, no blank line before\n"},
		{three + ":3", "Subject: c\r\n\r\nbody c\r\n"},
	}
	if len(errs) > 0 || len(gs) != len(want) {
		t.Fatalf("three-message mbox: %q %v", gs, errs)
	}
	for i := range want {
		if gs[i] != want[i] {
			t.Errorf("message %d: got %q, want %q", i+1, gs[i], want[i])
		}
	}
}

func TestMessagesDirMaildirSymlink(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "mail")
	writeFile(t, filepath.Join(root, "a.eml"), msgA)
	writeFile(t, filepath.Join(root, ".DS_Store"), "junk")
	writeFile(t, filepath.Join(root, ".git", "config"), "junk")
	md := filepath.Join(root, "maildir")
	writeFile(t, filepath.Join(md, "cur", "1:2,S"), "Subject: cur\n\n")
	writeFile(t, filepath.Join(md, "new", "2"), "Subject: new\n\n")
	writeFile(t, filepath.Join(md, "tmp", "3"), "Subject: partial")
	writeFile(t, filepath.Join(md, "dovecot-uidlist"), "3 V1 N4\n")
	writeFile(t, filepath.Join(md, ".Sent", "cur", "4"), "Subject: sent\n\n")
	os.MkdirAll(filepath.Join(md, ".Sent", "new"), 0o755)
	outside := filepath.Join(dir, "outside.eml")
	writeFile(t, outside, "Subject: linked\n\n")
	if err := os.Symlink(outside, filepath.Join(root, "z-link.eml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(root, filepath.Join(root, "zz-loop")); err != nil {
		t.Fatal(err)
	}
	gs, errs := collect(t, root)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	var names []string
	for _, g := range gs {
		names = append(names, strings.TrimPrefix(g.name, root+"/"))
	}
	want := "a.eml maildir/.Sent/cur/4 maildir/cur/1:2,S maildir/new/2 z-link.eml"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("found %s\nwant  %s", got, want)
	}
	// A plain file given directly is read, hidden or not.
	if gs, _ := collect(t, filepath.Join(root, ".DS_Store")); len(gs) != 1 || gs[0].raw != "junk" {
		t.Errorf("a hidden file given as a path: %q", gs)
	}
}

func TestMessagesUnreadable(t *testing.T) {
	dir := t.TempDir()
	if _, errs := collect(t, filepath.Join(dir, "missing")); len(errs) != 1 {
		t.Errorf("missing path: %v", errs)
	}
	if err := os.Symlink(filepath.Join(dir, "nowhere"), filepath.Join(dir, "dangling")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "ok.eml"), msgA)
	gs, errs := collect(t, dir)
	if len(gs) != 1 || len(errs) != 1 {
		t.Errorf("directory with a dangling link: %q %v", gs, errs)
	}
}

func TestReceiptTime(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	raw := "Received: from a by b; Tue, 1 Oct 2002 10:00:00 +0100 (BST)\n" +
		"Received: from c by a; Tue, 1 Oct 2002 09:00:00 +0100\n\nbody\n"
	if got, want := ReceiptTime([]byte(raw), now), time.Date(2002, 10, 1, 9, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if got := ReceiptTime([]byte("Received: from a by b\nSubject: x\n\n"), now); !got.Equal(now) {
		t.Errorf("no dated Received: got %v, want now", got)
	}
}

// TestJudgeReceiptTime: scan, explain and test measure the Date against the
// newest Received field, else now (SPEC 7), unless the context gives
// received_at.
func TestJudgeReceiptTime(t *testing.T) {
	rs, err := engine.Load([]engine.File{{Name: "r.yaml", Src: []byte(`rules:
  - stale: 'date_skew_hours < -48 => +1'
  - future: 'date_skew_hours > 48 => +1'
`)}}, builtins.NewRegistry(), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	msg := func(date time.Time, received ...time.Time) []byte {
		var b strings.Builder
		for _, r := range received {
			b.WriteString("Received: from a.example by b.example; " + r.Format(time.RFC1123Z) + "\n")
		}
		b.WriteString("From: a@example.com\nDate: " + date.Format(time.RFC1123Z) + "\nSubject: x\n\nbody\n")
		return []byte(b.String())
	}
	base := time.Date(2002, 9, 5, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		name  string
		ctx   Context
		raw   []byte
		rules string
	}{
		{"three days before the newest Received", Context{}, msg(base, base.Add(72*time.Hour), base.Add(time.Hour)), "stale"},
		{"an hour before the newest Received", Context{}, msg(base, base.Add(time.Hour), base.Add(-72*time.Hour)), ""},
		{"three days after the newest Received", Context{}, msg(base.Add(72*time.Hour), base), "future"},
		{"no Received: three days before now", Context{}, msg(now.Add(-72 * time.Hour)), "stale"},
		{"no Received: an hour before now", Context{}, msg(now.Add(-time.Hour)), ""},
		{"received_at wins over Received", Context{ReceivedAt: "2002-09-05T11:00:00Z"}, msg(base, base.Add(72*time.Hour)), ""},
		{"received_at as a mail date", Context{ReceivedAt: "Sun, 8 Sep 2002 10:00:00 +0000"}, msg(base, base), "stale"},
	}
	for _, tc := range cases {
		v, err := tc.ctx.Judge(context.Background(), rs, tc.raw)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var fired []string
		for _, h := range v.Hits {
			fired = append(fired, h.Rule)
		}
		if got := strings.Join(fired, ","); got != tc.rules {
			t.Errorf("%s: fired %q, want %q", tc.name, got, tc.rules)
		}
	}
	bad := Context{ReceivedAt: "yesterday"}
	if _, err := bad.Judge(context.Background(), rs, msg(base)); err == nil || !strings.Contains(err.Error(), "received_at") {
		t.Errorf("received_at: yesterday: got %v, want an error naming the key", err)
	}
}
