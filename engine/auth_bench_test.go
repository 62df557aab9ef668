package engine

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicemail/sluice/builtins"
	"github.com/sluicemail/sluice/internal/dnstest"
	"github.com/sluicemail/sluice/mailauth"
)

// BenchmarkAuthLookups: a message whose rules read SPF, DKIM, DMARC and two
// DNSBL lookups, against a DNS server on 127.0.0.1 that answers each query
// after 20 ms, with a resolver that starts cold each time. "sequential" is
// the same checks one after another (the sum of the lookups); "rules" is
// the engine, which runs a phase's checks together.
func BenchmarkAuthLookups(b *testing.B) {
	const delay = 20 * time.Millisecond
	rr := func(s string) dns.RR { return dnstest.RR(b, s) }
	zone := map[string][]dns.RR{
		"shop.example.":               {rr(`shop.example. 60 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`)},
		"_dmarc.shop.example.":        {rr(`_dmarc.shop.example. 60 IN TXT "v=DMARC1; p=reject"`)},
		"s1._domainkey.shop.example.": {rr(`s1._domainkey.shop.example. 60 IN TXT "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="`)},
		"10.2.0.192.zen.example.net.": {rr(`10.2.0.192.zen.example.net. 60 IN A 127.0.0.2`)},
		"10.2.0.192.bl.example.org.":  {rr(`10.2.0.192.bl.example.org. 60 IN A 127.0.0.4`)},
	}
	answer := dnstest.Answer(zone, nil)
	addr := dnstest.ServeFunc(b, func(w dns.ResponseWriter, m *dns.Msg) {
		time.Sleep(delay)
		answer(w, m)
	})
	msg := []byte("DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; d=shop.example; s=s1; h=from:subject; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA\r\n" +
		"From: orders@shop.example\r\nTo: bob@example.org\r\nSubject: order\r\n\r\n")
	rs, err := Load([]File{{Name: "r.yaml", Src: []byte(`rules:
  - zen: '"127.0.0.2" in dnsbl("zen.example.net", client_ip) => +3'
  - bl: 'len(dnsbl("bl.example.org", client_ip)) > 0 => +1'
  - spf: 'spf == "fail" => +1'
  - dkim: 'dkim == "fail" => +1'
  - dmarc: 'dmarc == "fail" => +1'
`)}}, builtins.NewRegistry(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	env := Envelope{Helo: "mx.shop.example", MailFrom: "orders@shop.example", Rcpts: []string{"bob@example.org"}, Raw: msg}
	newResolver := func() mailauth.Resolver {
		r, err := mailauth.NewDNSResolver([]string{addr}, 2*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		return r
	}
	b.Run("sequential", func(b *testing.B) {
		ctx := context.Background()
		ip := netip.MustParseAddr("192.0.2.10")
		for b.Loop() {
			r := newResolver()
			mailauth.DNSBL(ctx, r, "zen.example.net", "192.0.2.10")
			mailauth.DNSBL(ctx, r, "bl.example.org", "192.0.2.10")
			spf := mailauth.CheckSPF(ctx, r, ip, env.Helo, env.MailFrom)
			dk := mailauth.VerifyDKIM(ctx, r, msg)
			mailauth.CheckDMARC(ctx, r, mailauth.DMARCInput{FromDomain: "shop.example", SPF: spf, DKIMPassed: dk.Domains})
		}
	})
	b.Run("rules", func(b *testing.B) {
		for b.Loop() {
			in := &builtins.Input{ClientIP: "192.0.2.10", DNS: newResolver()}
			v := rs.Replay(context.Background(), in, env)
			if len(v.Hits) != 3 { // zen, bl, dkim fail (b=AAAA); SPF passes aligned, so DMARC passes
				b.Fatal(fmt.Sprint(v.Hits))
			}
		}
	})
}
