package mailauth

import (
	"context"
	"strings"
	"testing"

	"github.com/sluicemail/sluice/internal/dnstest"
)

// dkimBenchMsg is a message of about 10 KB: a usual header and a body of
// quoted-printable-like text lines.
func dkimBenchMsg() string {
	var b strings.Builder
	b.WriteString("Received: from mx.example.net (mx.example.net [192.0.2.1]) by relay.example.com with ESMTPS id 4XyZ; Mon, 06 Jan 2025 10:00:00 +0000\r\n")
	b.WriteString(dkimTestMsg[:strings.Index(dkimTestMsg, "\r\n\r\n")+2])
	b.WriteString("List-Unsubscribe: <https://example.com/u/1>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n")
	line := "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor inc.\r\n"
	for b.Len() < 10*1024 {
		b.WriteString(line)
	}
	return b.String()
}

// BenchmarkDkimVerify: one signature per message, the key from memory (the
// cost of verifying, not of DNS) and from a DNS server on 127.0.0.1.
func BenchmarkDkimVerify(b *testing.B) {
	msg := dkimBenchMsg()
	for _, c := range []struct{ name, file string }{{"rsa2048", "rsa2048.pem"}, {"ed25519", "ed25519.pem"}} {
		key := dkimTestKey(b, c.file)
		signed := []byte(dkimSign(b, msg, "example.com", "s1", key))
		mem := dkimFakeResolver{txt: map[string]string{"s1._domainkey.example.com": mustRecord(b, key)}}
		dnsRes := dnstest.Serve(b, dkimZone(dkimKeyRR(b, "example.com", "s1", key)), nil)
		for _, r := range []struct {
			name string
			r    Resolver
		}{{"memory", mem}, {"dnstest", dnsRes}} {
			b.Run(c.name+"/"+r.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(signed)))
				for b.Loop() {
					if got := VerifyDKIM(context.Background(), r.r, signed); got.Result != Pass {
						b.Fatal(got)
					}
				}
			})
		}
	}
}

func BenchmarkDkimSign(b *testing.B) {
	msg := []byte(dkimBenchMsg())
	for _, c := range []struct{ name, file string }{{"rsa2048", "rsa2048.pem"}, {"ed25519", "ed25519.pem"}} {
		s := NewSigner([]SignKey{{Domain: "example.com", Selector: "s1", Key: dkimTestKey(b, c.file)}})
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				if sig, err := s.Sign(msg, "example.com"); err != nil || sig == "" {
					b.Fatal(sig, err)
				}
			}
		})
	}
}
