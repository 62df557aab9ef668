package builtins

import (
	"strings"
	"testing"
)

// BenchmarkParsePlain10KB parses what most relayed mail is, and what
// smtp-source sends in bench/postfix.sh: one text/plain part of 10 KB.
func BenchmarkParsePlain10KB(b *testing.B) { benchParsePlain(b, 10240) }

// BenchmarkParsePlain100KB is the largest size of bench/postfix.sh's
// matrix: one text/plain part of 100 KB.
func BenchmarkParsePlain100KB(b *testing.B) { benchParsePlain(b, 102400) }

func benchParsePlain(b *testing.B, size int) {
	var raw strings.Builder
	raw.WriteString("From: app@bench.test\r\nTo: c@example.org\r\nSubject: Your order\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <b@bench.test>\r\n\r\n")
	for raw.Len() < size {
		raw.WriteString("Thank you for your order. Your items will be shipped within two business days.\r\n")
	}
	msg := []byte(raw.String())
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if p := Parse(msg, Limits{}); len(p.Body.Text) < size*9/10 {
			b.Fatalf("text of %d bytes", len(p.Body.Text))
		}
	}
}
