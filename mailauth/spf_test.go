package mailauth

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicemail/sluice/internal/dnstest"
)

// spfZone is the DNS of the SPF tests, served on 127.0.0.1 by dnstest and
// read by pyspf in the interoperability test.
var spfZoneText = []string{
	`pass.test. 60 IN TXT "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"`,
	`soft.test. 60 IN TXT "v=spf1 ip4:192.0.2.0/24 ~all"`,
	`neutral.test. 60 IN TXT "v=spf1 ip4:192.0.2.0/24 ?all"`,
	`nothing.test. 60 IN TXT "v=spf1 ip4:192.0.2.0/24"`,
	`nospf.test. 60 IN TXT "google-site-verification=abc"`,
	`two.test. 60 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`,
	`two.test. 60 IN TXT "v=spf1 -all"`,
	`syntax.test. 60 IN TXT "v=spf1 ip4:192.0.2.0/24 foo:bar -all"`,
	`badcidr.test. 60 IN TXT "v=spf1 ip4:192.0.2.0/24 ip4:198.51.100.0/33 -all"`,
	`badinc.test. 60 IN TXT "v=spf1 include:syntax.test -all"`,
	`split.test. 60 IN TXT "v=spf1 ip4:192.0.2.0/24" " -all"`,
	`include.test. 60 IN TXT "v=spf1 include:pass.test -all"`,
	`redirect.test. 60 IN TXT "v=spf1 redirect=pass.test"`,
	`redirnone.test. 60 IN TXT "v=spf1 redirect=absent.test"`,
	`mx.test. 60 IN TXT "v=spf1 mx -all"`,
	`mx.test. 60 IN MX 10 mail.mx.test.`,
	`mail.mx.test. 60 IN A 203.0.113.5`,
	`a.test. 60 IN TXT "v=spf1 a/24 -all"`,
	`a.test. 60 IN A 203.0.113.77`,
	`exists.test. 60 IN TXT "v=spf1 exists:%{i}.allow.exists.test -all"`,
	`192.0.2.10.allow.exists.test. 60 IN A 127.0.0.2`,
	`macrod.test. 60 IN TXT "v=spf1 a:mail.%{d} -all"`,
	`mail.macrod.test. 60 IN A 198.51.100.20`,
	`helo.test. 60 IN TXT "v=spf1 exists:%{l}.%{o}.chk.test -all"`,
	`postmaster.helo.test.chk.test. 60 IN A 127.0.0.2`,
	`servfail.test. 60 IN TXT "v=spf1 -all"`,
	`incfail.test. 60 IN TXT "v=spf1 include:servfail.test -all"`,
	`many.test. 60 IN TXT "v=spf1 a:h1.many.test a:h2.many.test a:h3.many.test a:h4.many.test a:h5.many.test a:h6.many.test a:h7.many.test a:h8.many.test a:h9.many.test a:h10.many.test a:h11.many.test -all"`,
	`void.test. 60 IN TXT "v=spf1 a:v1.void.test a:v2.void.test a:v3.void.test -all"`,
	`outbound.test. 60 IN TXT "v=spf1 ip4:192.0.2.1 ip4:192.0.2.2 -all"`,
}

func spfZone(t testing.TB) map[string][]dns.RR {
	lines := append([]string(nil), spfZoneText...)
	for i := 1; i <= 11; i++ {
		lines = append(lines, fmt.Sprintf("h%d.many.test. 60 IN A 203.0.113.%d", i, i))
	}
	return zoneOf(t, lines...)
}

var spfServfail = map[string]bool{"servfail.test.": true}

type spfCase struct {
	name, ip, helo, from string
	want, domain         string
}

// spfCases cover every result value; pyspf must agree on each.
var spfCases = []spfCase{
	{"pass ip4", "192.0.2.10", "mta.example", "a@pass.test", Pass, "pass.test"},
	{"pass ip6", "2001:db8::1", "mta.example", "a@pass.test", Pass, "pass.test"},
	{"fail", "198.51.100.1", "mta.example", "a@pass.test", Fail, "pass.test"},
	{"softfail", "198.51.100.1", "mta.example", "a@soft.test", SoftFail, "soft.test"},
	{"neutral ?all", "198.51.100.1", "mta.example", "a@neutral.test", Neutral, "neutral.test"},
	{"neutral at the end", "198.51.100.1", "mta.example", "a@nothing.test", Neutral, "nothing.test"},
	{"none: no SPF record", "192.0.2.10", "mta.example", "a@nospf.test", None, "nospf.test"},
	{"none: NXDOMAIN", "192.0.2.10", "mta.example", "a@absent.test", None, "absent.test"},
	{"temperror on SERVFAIL", "192.0.2.10", "mta.example", "a@servfail.test", TempError, "servfail.test"},
	{"temperror in an include", "192.0.2.10", "mta.example", "a@incfail.test", TempError, "incfail.test"},
	{"permerror: two records", "192.0.2.10", "mta.example", "a@two.test", PermError, "two.test"},
	{"permerror: syntax after a match", "192.0.2.10", "mta.example", "a@syntax.test", PermError, "syntax.test"},
	{"permerror: bad cidr after a match", "192.0.2.10", "mta.example", "a@badcidr.test", PermError, "badcidr.test"},
	{"permerror: syntax in an include", "192.0.2.10", "mta.example", "a@badinc.test", PermError, "badinc.test"},
	{"permerror: more than 10 lookups", "192.0.2.10", "mta.example", "a@many.test", PermError, "many.test"},
	{"permerror: more than 2 void lookups", "192.0.2.10", "mta.example", "a@void.test", PermError, "void.test"},
	{"permerror: redirect to no record", "192.0.2.10", "mta.example", "a@redirnone.test", PermError, "redirnone.test"},
	{"strings joined", "192.0.2.10", "mta.example", "a@split.test", Pass, "split.test"},
	{"strings joined, fail", "198.51.100.1", "mta.example", "a@split.test", Fail, "split.test"},
	{"include pass", "192.0.2.10", "mta.example", "a@include.test", Pass, "include.test"},
	{"include fail", "198.51.100.1", "mta.example", "a@include.test", Fail, "include.test"},
	{"redirect pass", "192.0.2.10", "mta.example", "a@redirect.test", Pass, "redirect.test"},
	{"redirect fail", "198.51.100.1", "mta.example", "a@redirect.test", Fail, "redirect.test"},
	{"mx", "203.0.113.5", "mta.example", "a@mx.test", Pass, "mx.test"},
	{"a with cidr", "203.0.113.200", "mta.example", "a@a.test", Pass, "a.test"},
	{"exists %{i}", "192.0.2.10", "mta.example", "a@exists.test", Pass, "exists.test"},
	{"exists %{i} other ip", "192.0.2.11", "mta.example", "a@exists.test", Fail, "exists.test"},
	{"a:%{d}", "198.51.100.20", "mta.example", "a@macrod.test", Pass, "macrod.test"},
	{"null sender: postmaster@HELO", "192.0.2.99", "helo.test", "", Pass, "helo.test"},
	{"null sender: HELO fail", "198.51.100.9", "pass.test", "", Fail, "pass.test"},
}

func TestCheckSPFAgainstLocalDNS(t *testing.T) {
	_, addr := dnstest.ServeAddr(t, spfZone(t), spfServfail)
	r := newTestResolver(t, addr, 2*time.Second)
	for _, c := range spfCases {
		t.Run(c.name, func(t *testing.T) {
			got := CheckSPF(context.Background(), r, netip.MustParseAddr(c.ip), c.helo, c.from)
			if got.Result != c.want || got.Domain != c.domain {
				t.Errorf("CheckSPF(%s, %q, %q) = %+v, want %s for %s", c.ip, c.helo, c.from, got, c.want, c.domain)
			}
			if got.Detail == "" {
				t.Errorf("no detail in %+v", got)
			}
		})
	}
}

func TestCheckSPFDetail(t *testing.T) {
	_, addr := dnstest.ServeAddr(t, spfZone(t), spfServfail)
	r := newTestResolver(t, addr, 2*time.Second)
	for _, c := range []struct{ ip, from, detail string }{
		{"192.0.2.10", "a@pass.test", "matched ip4:192.0.2.0/24"},
		{"198.51.100.1", "a@pass.test", "matched all"},
		{"192.0.2.10", "a@include.test", "matched include:pass.test"},
		{"192.0.2.10", "a@syntax.test", `syntax error in the SPF record of syntax.test: "foo:bar": unknown mechanism`},
		{"192.0.2.10", "a@nospf.test", "no SPF record"},
		{"192.0.2.10", "a@servfail.test", "server misbehaving"},
	} {
		got := CheckSPF(context.Background(), r, netip.MustParseAddr(c.ip), "mta.example", c.from)
		if !strings.Contains(got.Detail, c.detail) {
			t.Errorf("%s from %s: detail %q, want it to say %q", c.from, c.ip, got.Detail, c.detail)
		}
	}
}

func TestCheckSPFTempErrorOnSilentServer(t *testing.T) {
	r := newTestResolver(t, dnstest.Silent(t), 200*time.Millisecond)
	got := CheckSPF(context.Background(), r, netip.MustParseAddr("192.0.2.10"), "mta.example", "a@pass.test")
	if got.Result != TempError || !strings.Contains(got.Detail, "timeout") {
		t.Errorf("got %+v, want temperror with a timeout", got)
	}
}

func TestCheckSPFWithoutInputs(t *testing.T) {
	r := NewStaticResolver(nil)
	for _, c := range []struct {
		ip         netip.Addr
		helo, from string
	}{
		{netip.Addr{}, "mta.example", "a@pass.test"},
		{netip.MustParseAddr("192.0.2.1"), "", ""},
		{netip.MustParseAddr("192.0.2.1"), "[192.0.2.1]", ""},
		{netip.MustParseAddr("192.0.2.1"), "localhost", ""},
		{netip.MustParseAddr("192.0.2.1"), "mta.example", "a@"},
	} {
		if got := CheckSPF(context.Background(), r, c.ip, c.helo, c.from); got.Result != None {
			t.Errorf("CheckSPF(%v, %q, %q) = %+v, want none (RFC 7208 4.3)", c.ip, c.helo, c.from, got)
		}
	}
}

func TestCheckSPFIPv4MappedClient(t *testing.T) {
	r := NewStaticResolver(map[string][]string{"pass.test TXT": {"v=spf1 ip4:192.0.2.0/24 -all"}})
	got := CheckSPF(context.Background(), r, netip.MustParseAddr("::ffff:192.0.2.10"), "mta.example", "a@pass.test")
	if got.Result != Pass {
		t.Errorf("got %+v, want pass: a v4-mapped client is its IPv4 address", got)
	}
}

func TestCheckSPFStaticResolverFailures(t *testing.T) {
	r := NewStaticResolver(map[string][]string{
		"sf.test TXT":    {"SERVFAIL"},
		"to.test TXT":    {"TIMEOUT"},
		"ex.test TXT":    {"v=spf1 exists:x.ex.test -all"},
		"x.ex.test A":    {"TIMEOUT"},
		"ok.test TXT":    {"v=spf1 ip4:192.0.2.0/24 -all"},
		"MX.Test. TXT":   {"v=spf1 mx -all"},
		"mx.test MX":     {"10 mail.mx.test"},
		"mail.mx.test A": {"203.0.113.5"},
	})
	ip := netip.MustParseAddr("192.0.2.10")
	for from, want := range map[string]string{
		"a@sf.test": TempError, "a@to.test": TempError, "a@ex.test": TempError,
		"a@ok.test": Pass, "a@other.test": None,
	} {
		if got := CheckSPF(context.Background(), r, ip, "mta.example", from); got.Result != want {
			t.Errorf("%s: %+v, want %s", from, got, want)
		}
	}
	if got := CheckSPF(context.Background(), r, netip.MustParseAddr("203.0.113.5"), "x.example", "b@mx.test"); got.Result != Pass {
		t.Errorf("mx via static: %+v", got)
	}
}

func TestSPFAuthorizes(t *testing.T) {
	_, addr := dnstest.ServeAddr(t, spfZone(t), spfServfail)
	r := newTestResolver(t, addr, 2*time.Second)
	ips := func(s ...string) []netip.Addr {
		var out []netip.Addr
		for _, a := range s {
			out = append(out, netip.MustParseAddr(a))
		}
		return out
	}
	ctx := context.Background()
	if ok, res := SPFAuthorizes(ctx, r, "outbound.test", ips("192.0.2.1", "192.0.2.2")); !ok || res.Result != Pass {
		t.Errorf("both listed: %v %+v, want true", ok, res)
	}
	if ok, res := SPFAuthorizes(ctx, r, "outbound.test", ips("192.0.2.1", "192.0.2.3")); ok || res.Result != Fail {
		t.Errorf("one not listed: %v %+v, want false with fail", ok, res)
	}
	if ok, res := SPFAuthorizes(ctx, r, "servfail.test", ips("192.0.2.1")); ok || res.Result != TempError {
		t.Errorf("servfail: %v %+v, want false with temperror", ok, res)
	}
	if ok, res := SPFAuthorizes(ctx, r, "absent.test", ips("192.0.2.1")); ok || res.Result != None {
		t.Errorf("no record: %v %+v, want false with none", ok, res)
	}
}

func TestCheckSPFSyntax(t *testing.T) {
	valid := []string{
		"v=spf1",
		"v=spf1 -all",
		"v=spf1  ip4:192.0.2.0/24   ~all ",
		"v=spf1 +a -mx ?ptr ~exists:%{i}.x.example include:_spf.example.com -all",
		"v=spf1 a:mail.example.com/24//64 mx/24 mx//64 a:%{d} ptr:example.com",
		"v=spf1 ip6:2001:db8::/32 ip6:::ffff:192.0.2.1 ip4:192.0.2.1",
		"v=spf1 redirect=_spf.example.com exp=explain.%{d}",
		"v=spf1 foo=bar other.mod=%{s} x-y_z= -all",
		"v=spf1 exists:%{ir}.%{l1r+-}._spf.%{d} -all",
		"v=spf1 include:example.com. -all",
		"v=spf1 a:1-2.example.123-4 -all",
		"v=spf1 A:Example.COM MX -ALL",
	}
	for _, rec := range valid {
		if err := checkSPFSyntax(rec); err != nil {
			t.Errorf("%q: %v, want valid", rec, err)
		}
	}
	invalid := []string{
		"v=spf1 foo",
		"v=spf1 ip4:192.0.2.0/33",
		"v=spf1 ip4:192.0.2.0/024",
		"v=spf1 ip4:2001:db8::1",
		"v=spf1 ip6:192.0.2.1",
		"v=spf1 ip4:192.0.2",
		"v=spf1 ip4",
		"v=spf1 all:x",
		"v=spf1 include",
		"v=spf1 include:",
		"v=spf1 include:localhost",
		"v=spf1 include:example.123",
		"v=spf1 a:example.com/",
		"v=spf1 a/33",
		"v=spf1 mx//129",
		"v=spf1 exists:%{x}.example.com",
		"v=spf1 exists:%{c}.example.com",
		"v=spf1 exists:%{i0}.example.com",
		"v=spf1 exists:%{i.example.com",
		"v=spf1 exists:%x.example.com",
		"v=spf1 redirect=a.example.com redirect=b.example.com",
		"v=spf1 exp=a.example.com exp=b.example.com",
		"v=spf1 redirect=",
		"v=spf1 -redirect=a.example.com",
		"v=spf1 1foo=bar",
		"v=spf1 foo=%",
		"v=spf1 ptr/24",
		"v=spf1 +-all",
	}
	for _, rec := range invalid {
		if err := checkSPFSyntax(rec); err == nil {
			t.Errorf("%q: valid, want a syntax error", rec)
		}
	}
}
