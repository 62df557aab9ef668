package engine

import (
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/sluicemail/sluice/builtins"
)

// benchMessage builds a realistic multipart/mixed message of about size
// bytes: a multipart/alternative text and HTML body with links, and a
// base64 attachment filling the rest.
func benchMessage(size int) []byte {
	var b strings.Builder
	b.WriteString("Received: from app1.example.com (app1.example.com [192.0.2.10])\r\n\tby relay.example.net with ESMTPSA id 4XyZ; Sun, 22 Nov 2026 10:00:00 +0000\r\n")
	b.WriteString("From: \"Example Billing\" <billing@example.com>\r\nTo: Bob <bob@example.org>\r\n")
	b.WriteString("Subject: =?UTF-8?Q?Your_invoice_for_November_=E2=80=94_#48213?=\r\n")
	b.WriteString("Date: Sun, 22 Nov 2026 10:00:00 +0000\r\nMessage-ID: <48213.1763805600@example.com>\r\nMIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: multipart/mixed; boundary=\"mixed-1\"\r\n\r\n--mixed-1\r\nContent-Type: multipart/alternative; boundary=\"alt-1\"\r\n\r\n")
	b.WriteString("--alt-1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
	for i := range 40 {
		fmt.Fprintf(&b, "Line %d of your invoice: item %d =E2=80=94 see https://example.com/invoice/48213#item%d for details.\r\n", i, i, i)
	}
	b.WriteString("\r\n--alt-1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><head><style>p{color:#333}</style></head><body>\r\n")
	for i := range 40 {
		fmt.Fprintf(&b, "<p>Item %d: <a href=\"https://example.com/invoice/48213#item%d\">view item %d</a> &mdash; <b>paid</b></p>\r\n", i, i, i)
	}
	b.WriteString("</body></html>\r\n--alt-1--\r\n--mixed-1\r\nContent-Type: application/pdf; name=\"invoice.pdf\"\r\nContent-Disposition: attachment; filename=\"invoice.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	rest := size - b.Len() - 40
	if rest > 0 {
		raw := make([]byte, rest*3/4)
		r := rand.New(rand.NewPCG(1, 2))
		for i := range raw {
			raw[i] = byte(r.UintN(256))
		}
		enc := base64.StdEncoding.EncodeToString(raw)
		for len(enc) > 76 {
			b.WriteString(enc[:76] + "\r\n")
			enc = enc[76:]
		}
		b.WriteString(enc + "\r\n")
	}
	b.WriteString("--mixed-1--\r\n")
	return []byte(b.String())
}

func benchInput() *builtins.Input {
	return &builtins.Input{ClientIP: "192.0.2.10", RDNS: "app1.example.com", RDNSKnown: true, TLS: true, SMTPUser: "billing-app", Authenticated: true}
}

var benchEnvelope = Envelope{Helo: "app1.example.com", MailFrom: "billing@example.com", Rcpts: []string{"bob@example.org"}}

func loadDefaultRules(b *testing.B) *RuleSet {
	rs, err := LoadDir("../rules.d", builtins.NewRegistry(), Options{})
	if err != nil {
		b.Fatalf("default rules: %v", err)
	}
	return rs
}

// BenchmarkDefaultRules is the evaluation of the shipped rules on a message
// already parsed, phase by phase as the relay runs it.
func BenchmarkDefaultRules(b *testing.B) {
	rs := loadDefaultRules(b)
	raw := benchMessage(20 << 10)
	parsed := builtins.Parse(raw, builtins.Limits{})
	env := benchEnvelope
	env.Raw = raw
	in := benchInput()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		in.Rcpts = in.Rcpts[:0]
		in.Parsed = parsed
		v := rs.Replay(context.Background(), in, env)
		if v.Action == "" {
			b.Fatal("no verdict")
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verdicts/s")
	b.ReportMetric(float64(len(rs.Rules())), "rules")
}

// generatedRules writes n rules of the shapes operators write: keyword and
// header tests, list lookups, per-recipient checks, limits, link predicates.
// Few of them fire, as in real rule sets.
func generatedRules(n int) string {
	var b strings.Builder
	b.WriteString("thresholds: {reject: 13, hold: 8, tag: 5}\nlists:\n  gen_ips: [198.51.100.0/24, 203.0.113.5]\nrules:\n")
	for i := range n {
		switch i % 8 {
		case 0:
			fmt.Fprintf(&b, "  - g%d: 'subject contains \"keyword-%d\" => +0.5'\n", i, i)
		case 1:
			fmt.Fprintf(&b, "  - g%d: 'from_domain == \"d%d.example\" => +1'\n", i, i)
		case 2:
			fmt.Fprintf(&b, "  - g%d: 'header(\"X-Campaign\") == \"c%d\" => +2'\n", i, i)
		case 3:
			fmt.Fprintf(&b, "  - g%d: 'rcpt_domain == \"r%d.example\" => block 550 5.1.2 \"no\"'\n", i, i)
		case 4:
			fmt.Fprintf(&b, "  - g%d: 'hourly_sent > %d and smtp_user == \"u%d\" => block 421'\n", i, 1000+i, i)
		case 5:
			fmt.Fprintf(&b, "  - g%d: 'in_list(\"gen_ips\", client_ip) and size > %d => +1'\n", i, i)
		case 6:
			fmt.Fprintf(&b, "  - g%d: 'mail_from_domain == \"m%d.example\" or helo == \"h%d\" => +1'\n", i, i, i)
		case 7:
			fmt.Fprintf(&b, "  - g%d: 'text contains \"phrase %d\" and subject_caps => +3'\n", i, i)
		}
	}
	return b.String()
}

// BenchmarkGeneratedRules shows how evaluation grows with the number of
// rules; ns/rule should stay flat.
func BenchmarkGeneratedRules(b *testing.B) {
	raw := benchMessage(20 << 10)
	parsed := builtins.Parse(raw, builtins.Limits{})
	for _, n := range []int{10, 100, 1000, 10000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			rs, err := Load([]File{{Name: "gen.yaml", Src: []byte(generatedRules(n))}}, builtins.NewRegistry(), Options{})
			if err != nil {
				b.Fatal(err)
			}
			env := benchEnvelope
			env.Raw = raw
			in := benchInput()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				in.Rcpts = in.Rcpts[:0]
				in.Parsed = parsed
				rs.Replay(context.Background(), in, env)
			}
			perMsg := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			b.ReportMetric(perMsg/float64(n), "ns/rule")
			b.ReportMetric(perMsg/1e6, "ms/msg")
		})
	}
}

// BenchmarkParseAndEvaluate20KB is the whole per-message cost: MIME parsing
// of a 20 KB multipart message plus evaluation of the default rules.
func BenchmarkParseAndEvaluate20KB(b *testing.B) {
	rs := loadDefaultRules(b)
	raw := benchMessage(20 << 10)
	env := benchEnvelope
	env.Raw = raw
	in := benchInput()
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		in.Rcpts = in.Rcpts[:0]
		rs.Replay(context.Background(), in, env)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkLoad is the cost of a reload of 1,000 rules.
func BenchmarkLoad1000(b *testing.B) {
	src := []byte(generatedRules(1000))
	reg := builtins.NewRegistry()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Load([]File{{Name: "gen.yaml", Src: src}}, reg, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFoldedSubject is what the relay does with a message whose
// Subject is folded over many short lines (a 1 MB header): parse it once
// and run the shipped rules, which read the subject, the From, the text and
// the fingerprint. Time per byte must not grow with the size.
func BenchmarkFoldedSubject(b *testing.B) {
	rs := loadDefaultRules(b)
	for _, size := range []int{100 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dKB", size>>10), func(b *testing.B) {
			var m strings.Builder
			m.WriteString("From: billing@example.com\r\nTo: bob@example.org\r\nSubject: start")
			for m.Len() < size {
				m.WriteString("\r\n ab")
			}
			m.WriteString("\r\n\r\nbody https://example.com/x\r\n")
			env := benchEnvelope
			env.Raw = []byte(m.String())
			in := benchInput()
			b.SetBytes(int64(len(env.Raw)))
			b.ReportAllocs()
			for b.Loop() {
				in.Rcpts, in.Parsed = in.Rcpts[:0], nil
				if v := rs.Replay(context.Background(), in, env); v.Action == "" {
					b.Fatal("no verdict")
				}
			}
		})
	}
}
