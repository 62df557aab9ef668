package server

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"go.yaml.in/yaml/v3"

	"github.com/sluicemail/sluice/internal/dnstest"
	"github.com/sluicemail/sluice/ruletest"
)

// TestDecisionRecordAuth: the decision record of a message refused by
// DMARC holds the SPF, DKIM and DMARC results and the DNS answers the checks
// got from a real DNS server on 127.0.0.1 (those of the connection's DNSBL
// lookup too, not those of the connection's previous message); fed back
// as context.dns, the answers give the same verdict offline.
func TestDecisionRecordAuth(t *testing.T) {
	rr := func(s string) dns.RR { return dnstest.RR(t, s) }
	zone := map[string][]dns.RR{
		"sender.test.":        {rr(`sender.test. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"`)},
		"forged.test.":        {rr(`forged.test. 60 IN TXT "v=spf1 ip4:192.0.2.1 -all"`)},
		"_dmarc.forged.test.": {rr(`_dmarc.forged.test. 60 IN TXT "v=DMARC1; p=reject"`)},
		"1.0.0.127.bl.test.":  {rr(`1.0.0.127.bl.test. 60 IN A 127.0.0.2`)},
	}
	k := newSink(t)
	cfg := testConfig(t, k)
	rules := authRules + `  - listed: '"127.0.0.2" in dnsbl("bl.test", client_ip) => +1'` + "\n"
	r := startRelayWith(t, cfg, rules, Options{DNS: dnstest.Serve(t, zone, nil)})

	c := r.dial(t, "plain")
	if _, err := send(c, "a@sender.test", []string{"box@local.test"}, message("a@sender.test", "box@local.test", "first")); err != nil {
		t.Fatal(err)
	}
	forged := message("x@forged.test", "box@local.test", "forged")
	_, err := send(c, "x@forged.test", []string{"box@local.test"}, forged)
	code, _, text := smtpCode(err)
	id := strings.Trim(idInReply.FindString(text), "[]")
	if code != 550 || id == "" {
		t.Fatalf("mail disowned by p=reject: %v", err)
	}
	a, ok := DialAdmin(AdminSocket(cfg))
	if !ok {
		t.Fatal("no admin socket")
	}
	d, err := a.Decision(context.Background(), id)
	if err != nil || d == nil {
		t.Fatalf("decision %s: %v", id, err)
	}

	au := d.Auth
	if au == nil || au.SPF == nil || au.DKIM == nil || au.DMARC == nil {
		t.Fatalf("authentication results: %+v", au)
	}
	if au.SPF.Result != "fail" || au.SPF.Domain != "forged.test" || au.SPF.Detail == "" {
		t.Errorf("spf: %+v", au.SPF)
	}
	if au.DKIM.Result != "none" || len(au.DKIM.Signatures) != 0 {
		t.Errorf("dkim: %+v", au.DKIM)
	}
	if au.DMARC.Result != "fail" || au.DMARC.Policy != "reject" || au.DMARC.Domain != "forged.test" || au.DMARC.Detail == "" {
		t.Errorf("dmarc: %+v", au.DMARC)
	}
	if au.ARC != nil {
		t.Errorf("arc, which no rule reads, was checked: %+v", au.ARC)
	}
	if d.Outbound == nil || *d.Outbound {
		t.Errorf("outbound: %v", d.Outbound)
	}

	if d.DNS == nil {
		t.Fatal("no DNS answers in the record")
	}
	recs := d.DNS.Records()
	for key, want := range map[string][]string{
		"forged.test TXT":        {"v=spf1 ip4:192.0.2.1 -all"},
		"_dmarc.forged.test TXT": {"v=DMARC1; p=reject"},
		"1.0.0.127.bl.test A":    {"127.0.0.2"},
	} {
		if !slices.Equal(recs[key], want) {
			t.Errorf("dns %q: %q, want %q (all: %v)", key, recs[key], want, recs)
		}
	}
	if _, ok := recs["sender.test TXT"]; ok {
		t.Errorf("the previous message's lookups are in the record: %v", recs)
	}

	// Replayed offline: the record's context and the message give the
	// same verdict, by the same rules.
	var b strings.Builder
	b.WriteString("client_ip: " + d.IP + "\nhelo: " + d.Helo + "\nmail_from: " + d.From + "\nrcpts: [" + strings.Join(d.Rcpts, ", ") + "]\noutbound: false\ndns:\n")
	d.DNS.WriteYAML(&b, "  ")
	var cx ruletest.Context
	if err := yaml.Unmarshal([]byte(b.String()), &cx); err != nil {
		t.Fatalf("the record's context does not parse: %v\n%s", err, b.String())
	}
	res := ruletest.Run(context.Background(), r.srv.rules.Current(), &ruletest.Case{Name: "replay", Message: []byte(forged), Context: cx})
	v := res.Verdict
	if v == nil || v.Action != d.Action || v.Code != d.Code || v.Enhanced != d.Enhanced || v.Rule != d.Rule || v.Score != d.Score {
		t.Fatalf("replayed verdict %+v (%v)\nrecorded %+v\ncontext:\n%s", v, res.Failures, d, b.String())
	}
	var replayed, recorded []string
	for _, h := range v.Hits {
		replayed = append(replayed, h.Rule)
	}
	for _, h := range d.Fired {
		recorded = append(recorded, h.Rule)
	}
	if !slices.Equal(replayed, recorded) || !slices.Contains(recorded, "listed") {
		t.Errorf("rules fired replayed %v, recorded %v", replayed, recorded)
	}
}
