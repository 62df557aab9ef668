package mailauth

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/sluicemail/sluice/internal/dnstest"
)

// BenchmarkCheckSPF: an include and an mx (4 lookups) against the DNS
// server on 127.0.0.1, with DNSResolver's cache warm, and with a resolver
// that has no cache (*net.Resolver pointed at the same server).
func BenchmarkCheckSPF(b *testing.B) {
	zone := zoneOf(b,
		`bench.test. 3600 IN TXT "v=spf1 mx include:pass.test -all"`,
		`bench.test. 3600 IN MX 10 mail.bench.test.`,
		`mail.bench.test. 3600 IN A 203.0.113.5`,
		`pass.test. 3600 IN TXT "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"`,
	)
	netRes, addr := dnstest.ServeAddr(b, zone, nil)
	ip := netip.MustParseAddr("192.0.2.10")
	ctx := context.Background()
	run := func(b *testing.B, r Resolver) {
		b.ReportAllocs()
		for b.Loop() {
			if res := CheckSPF(ctx, r, ip, "mta.example", "a@bench.test"); res.Result != Pass {
				b.Fatalf("%+v", res)
			}
		}
	}
	b.Run("cached", func(b *testing.B) {
		r := newTestResolver(b, addr, 2*time.Second)
		CheckSPF(ctx, r, ip, "mta.example", "a@bench.test") // warm the cache
		run(b, r)
	})
	b.Run("uncached", func(b *testing.B) { run(b, netRes) })
	b.Run("static", func(b *testing.B) {
		run(b, NewStaticResolver(map[string][]string{
			"bench.test TXT":    {"v=spf1 mx include:pass.test -all"},
			"bench.test MX":     {"10 mail.bench.test"},
			"mail.bench.test A": {"203.0.113.5"},
			"pass.test TXT":     {"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"},
		}))
	})
}
