package mailauth

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dmarc"
	"github.com/miekg/dns"

	"github.com/sluicemail/sluice/internal/dnstest"
)

// dmarcZone is the DNS the DMARC tests see, served on 127.0.0.1.
func dmarcZone(t testing.TB) *net.Resolver {
	txt := map[string][]string{
		"_dmarc.example.com":       {"v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.com"},
		"_dmarc.own.example.com":   {"v=DMARC1; p=none"},
		"_dmarc.strict.test":       {"v=DMARC1; p=quarantine; adkim=s; aspf=s"},
		"_dmarc.nosp.test":         {"v=DMARC1; p=reject"},
		"_dmarc.multi.test":        {"v=DMARC1; p=reject", "v=DMARC1; p=none"},
		"_dmarc.multi.example.com": {"v=DMARC1; p=none", "v=DMARC1; p=quarantine"},
		"_dmarc.mixed.test":        {"v=spf1 -all", "v=DMARC1; p=quarantine; pct=20", "some-verification=abc"},
		"_dmarc.bad.test":          {"v=DMARC1; p=bogus"},
		"_dmarc.badadkim.test":     {"v=DMARC1; p=reject; adkim=x"},
		"_dmarc.notfirst.test":     {"p=reject; v=DMARC1"},
		"_dmarc.lowerv.test":       {"v=dmarc1; p=reject"},
		"_dmarc.ruaonly.test":      {"v=DMARC1; rua=mailto:agg@ruaonly.test"},
		"_dmarc.upper.test":        {"V = DMARC1 ; P=REJECT; ADKIM=S"},
		"_dmarc.example.co.uk":     {"v=DMARC1; p=reject"},
		"_dmarc.split.test":        {"v=DMARC1; p=rej" + "ect"},
	}
	zone := map[string][]dns.RR{}
	for name, vals := range txt {
		for _, v := range vals {
			zone[name+"."] = append(zone[name+"."], &dns.TXT{
				Hdr: dns.RR_Header{Name: name + ".", Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
				Txt: []string{v},
			})
		}
	}
	// A long record arrives as several strings of one TXT record: the check
	// sees their concatenation.
	zone["_dmarc.long.test."] = []dns.RR{dnstest.RR(t, `_dmarc.long.test. 60 IN TXT "v=DMARC1; p=qua" "rantine; adkim=s"`)}
	// _dmarc.nodmarc.test has other records only: NODATA.
	zone["_dmarc.nodmarc.test."] = []dns.RR{dnstest.RR(t, "_dmarc.nodmarc.test. 60 IN A 192.0.2.1")}
	servfail := map[string]bool{"_dmarc.broken.test.": true, "_dmarc.orgfail.test.": true}
	return dnstest.Serve(t, zone, servfail)
}

func spfPass(domain string) SPFResult { return SPFResult{Result: Pass, Domain: domain} }

func TestCheckDMARC(t *testing.T) {
	r := dmarcZone(t)
	cases := []struct {
		name   string
		in     DMARCInput
		result string
		policy string
		at     string // RecordDomain
		detail string // a part of Detail
	}{
		// Relaxed alignment (the default): same organizational domain.
		{"dkim relaxed pass", DMARCInput{FromDomain: "example.com", DKIMPassed: []string{"mail.example.com"}}, Pass, "reject", "example.com", "DKIM d=mail.example.com aligned (relaxed)"},
		{"spf relaxed pass", DMARCInput{FromDomain: "example.com", SPF: spfPass("bounce.example.com")}, Pass, "reject", "example.com", "SPF bounce.example.com aligned (relaxed)"},
		{"spf exact pass", DMARCInput{FromDomain: "example.com", SPF: spfPass("example.com")}, Pass, "reject", "example.com", "SPF"},
		{"p=reject fail, nothing aligned", DMARCInput{FromDomain: "example.com", SPF: spfPass("mailer.net"), DKIMPassed: []string{"mailer.net"}}, Fail, "reject", "example.com", "no aligned pass"},
		{"fail, no SPF nor DKIM", DMARCInput{FromDomain: "example.com"}, Fail, "reject", "example.com", "SPF none"},
		{"spf aligned but not pass", DMARCInput{FromDomain: "example.com", SPF: SPFResult{Result: SoftFail, Domain: "example.com"}}, Fail, "reject", "example.com", "SPF softfail"},
		{"spf fail, dkim of a look-alike", DMARCInput{FromDomain: "example.com", SPF: SPFResult{Result: Fail, Domain: "example.com"}, DKIMPassed: []string{"example.com.evil.net", "notexample.com"}}, Fail, "reject", "example.com", ""},
		{"second DKIM aligns", DMARCInput{FromDomain: "example.com", DKIMPassed: []string{"esp.net", "example.com"}}, Pass, "reject", "example.com", "d=example.com"},
		{"case and trailing dots", DMARCInput{FromDomain: "Example.COM.", DKIMPassed: []string{"MAIL.Example.com."}}, Pass, "reject", "example.com", "d=mail.example.com"},
		{"relaxed across a two-label public suffix", DMARCInput{FromDomain: "shop.example.co.uk", DKIMPassed: []string{"example.co.uk"}}, Pass, "reject", "example.co.uk", ""},
		{"sharing only the public suffix is not aligned", DMARCInput{FromDomain: "example.co.uk", SPF: spfPass("other.co.uk"), DKIMPassed: []string{"co.uk"}}, Fail, "reject", "example.co.uk", ""},

		// Strict alignment: the same name.
		{"dkim strict exact", DMARCInput{FromDomain: "strict.test", DKIMPassed: []string{"strict.test"}}, Pass, "quarantine", "strict.test", "(strict)"},
		{"dkim strict subdomain fails", DMARCInput{FromDomain: "strict.test", DKIMPassed: []string{"mail.strict.test"}}, Fail, "quarantine", "strict.test", ""},
		{"spf strict exact", DMARCInput{FromDomain: "strict.test", SPF: spfPass("STRICT.test.")}, Pass, "quarantine", "strict.test", "(strict)"},
		{"spf strict subdomain fails", DMARCInput{FromDomain: "strict.test", SPF: spfPass("bounce.strict.test")}, Fail, "quarantine", "strict.test", ""},
		{"strict: a subdomain From with the org's d= fails", DMARCInput{FromDomain: "news.strict.test", DKIMPassed: []string{"strict.test"}, SPF: spfPass("strict.test")}, Fail, "quarantine", "strict.test", ""},
		{"strict: subdomain From, same subdomain d=", DMARCInput{FromDomain: "news.strict.test", DKIMPassed: []string{"news.strict.test"}}, Pass, "quarantine", "strict.test", ""},
		{"strict tags in upper case", DMARCInput{FromDomain: "upper.test", DKIMPassed: []string{"a.upper.test"}}, Fail, "reject", "upper.test", "(strict)"},

		// Discovery at the organizational domain, and sp=.
		{"subdomain gets the org's sp=", DMARCInput{FromDomain: "news.example.com", DKIMPassed: []string{"example.com"}}, Pass, "quarantine", "example.com", "policy quarantine from _dmarc.example.com"},
		{"deep subdomain gets the org's sp=", DMARCInput{FromDomain: "a.b.news.example.com"}, Fail, "quarantine", "example.com", ""},
		{"subdomain without sp= gets the org's p=", DMARCInput{FromDomain: "news.nosp.test"}, Fail, "reject", "nosp.test", ""},
		{"subdomain with its own record", DMARCInput{FromDomain: "own.example.com", SPF: spfPass("example.com")}, Pass, "none", "own.example.com", ""},
		{"the org's own p= even when sp= differs", DMARCInput{FromDomain: "example.com", DKIMPassed: []string{"news.example.com"}}, Pass, "reject", "example.com", ""},

		// Record selection and syntax.
		{"no record", DMARCInput{FromDomain: "nodmarc.test", SPF: spfPass("nodmarc.test")}, None, "", "", "no DMARC record"},
		{"no record anywhere for a subdomain", DMARCInput{FromDomain: "x.nodmarc.test"}, None, "", "", ""},
		{"several records", DMARCInput{FromDomain: "multi.test", DKIMPassed: []string{"multi.test"}}, None, "", "multi.test", "several DMARC records"},
		{"several records at the From domain: no fallback to the org", DMARCInput{FromDomain: "multi.example.com"}, None, "", "multi.example.com", "several"},
		{"other TXT records are ignored", DMARCInput{FromDomain: "mixed.test"}, Fail, "quarantine", "mixed.test", "pct=20"},
		{"syntax error", DMARCInput{FromDomain: "bad.test", DKIMPassed: []string{"bad.test"}}, PermError, "", "bad.test", "policy"},
		{"syntax error in adkim", DMARCInput{FromDomain: "badadkim.test"}, PermError, "", "badadkim.test", ""},
		{"v= not first is not DMARC", DMARCInput{FromDomain: "notfirst.test"}, None, "", "", ""},
		{"DMARC1 is case-sensitive", DMARCInput{FromDomain: "lowerv.test"}, None, "", "", ""},
		{"no p= but rua= is p=none", DMARCInput{FromDomain: "ruaonly.test"}, Fail, "none", "ruaonly.test", ""},
		{"a record in several strings", DMARCInput{FromDomain: "long.test", DKIMPassed: []string{"x.long.test"}}, Fail, "quarantine", "long.test", "(strict)"},

		// temperror.
		{"SERVFAIL on the record", DMARCInput{FromDomain: "broken.test", DKIMPassed: []string{"broken.test"}}, TempError, "", "broken.test", "record lookup"},
		{"SERVFAIL at the org domain", DMARCInput{FromDomain: "sub.orgfail.test"}, TempError, "", "orgfail.test", ""},
		{"SPF temperror, aligned domain", DMARCInput{FromDomain: "example.com", SPF: SPFResult{Result: TempError, Domain: "example.com"}, SPFTemp: true}, TempError, "reject", "example.com", "SPF had a temporary error"},
		{"SPF temperror by result alone", DMARCInput{FromDomain: "example.com", SPF: SPFResult{Result: TempError, Domain: "bounce.example.com"}}, TempError, "reject", "example.com", ""},
		{"SPF temperror, domain that cannot align", DMARCInput{FromDomain: "example.com", SPF: SPFResult{Result: TempError, Domain: "esp.net"}, SPFTemp: true}, Fail, "reject", "example.com", ""},
		{"SPF temperror under strict, subdomain cannot align", DMARCInput{FromDomain: "strict.test", SPF: SPFResult{Result: TempError, Domain: "b.strict.test"}, SPFTemp: true}, Fail, "quarantine", "strict.test", ""},
		{"DKIM temperror", DMARCInput{FromDomain: "example.com", SPF: spfPass("esp.net"), DKIMTemp: true}, TempError, "reject", "example.com", "DKIM had a temporary error"},
		{"an aligned pass wins over a temperror", DMARCInput{FromDomain: "example.com", DKIMPassed: []string{"example.com"}, SPFTemp: true, DKIMTemp: true}, Pass, "reject", "example.com", ""},

		{"no From domain", DMARCInput{FromDomain: ""}, None, "", "", "no From domain"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := CheckDMARC(context.Background(), r, c.in)
			if got.Result != c.result || got.Policy != c.policy || got.RecordDomain != c.at {
				t.Errorf("got %s policy %q at %q (%s), want %s policy %q at %q", got.Result, got.Policy, got.RecordDomain, got.Detail, c.result, c.policy, c.at)
			}
			if got.Domain != canonDomain(c.in.FromDomain) {
				t.Errorf("Domain %q, want %q", got.Domain, canonDomain(c.in.FromDomain))
			}
			if got.Detail == "" || !strings.Contains(got.Detail, c.detail) {
				t.Errorf("Detail %q, want it to contain %q", got.Detail, c.detail)
			}
		})
	}
}

// TestDMARCTimeout: a server that never answers is temperror, not none.
func TestDMARCTimeout(t *testing.T) {
	r := dnstest.Resolver(dnstest.Silent(t))
	ctx, cancel := context.WithTimeout(context.Background(), 200e6)
	defer cancel()
	got := CheckDMARC(ctx, r, DMARCInput{FromDomain: "example.com", DKIMPassed: []string{"example.com"}})
	if got.Result != TempError {
		t.Fatalf("got %+v, want temperror", got)
	}
}

func TestDMARCAligned(t *testing.T) {
	cases := []struct {
		id, from string
		mode     dmarc.AlignmentMode
		want     bool
	}{
		{"example.com", "example.com", dmarc.AlignmentStrict, true},
		{"EXAMPLE.com.", "example.com", dmarc.AlignmentStrict, true},
		{"a.example.com", "example.com", dmarc.AlignmentStrict, false},
		{"example.com", "a.example.com", dmarc.AlignmentStrict, false},
		{"a.example.com", "example.com", dmarc.AlignmentRelaxed, true},
		{"example.com", "b.a.example.com", dmarc.AlignmentRelaxed, true},
		{"a.example.com", "b.example.com", dmarc.AlignmentRelaxed, true},
		{"example.net", "example.com", dmarc.AlignmentRelaxed, false},
		{"example.com.evil.net", "example.com", dmarc.AlignmentRelaxed, false},
		{"badexample.com", "example.com", dmarc.AlignmentRelaxed, false},
		{"a.example.co.uk", "example.co.uk", dmarc.AlignmentRelaxed, true},
		{"other.co.uk", "example.co.uk", dmarc.AlignmentRelaxed, false},
		{"co.uk", "example.co.uk", dmarc.AlignmentRelaxed, false},
		// Private registrations in the list are organizational boundaries too.
		{"alice.github.io", "bob.github.io", dmarc.AlignmentRelaxed, false},
		{"", "example.com", dmarc.AlignmentRelaxed, false},
		{"", "", dmarc.AlignmentRelaxed, false},
	}
	for _, c := range cases {
		if got := dmarcAligned(c.id, canonDomain(c.from), c.mode); got != c.want {
			t.Errorf("dmarcAligned(%q, %q, %s) = %v, want %v", c.id, c.from, c.mode, got, c.want)
		}
	}
}

func TestOrganizationalDomain(t *testing.T) {
	for in, want := range map[string]string{
		"example.com":              "example.com",
		"Mail.Example.COM.":        "example.com",
		"a.b.c.example.co.uk":      "example.co.uk",
		"example.test":             "example.test",
		"x.y.example.test":         "example.test",
		"com":                      "com",
		"co.uk":                    "co.uk",
		"":                         "",
		"foo.bar.s3.amazonaws.com": "bar.s3.amazonaws.com",
	} {
		if got := OrganizationalDomain(in); got != want {
			t.Errorf("OrganizationalDomain(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDMARCVersion(t *testing.T) {
	for txt, want := range map[string]bool{
		"v=DMARC1; p=none":    true,
		"v=DMARC1":            true,
		" V = DMARC1 ;p=none": true,
		"v=DMARC1p=none":      false,
		"v=DMARC10; p=none":   false,
		"v=dmarc1; p=none":    false,
		"p=none; v=DMARC1":    false,
		"v=spf1 -all":         false,
		"":                    false,
	} {
		if _, got := dmarcVersion(txt); got != want {
			t.Errorf("dmarcVersion(%q) = %v, want %v", txt, got, want)
		}
	}
}

// staticTXT is a resolver answering TXT from a map, as a warm cache would.
type staticTXT map[string][]string

func (s staticTXT) LookupTXT(_ context.Context, name string) ([]string, error) {
	if v, ok := s[name]; ok {
		return v, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}
func (staticTXT) LookupMX(context.Context, string) ([]*net.MX, error)        { return nil, nil }
func (staticTXT) LookupIPAddr(context.Context, string) ([]net.IPAddr, error) { return nil, nil }
func (staticTXT) LookupAddr(context.Context, string) ([]string, error)       { return nil, nil }

// BenchmarkCheckDMARC is the evaluation alone, over a resolver that answers
// at once: a subdomain From (two lookups, org-domain fallback) and a DKIM
// d= that aligns only in relaxed mode.
func BenchmarkCheckDMARC(b *testing.B) {
	r := staticTXT{"_dmarc.example.com.": {"v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.com"}}
	in := DMARCInput{FromDomain: "news.example.com", SPF: spfPass("esp.net"), DKIMPassed: []string{"esp.net", "mail.example.com"}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if res := CheckDMARC(ctx, r, in); res.Result != Pass {
			b.Fatal(res)
		}
	}
}
