package builtins

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
	"time"

	gomessage "github.com/emersion/go-message"
)

// foldedSubject is a message whose Subject is folded over many lines, size
// bytes in all: the shape of an attack on a quadratic unfolder.
func foldedSubject(size int, word string) (raw []byte, want string) {
	var b, w strings.Builder
	b.WriteString("From: a@example.com\r\nTo: b@example.org\r\nSubject: start")
	w.WriteString("start")
	for b.Len() < size {
		b.WriteString("\r\n " + word)
		w.WriteString(" " + word)
	}
	b.WriteString("\r\nX-After: yes\r\n\r\nbody\r\n")
	return []byte(b.String()), w.String()
}

// TestFoldedHeaderMegabyte: a Subject folded over 240,000 lines unfolds to
// the right value, and the fields after it are still read.
func TestFoldedHeaderMegabyte(t *testing.T) {
	raw, want := foldedSubject(1<<20, "ab")
	start := time.Now()
	h, err := ParseHeader(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got := h.Subject(); got != want {
		t.Errorf("Subject: %d bytes, want %d (prefix %q)", len(got), len(want), got[:min(len(got), 40)])
	}
	if h.Get("X-After") != "yes" || string(raw[h.BodyOffset():]) != "body\r\n" {
		t.Errorf("X-After %q, body %q", h.Get("X-After"), raw[h.BodyOffset():])
	}
	if !SubjectCaps(strings.ToUpper(h.Subject())) {
		t.Error("subject_caps of the upper-cased subject")
	}
	t.Logf("1 MB folded header parsed in %v", time.Since(start))
}

// TestFoldedHeaderLinearMemory: unfolding allocates a bounded multiple of
// the header's size, not a copy of the value per continuation line (which
// cost 680 MB for a 100 KB header, 67 GB for 1 MB).
func TestFoldedHeaderLinearMemory(t *testing.T) {
	for _, word := range []string{"ab", "=?UTF-8?Q?=C3=A9?="} {
		raw, _ := foldedSubject(100<<10, word)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		h, _ := ParseHeader(raw)
		_ = h.Subject()
		runtime.ReadMemStats(&after)
		if n := after.TotalAlloc - before.TotalAlloc; n > 32*uint64(len(raw)) {
			t.Errorf("%q: parsing a %d-byte header allocated %d bytes", word, len(raw), n)
		}
	}
}

// TestFoldedEncodedWordsMegabyte: encoded words on each folded line decode
// and join (RFC 2047 6.2: white space between adjacent encoded words is
// dropped).
func TestFoldedEncodedWordsMegabyte(t *testing.T) {
	raw, _ := foldedSubject(1<<20, "=?UTF-8?Q?=C3=A9?=")
	h, _ := ParseHeader(raw)
	got := h.Subject()
	if n := strings.Count(got, "é"); n < 40000 || !strings.HasPrefix(got, "start éé") || strings.Contains(got, "é é") {
		t.Errorf("%d é decoded; prefix %q", n, got[:min(len(got), 40)])
	}
}

// TestEncodedWordsAdversarial: a megabyte of encoded words that do not
// decode, with one "?=" at the very end, is returned as it came.
func TestEncodedWordsAdversarial(t *testing.T) {
	v := strings.Repeat("=?a?Z?b", (1<<20)/7) + "?="
	if got := decodeWords(v); got != v {
		t.Errorf("changed: %d bytes, want %d", len(got), len(v))
	}
	v = strings.Repeat("=?utf-8?q?", (1<<20)/10) + "x?="
	if got := decodeWords(v); !strings.HasPrefix(got, "=?utf-8?q?") {
		t.Errorf("prefix %q", got[:min(len(got), 40)])
	}
}

func benchFolded(b *testing.B, size int, word string, parse func([]byte)) {
	raw, _ := foldedSubject(size, word)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		parse(raw)
	}
}

func parseAll(raw []byte) {
	p := Parse(raw, Limits{})
	SubjectCaps(p.Header.Subject())
	Fingerprint(p.Header.Subject(), p.Body.Text)
}

// BenchmarkFoldedSubject measures header parsing, decoding and the body
// walk of a message whose Subject is folded over many short lines; the
// time per byte must not grow with the size.
func BenchmarkFoldedSubject(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"100KB", 100 << 10}, {"1MB", 1 << 20}} {
		b.Run("plain/"+size.name, func(b *testing.B) { benchFolded(b, size.n, "ab", parseAll) })
		b.Run("encoded/"+size.name, func(b *testing.B) { benchFolded(b, size.n, "=?UTF-8?Q?=C3=A9?=", parseAll) })
		b.Run("badwords/"+size.name, func(b *testing.B) {
			v := strings.Repeat("=?a?Z?b", size.n/7) + "?="
			b.SetBytes(int64(len(v)))
			for b.Loop() {
				decodeWords(v)
			}
		})
		// The relay also reads bounces and complaints with go-message
		// (server/reports.go parseReport).
		b.Run("gomessage/"+size.name, func(b *testing.B) {
			benchFolded(b, size.n, "ab", func(raw []byte) {
				e, _ := gomessage.Read(bytes.NewReader(raw))
				if e != nil {
					e.Header.ContentType()
				}
			})
		})
	}
}
