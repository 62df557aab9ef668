package mailauth

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicemail/sluice/internal/dnstest"
)

// TestRecorderKinds: every kind of answer is recorded, rendered as
// context.dns, and a StaticResolver on the rendering answers every lookup
// as the recorded resolver did.
func TestRecorderKinds(t *testing.T) {
	live := NewStaticResolver(map[string][]string{
		"Example.COM. TXT":            {"v=spf1 ip4:192.0.2.0/24 -all", "other"},
		"example.com MX":              {"10 mx.example.com"},
		"mx.example.com A":            {"192.0.2.10"},
		"mx.example.com AAAA":         {"2001:db8::10"},
		"v4only.example.com A":        {"192.0.2.11"},
		"10.2.0.192.in-addr.arpa PTR": {"mx.example.com."},
		"_dmarc.broken.test TXT":      {"SERVFAIL"},
		"s1._domainkey.slow.test TXT": {"TIMEOUT"},
		"2.0.0.127.zen.example.net A": {"127.0.0.2"},
		"nodata.example.com MX":       {"10 mx.example.com"},
		"failing.example.com A":       {"SERVFAIL"},
		"failing.example.com AAAA":    {"SERVFAIL"},
		"3.0.0.127.zen.example.net A": {"TIMEOUT"},
		"unrelated.example.com TXT":   {"never asked"},
		"11.2.0.192.in-addr.arpa PTR": {"SERVFAIL"},
		"mixed.example.com A":         {"192.0.2.12"},
		"mixed.example.com AAAA":      {"SERVFAIL"},
		"nodata.example.com. TXT":     {},
		"quote\"d.example.com TXT":    {"a \"quoted\" value"},
		"unicode.example.com TXT":     {"caf\u00e9 <&>"},
	})
	rec := NewRecorder(live)
	ctx := context.Background()
	type lookup struct {
		name string
		do   func(Resolver) (any, error)
	}
	txt := func(n string) lookup {
		return lookup{"TXT " + n, func(r Resolver) (any, error) { return r.LookupTXT(ctx, n) }}
	}
	mx := func(n string) lookup {
		return lookup{"MX " + n, func(r Resolver) (any, error) { return r.LookupMX(ctx, n) }}
	}
	ip := func(n string) lookup {
		return lookup{"IP " + n, func(r Resolver) (any, error) { return r.LookupIPAddr(ctx, n) }}
	}
	ip4 := func(n string) lookup {
		return lookup{"IP4 " + n, func(r Resolver) (any, error) {
			return r.(netIPResolver).LookupNetIP(ctx, "ip4", n)
		}}
	}
	ptr := func(a string) lookup {
		return lookup{"PTR " + a, func(r Resolver) (any, error) { return r.LookupAddr(ctx, a) }}
	}
	lookups := []lookup{
		txt("example.com"), mx("example.com"), ip("mx.example.com"), ip("v4only.example.com"),
		ptr("192.0.2.10"), ptr("192.0.2.11"), ptr("192.0.2.99"), txt("_dmarc.broken.test"),
		txt("s1._domainkey.slow.test"), ip4("2.0.0.127.zen.example.net"), ip4("3.0.0.127.zen.example.net"),
		ip4("9.0.0.127.zen.example.net"), txt("nodata.example.com"), txt("nosuch.example.com"),
		ip("failing.example.com"), ip("mixed.example.com"), ip("192.0.2.1"), txt("quote\"d.example.com"),
		txt("unicode.example.com"), txt("spaces are not names"),
	}
	type outcome struct {
		val  any
		kind string
	}
	want := make([]outcome, len(lookups))
	for i, l := range lookups {
		v, err := l.do(rec)
		want[i] = outcome{v, kindOf(err)}
	}
	log := rec.Log()
	byKey := map[string]Lookup{}
	for _, lk := range log.Lookups {
		byKey[lk.Key()] = lk
	}
	for key, w := range map[string]Lookup{
		"example.com TXT":             {Values: []string{"v=spf1 ip4:192.0.2.0/24 -all", "other"}},
		"example.com MX":              {Values: []string{"10 mx.example.com."}},
		"mx.example.com A":            {Values: []string{"192.0.2.10"}},
		"mx.example.com AAAA":         {Values: []string{"2001:db8::10"}},
		"v4only.example.com A":        {Values: []string{"192.0.2.11"}},
		"10.2.0.192.in-addr.arpa PTR": {Values: []string{"mx.example.com."}},
		"99.2.0.192.in-addr.arpa PTR": {Error: "NXDOMAIN"},
		"_dmarc.broken.test TXT":      {Error: "SERVFAIL"},
		"s1._domainkey.slow.test TXT": {Error: "TIMEOUT"},
		"2.0.0.127.zen.example.net A": {Values: []string{"127.0.0.2"}},
		"3.0.0.127.zen.example.net A": {Error: "TIMEOUT"},
		"9.0.0.127.zen.example.net A": {Error: "NXDOMAIN"},
		"nodata.example.com TXT":      {Error: "NXDOMAIN"},
		"nosuch.example.com TXT":      {Error: "NXDOMAIN"},
		"failing.example.com A":       {Error: "SERVFAIL"},
		"failing.example.com AAAA":    {Error: "SERVFAIL"},
		"mixed.example.com A":         {Values: []string{"192.0.2.12"}},
		"quote\"d.example.com TXT":    {Values: []string{"a \"quoted\" value"}},
		"unicode.example.com TXT":     {Values: []string{"caf\u00e9 <&>"}},
		"11.2.0.192.in-addr.arpa PTR": {Error: "SERVFAIL"},
		"v4only.example.com AAAA":     {}, // NODATA beside an answer: left to replay as NODATA
		"mixed.example.com AAAA":      {}, // failed beside an answer: the lookup gave the A records
		"spaces are not names TXT":    {},
		"unrelated.example.com TXT":   {},
		"192.0.2.1 A":                 {},
	} {
		got, ok := byKey[key]
		if w.Values == nil && w.Error == "" {
			if ok {
				t.Errorf("%s recorded: %+v", key, got)
			}
			continue
		}
		if !ok || !reflect.DeepEqual(got.Values, w.Values) || got.Error != w.Error || got.Truncated {
			t.Errorf("%s: got %+v (recorded %v), want %+v", key, got, ok, w)
		}
	}

	// Replayed from the rendering, every lookup answers as it did.
	replay := NewStaticResolver(log.Records())
	if err := ValidateStaticRecords(log.Records()); err != nil {
		t.Errorf("the rendering is not valid context.dns: %v", err)
	}
	for i, l := range lookups {
		v, err := l.do(replay)
		got := outcome{v, kindOf(err)}
		if !reflect.DeepEqual(got, want[i]) {
			t.Errorf("%s replayed: %v, live %v", l.name, got, want[i])
		}
	}

	var b strings.Builder
	log.WriteYAML(&b, "    ")
	yaml := b.String()
	for _, line := range []string{
		`    "example.com TXT": ["v=spf1 ip4:192.0.2.0/24 -all", "other"]` + "\n",
		`    "_dmarc.broken.test TXT": SERVFAIL` + "\n",
		`    "s1._domainkey.slow.test TXT": TIMEOUT` + "\n",
		`    # "nosuch.example.com TXT": NXDOMAIN` + "\n",
		`    "10.2.0.192.in-addr.arpa PTR": ["mx.example.com."]` + "\n",
		`    "quote\"d.example.com TXT": ["a \"quoted\" value"]` + "\n",
		`    "unicode.example.com TXT": ["café <&>"]` + "\n",
	} {
		if !strings.Contains(yaml, line) {
			t.Errorf("rendering lacks %q:\n%s", line, yaml)
		}
	}
	if i, j := strings.Index(yaml, `"_dmarc.broken.test TXT"`), strings.Index(yaml, `"example.com TXT"`); i > j {
		t.Errorf("rendering not sorted by key:\n%s", yaml)
	}
}

func kindOf(err error) string {
	if err == nil {
		return ""
	}
	return errorKind(err)
}

// TestRecorderLiveErrors: the error kinds of a real resolver's answers,
// against a DNS server on 127.0.0.1 that answers, fails, or says nothing.
func TestRecorderLiveErrors(t *testing.T) {
	zone := zoneOf(t, `a.test. 60 IN TXT "v=spf1 -all"`, `a.test. 60 IN A 192.0.2.1`)
	answer := dnstest.Answer(zone, map[string]bool{"broken.test.": true})
	addr := dnstest.ServeFunc(t, func(w dns.ResponseWriter, req *dns.Msg) {
		if strings.EqualFold(req.Question[0].Name, "silent.test.") {
			return // never answers: the lookup times out
		}
		answer(w, req)
	})
	rec := NewRecorder(newTestResolver(t, addr, 200*time.Millisecond))
	ctx := context.Background()
	rec.LookupTXT(ctx, "a.test")
	rec.LookupTXT(ctx, "broken.test")
	rec.LookupTXT(ctx, "silent.test")
	rec.LookupTXT(ctx, "nosuch.test")
	rec.LookupMX(ctx, "a.test") // NODATA
	rec.LookupNetIP(ctx, "ip4", "a.test")
	got := map[string]string{}
	for _, lk := range rec.Log().Lookups {
		got[lk.Key()] = lk.Error + strings.Join(lk.Values, ",")
	}
	want := map[string]string{
		"a.test TXT": "v=spf1 -all", "broken.test TXT": "SERVFAIL", "silent.test TXT": "TIMEOUT",
		"nosuch.test TXT": "NXDOMAIN", "a.test MX": "NXDOMAIN", "a.test A": "192.0.2.1",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("recorded %v\nwant     %v", got, want)
	}
}

// TestRecorderBounds: at most maxRecorded lookups, whole values within the
// byte budgets, and Rewind keeps what came before Mark.
func TestRecorderBounds(t *testing.T) {
	big := strings.Repeat("x", 1000)
	recs := map[string][]string{"big.test TXT": {big, big, big, big, big, big, big, big, big, big}}
	for i := range 150 {
		recs[fmt.Sprintf("n%d.test TXT", i)] = []string{fmt.Sprint(i)}
	}
	rec := NewRecorder(NewStaticResolver(recs))
	ctx := context.Background()
	rec.LookupTXT(ctx, "big.test")
	rec.Mark()
	for i := range 150 {
		rec.LookupTXT(ctx, fmt.Sprintf("n%d.test", i))
	}
	rec.LookupTXT(ctx, "n3.test") // again: one lookup, not a drop
	log := rec.Log()
	if len(log.Lookups) != maxRecorded || log.Dropped != 51 {
		t.Errorf("%d recorded, %d dropped; want %d and 51", len(log.Lookups), log.Dropped, maxRecorded)
	}
	first := log.Lookups[0]
	if first.Key() != "big.test TXT" || len(first.Values) != 8 || !first.Truncated || first.Values[0] != big {
		t.Errorf("big.test: %d values, truncated %v", len(first.Values), first.Truncated)
	}
	var b strings.Builder
	log.WriteYAML(&b, "")
	if !strings.Contains(b.String(), "# 51 more lookups not recorded") || !strings.Contains(b.String(), "# answers left out") {
		t.Errorf("rendering does not say what was left out:\n%s", b.String())
	}

	rec.Rewind()
	log = rec.Log()
	if len(log.Lookups) != 1 || log.Dropped != 0 || log.Lookups[0].Key() != "big.test TXT" {
		t.Errorf("after Rewind: %+v", log)
	}
	rec.LookupTXT(ctx, "n7.test")
	if log = rec.Log(); len(log.Lookups) != 2 || log.Lookups[1].Values[0] != "7" {
		t.Errorf("after Rewind and a lookup: %+v", log)
	}
	rec.Reset()
	if log = rec.Log(); log != nil {
		t.Errorf("after Reset: %+v", log)
	}

	// The budget of all lookups: 9 lookups of 8 KB fill 64 KB, the
	// next keeps no value.
	huge := strings.Repeat("y", 8<<10)
	recs = map[string][]string{}
	for i := range 10 {
		recs[fmt.Sprintf("h%d.test TXT", i)] = []string{huge}
	}
	rec = NewRecorder(NewStaticResolver(recs))
	for i := range 10 {
		rec.LookupTXT(ctx, fmt.Sprintf("h%d.test", i))
	}
	kept := 0
	for _, lk := range rec.Log().Lookups {
		kept += len(lk.Values)
		if len(lk.Values) == 0 && !lk.Truncated {
			t.Errorf("%s: values left out without saying so", lk.Key())
		}
	}
	if kept != 8 {
		t.Errorf("%d values of 8 KB kept, want 8 (64 KB)", kept)
	}
}

// TestRecorderConcurrent: checks look up side by side (run with -race);
// every distinct lookup is recorded once, whatever the interleaving.
func TestRecorderConcurrent(t *testing.T) {
	recs := map[string][]string{}
	for i := range 40 {
		recs[fmt.Sprintf("n%d.test TXT", i)] = []string{fmt.Sprint(i)}
		recs[fmt.Sprintf("n%d.test A", i)] = []string{fmt.Sprintf("192.0.2.%d", i)}
	}
	rec := NewRecorder(NewStaticResolver(recs))
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 40 {
				n := fmt.Sprintf("n%d.test", (i+g)%40)
				rec.LookupTXT(ctx, n)
				rec.LookupNetIP(ctx, "ip4", n)
				rec.LookupIPAddr(ctx, n)
				if i%10 == 0 {
					rec.Log()
				}
			}
		})
	}
	wg.Wait()
	log := rec.Log()
	// 40 TXT, 40 A; AAAA is NODATA beside the A answers: not recorded.
	if len(log.Lookups) != 80 || log.Dropped != 0 {
		t.Fatalf("%d lookups recorded, %d dropped; want 80", len(log.Lookups), log.Dropped)
	}
	seen := map[string]bool{}
	for _, lk := range log.Lookups {
		if seen[lk.Key()] || len(lk.Values) != 1 {
			t.Errorf("%s: twice, or values %v", lk.Key(), lk.Values)
		}
		seen[lk.Key()] = true
	}
}
