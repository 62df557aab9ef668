package mailauth

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicemail/sluice/internal/dnstest"
)

func TestDNSBLAgainstLocalDNS(t *testing.T) {
	zone := zoneOf(t,
		`10.2.0.192.bl.test. 60 IN A 127.0.0.2`,
		`10.2.0.192.bl.test. 60 IN A 127.0.0.4`,
		`1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test. 60 IN A 127.0.0.3`,
		`spam.example.dbl.test. 60 IN A 127.0.1.2`,
		`11.2.0.192.bl.test. 60 IN A 198.51.100.1`, // a wildcard, not a listing
		`12.2.0.192.bl.test. 60 IN TXT "listed?"`,  // NODATA for A
	)
	srv, addr := serveCounting(t, zone, map[string]bool{"13.2.0.192.bl.test.": true}, 0)
	r := newTestResolver(t, addr, time.Second)
	silent := newTestResolver(t, dnstest.Silent(t), 200*time.Millisecond)
	ctx := context.Background()
	for _, c := range []struct {
		r             Resolver
		zone, subject string
		want          []string
		wantErr       bool
	}{
		{r, "bl.test", "192.0.2.10", []string{"127.0.0.2", "127.0.0.4"}, false},
		{r, "bl.test.", "::ffff:192.0.2.10", []string{"127.0.0.2", "127.0.0.4"}, false},
		{r, "bl.test", "2001:db8::1", []string{"127.0.0.3"}, false},
		{r, "dbl.test", "spam.example", []string{"127.0.1.2"}, false},
		{r, "dbl.test", "Spam.Example.", []string{"127.0.1.2"}, false},
		{r, "bl.test", "192.0.2.11", nil, false}, // outside 127/8
		{r, "bl.test", "192.0.2.12", nil, false}, // NODATA
		{r, "bl.test", "192.0.2.99", nil, false}, // NXDOMAIN
		{r, "bl.test", "", nil, false},
		{r, "bl.test", "192.0.2.13", nil, true}, // SERVFAIL
		{silent, "bl.test", "192.0.2.10", nil, true},
	} {
		got, err := DNSBL(ctx, c.r, c.zone, c.subject)
		slices.Sort(got)
		if !slices.Equal(got, c.want) || (err != nil) != c.wantErr {
			t.Errorf("DNSBL(%q, %q) = %q, %v; want %q, error %v", c.zone, c.subject, got, err, c.want, c.wantErr)
		}
	}
	if n := srv.count("10.2.0.192.bl.test", dns.TypeAAAA); n != 0 {
		t.Errorf("%d AAAA queries: a DNSBL lookup asks only for A", n)
	}
}

// *net.Resolver and a Resolver without LookupNetIP both work.
func TestDNSBLWithOtherResolvers(t *testing.T) {
	zone := zoneOf(t, `10.2.0.192.bl.test. 60 IN A 127.0.0.2`)
	nr := dnstest.Serve(t, zone, nil)
	static := NewStaticResolver(map[string][]string{"10.2.0.192.bl.test A": {"127.0.0.2"}})
	for _, r := range []Resolver{nr, onlyResolver{static}} {
		got, err := DNSBL(context.Background(), r, "bl.test", "192.0.2.10")
		if err != nil || !slices.Equal(got, []string{"127.0.0.2"}) {
			t.Errorf("%T: %q, %v", r, got, err)
		}
	}
}

// onlyResolver hides every method but Resolver's.
type onlyResolver struct{ Resolver }

func TestFCrDNS(t *testing.T) {
	zone := zoneOf(t,
		`mx.example.com. 60 IN A 192.0.2.10`,
		`mx.example.com. 60 IN AAAA 2001:db8::10`,
		`liar.example.com. 60 IN A 198.51.100.1`,
	)
	_, addr := dnstest.ServeAddr(t, zone, map[string]bool{"broken.example.com.": true})
	r := newTestResolver(t, addr, time.Second)
	ctx := context.Background()
	for _, c := range []struct {
		ip, ptr string
		want    bool
		wantErr bool
	}{
		{"192.0.2.10", "mx.example.com.", true, false},
		{"192.0.2.10", "MX.example.com", true, false},
		{"::ffff:192.0.2.10", "mx.example.com.", true, false},
		{"2001:db8::10", "mx.example.com.", true, false},
		{"192.0.2.10", "liar.example.com.", false, false},
		{"192.0.2.10", "absent.example.com.", false, false},
		{"192.0.2.10", "", false, false},
		{"192.0.2.10", "broken.example.com.", false, true},
	} {
		got, err := FCrDNS(ctx, r, c.ip, c.ptr)
		if got != c.want || (err != nil) != c.wantErr {
			t.Errorf("FCrDNS(%s, %q) = %v, %v; want %v, error %v", c.ip, c.ptr, got, err, c.want, c.wantErr)
		}
	}
}

func TestStaticResolver(t *testing.T) {
	r := NewStaticResolver(map[string][]string{
		"Example.COM. TXT":            {"v=spf1 -all", "other"},
		"example.com MX":              {"10 mx.example.com", "20 mx2.example.com."},
		"mx.example.com A":            {"192.0.2.10"},
		"mx.example.com AAAA":         {"2001:db8::10"},
		"10.2.0.192.in-addr.arpa PTR": {"mx.example.com."},
		"sf.example.com TXT":          {"SERVFAIL"},
		"to.example.com A":            {"TIMEOUT"},
		"bad key":                     {"x"},
	})
	ctx := context.Background()
	txt, err := r.LookupTXT(ctx, "example.com")
	if err != nil || !slices.Equal(txt, []string{"v=spf1 -all", "other"}) {
		t.Errorf("TXT = %q, %v", txt, err)
	}
	mx, err := r.LookupMX(ctx, "EXAMPLE.com.")
	if err != nil || len(mx) != 2 || mx[0].Host != "mx.example.com." || mx[1].Pref != 20 {
		t.Errorf("MX = %v, %v", mx, err)
	}
	ips, err := r.LookupIPAddr(ctx, "mx.example.com")
	if err != nil || len(ips) != 2 {
		t.Errorf("IPAddr = %v, %v", ips, err)
	}
	ptr, err := r.LookupAddr(ctx, "192.0.2.10")
	if err != nil || !slices.Equal(ptr, []string{"mx.example.com."}) {
		t.Errorf("PTR = %q, %v", ptr, err)
	}
	var de *net.DNSError
	if _, err := r.LookupTXT(ctx, "absent.example.com"); !IsNotFound(err) || !errorsAs(err, &de) || de.Err != "no such host" {
		t.Errorf("absent name: %v, want NXDOMAIN", err)
	}
	if _, err := r.LookupTXT(ctx, "mx.example.com"); !IsNotFound(err) || !errorsAs(err, &de) || de.Err != "no answer" {
		t.Errorf("name with other types: %v, want NODATA", err)
	}
	if _, err := r.LookupTXT(ctx, "sf.example.com"); !errorsAs(err, &de) || !de.IsTemporary || de.IsTimeout || IsNotFound(err) {
		t.Errorf("SERVFAIL: %v, want temporary", err)
	}
	if _, err := r.LookupIPAddr(ctx, "to.example.com"); !errorsAs(err, &de) || !de.IsTimeout {
		t.Errorf("TIMEOUT: %v, want a timeout", err)
	}
	if _, err := r.LookupAddr(ctx, "192.0.2.11"); !IsNotFound(err) {
		t.Errorf("PTR absent: %v", err)
	}
	if _, err := NewStaticResolver(nil).LookupTXT(ctx, "example.com"); !IsNotFound(err) {
		t.Errorf("no dns at all: %v, want NXDOMAIN", err)
	}
}

func TestValidateStaticRecords(t *testing.T) {
	if err := ValidateStaticRecords(map[string][]string{
		"example.com TXT": {"v=spf1 -all"}, "example.com MX": {"10 mx.example.com"},
		"mx.example.com A": {"192.0.2.1"}, "x.example.com AAAA": {"TIMEOUT"},
	}); err != nil {
		t.Errorf("valid records: %v", err)
	}
	for _, bad := range []map[string][]string{
		{"example.com": {"x"}},
		{"example.com SPF": {"v=spf1 -all"}},
		{"example.com MX": {"mx.example.com"}},
		{"example.com A": {"2001:db8::1"}},
		{"example.com AAAA": {"192.0.2.1"}},
		{"example.com A": {"not an address"}},
	} {
		if err := ValidateStaticRecords(bad); err == nil {
			t.Errorf("%v: valid, want an error", bad)
		}
	}
}
