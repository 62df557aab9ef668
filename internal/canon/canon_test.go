package canon

import (
	"bytes"
	"strings"
	"testing"
)

func TestLineEnds(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"a\r\nb\r\n", "a\r\nb\r\n"},
		{"a\nb\n", "a\r\nb\r\n"},
		{"a\rb\r\n", "a\r\nb\r\n"},
		{"Subject: x\r\n\r\nline\rMAIL FROM:<x@y>\r\n", "Subject: x\r\n\r\nline\r\nMAIL FROM:<x@y>\r\n"},
		{"a\r\r\nb", "a\r\n\r\nb"},
		{"a\n\rb\r", "a\r\n\r\nb\r\n"},
		{"\r", "\r\n"},
		{"x\r\n.\r\r\n", "x\r\n.\r\n\r\n"},
	} {
		got, ch := Message([]byte(c.in), "relay.test", nil)
		if string(got) != c.want {
			t.Errorf("%q -> %q, want %q", c.in, got, c.want)
		}
		if string(got) != c.in && !ch.Changed() {
			t.Errorf("%q: changed without saying so", c.in)
		}
		if bytes.Contains(bytes.ReplaceAll(got, []byte("\r\n"), nil), []byte("\r")) || bytes.Contains(bytes.ReplaceAll(got, []byte("\r\n"), nil), []byte("\n")) {
			t.Errorf("%q: a bare CR or LF is left in %q", c.in, got)
		}
	}
}

func TestCleanMessageIsReturnedAsIs(t *testing.T) {
	msg := []byte("From: a@b.test\r\nAuthentication-Results: mx.other.test; spf=pass\r\nSubject: hi\r\n\r\nbody\r\n")
	got, ch := Message(msg, "relay.test", nil)
	if &got[0] != &msg[0] || ch.Changed() {
		t.Errorf("a clean message was rewritten: %q %+v", got, ch)
	}
}

func TestLongLinesSplit(t *testing.T) {
	words := strings.Repeat("word ", 1000)                                        // 5,000 octets with spaces
	url := "<a href=\"https://click.example/" + strings.Repeat("x", 3000) + "\">" // no space for 3 KB
	subject := "Subject: " + strings.Repeat("y", 2500)
	folded := "X-Long: " + strings.Repeat("tok ", 600)
	msg := subject + "\r\n" + folded + "\r\n\r\n" + words + "\r\n" + url + "\r\n"
	got, ch := Message([]byte(msg), "relay.test", nil)
	if ch.Split == 0 {
		t.Fatal("nothing split")
	}
	lines := strings.Split(strings.TrimSuffix(string(got), "\r\n"), "\r\n")
	for i, l := range lines {
		if len(l) > MaxLine {
			t.Errorf("line %d has %d octets", i, len(l))
		}
	}
	// Unfolding the header gives the field back (the hard fold inserted
	// one space per fold); the body's text is unchanged but for line ends.
	head, body, _ := strings.Cut(string(got), "\r\n\r\n")
	if !strings.Contains(strings.ReplaceAll(head, "\r\n", ""), strings.TrimSpace(folded)) {
		t.Error("folded header lost its words")
	}
	if strings.ReplaceAll(body, "\r\n", "") != strings.ReplaceAll(words+url, "\r\n", "")+"" {
		t.Error("body content changed beyond line breaks")
	}
	// A body line with spaces breaks after a space, so words stay whole.
	for _, l := range strings.Split(body, "\r\n")[:4] {
		if l != "" && !strings.HasSuffix(l, " ") && strings.HasPrefix(l, "word") {
			t.Errorf("word split: %q", l[len(l)-10:])
		}
	}
	// Header continuations start with white space.
	for _, l := range strings.Split(head, "\r\n")[1:] {
		if !strings.HasPrefix(l, "X-Long:") && l[0] != ' ' && l[0] != '\t' {
			t.Errorf("header continuation without white space: %q", l[:20])
		}
	}
}

func TestClientHeadersThatClaimToBeOurs(t *testing.T) {
	msg := "Authentication-Results: relay.test;\r\n\tspf=pass smtp.mailfrom=x\r\n" +
		"Authentication-Results: RELAY.TEST 1; dkim=pass\r\n" +
		"Authentication-Results: mx.upstream.test; dkim=pass\r\n" +
		"X-Spam-Flag: NO\r\nx-spam-score: -100\r\nX-Spam-Status: No,\r\n  score=-100\r\n" +
		"X-Spammy: keep\r\nSubject: hi\r\n\r\nX-Spam-Flag: in the body stays\r\n"
	got, ch := Message([]byte(msg), "relay.test", nil)
	want := "Authentication-Results: mx.upstream.test; dkim=pass\r\nX-Spammy: keep\r\nSubject: hi\r\n\r\nX-Spam-Flag: in the body stays\r\n"
	if string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if len(ch.Removed) != 5 {
		t.Errorf("removed %v", ch.Removed)
	}
}

// FuzzMessage: the output never holds a bare CR or LF nor a line over
// MaxLine, and is stable (a second pass changes nothing).
func FuzzMessage(f *testing.F) {
	f.Add([]byte("a\rb\nc\r\n"), uint16(0))
	f.Add([]byte("Subject: x\r\n\r\nbody"), uint16(3000))
	f.Add([]byte("X-Spam: 1\r\n folded\r\n\r\n"), uint16(1200))
	f.Fuzz(func(t *testing.T, in []byte, pad uint16) {
		in = append(in, bytes.Repeat([]byte{'z'}, int(pad%5000))...)
		out, _ := Message(in, "relay.test", nil)
		stripped := bytes.ReplaceAll(out, []byte("\r\n"), nil)
		if bytes.IndexByte(stripped, '\r') >= 0 || bytes.IndexByte(stripped, '\n') >= 0 {
			t.Fatalf("bare CR/LF left: %q", out)
		}
		for _, l := range bytes.Split(out, []byte("\r\n")) {
			if len(l) > MaxLine {
				t.Fatalf("line of %d", len(l))
			}
		}
		again, ch := Message(out, "relay.test", nil)
		if !bytes.Equal(again, out) {
			t.Fatalf("not stable (%+v): %q -> %q", ch, out, again)
		}
	})
}

func benchMessage(b *testing.B, msg []byte) {
	b.SetBytes(int64(len(msg)))
	var dst []byte
	for b.Loop() {
		dst, _ = Message(msg, "relay.test", dst)
	}
}

// BenchmarkClean is the common case: one scan, no copy.
func BenchmarkClean(b *testing.B) {
	benchMessage(b, []byte("Subject: hi\r\n\r\n"+strings.Repeat("a line of text that is quite ordinary\r\n", 2500)))
}

// BenchmarkBareLF1MB rewrites a 1 MB message with LF line ends.
func BenchmarkBareLF1MB(b *testing.B) {
	benchMessage(b, []byte("Subject: hi\n\n"+strings.Repeat("a line of text that is quite ordinary\n", 27000)))
}

// BenchmarkLongLine1MB splits one 1 MB line.
func BenchmarkLongLine1MB(b *testing.B) {
	benchMessage(b, []byte("Subject: hi\r\n\r\n"+strings.Repeat("x", 1<<20)+"\r\n"))
}
