package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sluicemail/sluice/mailauth"
)

// tableDNS answers from a table: a name absent from it does not exist, and
// "slow." times out.
type tableDNS map[string][]string

func (t tableDNS) LookupTXT(ctx context.Context, name string) ([]string, error) {
	if name == "slow." {
		return nil, &net.DNSError{Err: "i/o timeout", Name: name, IsTimeout: true, IsTemporary: true}
	}
	if v, ok := t[name]; ok {
		return v, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (t tableDNS) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	if _, ok := t[name]; ok {
		return []*net.MX{{Host: "mx." + name, Pref: 10}}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (t tableDNS) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	return []net.IPAddr{{IP: net.IPv4(192, 0, 2, 1)}}, nil
}

func (t tableDNS) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	return nil, errors.New("server misbehaving")
}

// TestResolverCountsLookups: each lookup is counted once by type and
// result, timed, and passed through unchanged.
func TestResolverCountsLookups(t *testing.T) {
	m := New()
	var r mailauth.Resolver = m.WrapResolver(tableDNS{"example.test.": {"v=spf1 -all"}})
	ctx := context.Background()
	txt, err := r.LookupTXT(ctx, "example.test.")
	if err != nil || len(txt) != 1 || txt[0] != "v=spf1 -all" {
		t.Fatalf("TXT = %q, %v", txt, err)
	}
	if _, err := r.LookupTXT(ctx, "missing.test."); !mailauth.IsNotFound(err) {
		t.Fatalf("missing TXT: %v, want not found", err)
	}
	if _, err := r.LookupTXT(ctx, "slow."); !mailauth.IsTemporary(err) {
		t.Fatalf("slow TXT: %v, want a temporary error", err)
	}
	if _, err := r.LookupMX(ctx, "example.test."); err != nil {
		t.Fatal(err)
	}
	r.LookupIPAddr(ctx, "mx.example.test.")
	r.LookupIPAddr(ctx, "mx.example.test.")
	r.LookupAddr(ctx, "192.0.2.1")

	for _, c := range []struct {
		typ, result string
		want        float64
	}{
		{"TXT", "ok", 1}, {"TXT", "notfound", 1}, {"TXT", "error", 1},
		{"MX", "ok", 1}, {"MX", "notfound", 0},
		{"A/AAAA", "ok", 2}, {"PTR", "error", 1},
	} {
		if got := testutil.ToFloat64(m.dnsLookups.WithLabelValues(c.typ, c.result)); got != c.want {
			t.Errorf("sluice_dns_lookups_total{type=%q,result=%q} = %v, want %v", c.typ, c.result, got, c.want)
		}
	}
	// The histogram saw every lookup: 3 TXT, 1 MX, 2 A/AAAA, 1 PTR.
	if n := testutil.CollectAndCount(m.dnsDuration); n != 4 {
		t.Errorf("duration series = %d, want 4 (one per type)", n)
	}
	out := scrape(t, m)
	for _, line := range []string{
		`sluice_dns_lookup_duration_seconds_count{type="TXT"} 3`,
		`sluice_dns_lookup_duration_seconds_count{type="A/AAAA"} 2`,
	} {
		if !strings.Contains(out, line+"\n") {
			t.Errorf("scrape lacks %q", line)
		}
	}
	if strings.Contains(out, "example.test") {
		t.Error("a looked-up name reached a label")
	}
	lint(t, m)
}

func TestWrapResolverNil(t *testing.T) {
	var m *Metrics
	d := tableDNS{}
	if got := m.WrapResolver(d); got == nil {
		t.Fatal("nil metrics dropped the resolver")
	}
	if New().WrapResolver(nil) != nil {
		t.Fatal("a nil resolver became a wrapper")
	}
}

// TestStateAtScrape: the queue and rules metrics are read from their
// sources at each scrape, not kept.
func TestStateAtScrape(t *testing.T) {
	m := New()
	st := SpoolState{Queued: 2, Deferred: 1, Held: 3, Bytes: 4096}
	m.WatchSpool(func() (SpoolState, error) { return st, nil })
	rs := RulesState{LastReloadOK: true, Reloads: 2, Failures: 1, RuleErrors: map[string]uint64{"broken": 5}}
	m.WatchRules(func() RulesState { return rs })
	m.RulesLoaded(time.Unix(1700000000, 0))
	out := scrape(t, m)
	for _, line := range []string{
		`sluice_queue_messages{state="queued"} 2`,
		`sluice_queue_messages{state="deferred"} 1`,
		`sluice_queue_messages{state="held"} 3`,
		`sluice_spool_bytes 4096`,
		`sluice_rules_last_reload_success 1`,
		`sluice_rules_reloads_total{result="success"} 2`,
		`sluice_rules_reloads_total{result="failure"} 1`,
		`sluice_rule_errors_total{rule="broken"} 5`,
		`sluice_rules_last_reload_success_timestamp_seconds 1.7e+09`,
	} {
		if !strings.Contains(out, line+"\n") {
			t.Errorf("scrape lacks %q", line)
		}
	}
	st.Queued, rs.LastReloadOK = 0, false
	out = scrape(t, m)
	for _, line := range []string{`sluice_queue_messages{state="queued"} 0`, `sluice_rules_last_reload_success 0`} {
		if !strings.Contains(out, line+"\n") {
			t.Errorf("second scrape lacks %q", line)
		}
	}
	m.WatchSpool(func() (SpoolState, error) { return SpoolState{}, errors.New("disk gone") })
	out = scrape(t, m)
	if strings.Contains(out, "sluice_queue_messages{") || !strings.Contains(out, "sluice_spool_read_errors_total 1\n") {
		t.Errorf("an unreadable spool: want no queue gauges and one read error, got\n%s", out)
	}
	lint(t, m)
}

func TestActionKind(t *testing.T) {
	for in, want := range map[string]string{
		"+3": "score", "-1.5": "score", "block 550 5.7.1 \"[ACL] Blocked\"": "block",
		"hold \"review\"": "hold", "accept": "accept", "list bad client_ip for 1d": "list", "": "none", "weird": "other",
	} {
		if got := ActionKind(in); got != want {
			t.Errorf("ActionKind(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestDecisionCounts: refusals are counted by phase besides the decision.
func TestDecisionCounts(t *testing.T) {
	m := New()
	m.Decision("rcpt", "reject")
	m.Decision("data", "accept")
	m.Decision("data", "tempfail")
	m.RuleHit("acl", `block 550 5.7.1 "x"`)
	m.Delivery("delivered", 2*time.Second)
	m.Delivery("deferred", 0)
	for _, c := range []struct {
		got  float64
		want float64
		name string
	}{
		{testutil.ToFloat64(m.decisions.WithLabelValues("reject")), 1, "decisions reject"},
		{testutil.ToFloat64(m.decisions.WithLabelValues("accept")), 1, "decisions accept"},
		{testutil.ToFloat64(m.refusals.WithLabelValues("rcpt", "reject")), 1, "refusals rcpt"},
		{testutil.ToFloat64(m.refusals.WithLabelValues("data", "tempfail")), 1, "refusals data"},
		{testutil.ToFloat64(m.ruleHits.WithLabelValues("acl", "block")), 1, "hits acl"},
		{testutil.ToFloat64(m.deliveries.WithLabelValues("delivered")), 1, "delivered"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if n := testutil.CollectAndCount(m.refusals); n != 2 {
		t.Errorf("refusal series = %d, want 2 (accept is no refusal)", n)
	}
	lint(t, m)
}

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	ts := httptest.NewServer(m.Handler())
	defer ts.Close()
	resp, err := ts.Client().Get(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("scrape: %d %v", resp.StatusCode, err)
	}
	return string(b)
}

func lint(t *testing.T, m *Metrics) {
	t.Helper()
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
