package server

import (
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/sluicemail/sluice/metrics"
)

// scrapeMetrics GETs /metrics from the relay's handler and returns each
// series' value by "name{k=v,...}" (labels sorted), histograms by their
// _count.
func scrapeMetrics(t *testing.T, r *relay) map[string]float64 {
	t.Helper()
	ts := httptest.NewServer(r.srv.MetricsHandler())
	defer ts.Close()
	resp, err := ts.Client().Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics: %s, %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.Metric {
			var ls []string
			for _, l := range m.Label {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(ls)
			key := name + "{" + strings.Join(ls, ",") + "}"
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				out[key] = m.Counter.GetValue()
			case dto.MetricType_GAUGE:
				out[key] = m.Gauge.GetValue()
			case dto.MetricType_HISTOGRAM:
				out[key] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return out
}

// TestMetricsAfterKnownTraffic runs known traffic through the relay over
// real SMTP sessions on loopback, scrapes /metrics and checks the values:
// 3 accepted messages, 2 recipients refused by a rule at RCPT, 1 message
// rejected by the thresholds, 1 held, 3 deliveries.
func TestMetricsAfterKnownTraffic(t *testing.T) {
	k := newSink(t)
	r := startRelay(t, testConfig(t, k), testRules)
	if _, ok := r.srv.dns.(*metrics.Resolver); !ok {
		t.Errorf("the checks' resolver is %T, not the instrumented one", r.srv.dns)
	}

	ops := r.dial(t, "submission")
	login(t, ops, "ops")
	if _, err := send(ops, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", "first")); err != nil {
		t.Fatal(err)
	}
	_, err := send(ops, "x@acme.test", []string{"bob@example.org", "noreply@example.org", "no-reply@example.org"},
		message("x@acme.test", "bob@example.org", "second"))
	if code, _, _ := smtpCode(err); code != 550 {
		t.Fatalf("role recipients: %v, want 550", err)
	}
	billing := r.dial(t, "submission")
	login(t, billing, "billing")
	_, err = send(billing, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", "CHEAP VIAGRA FOR EVERYONE"))
	if code, _, _ := smtpCode(err); code != 554 {
		t.Fatalf("score 15: %v, want 554", err)
	}
	if _, err := send(billing, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", "[review] hold me")); err != nil {
		t.Fatal(err)
	}
	if _, err := send(billing, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", "third")); err != nil {
		t.Fatal(err)
	}
	k.wait(t, 3, 10*time.Second)

	// The relay records a result after the sink has it: wait for the
	// queue to empty.
	var got map[string]float64
	deadline := time.Now().Add(10 * time.Second)
	for {
		got = scrapeMetrics(t, r)
		if got[`sluice_deliveries_total{result=delivered}`] == 3 && got[`sluice_queue_messages{state=queued}`] == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// -1: present and above zero; 0: absent or zero.
	want := map[string]float64{
		`sluice_decisions_total{action=accept}`:                3,
		`sluice_decisions_total{action=hold}`:                  1,
		`sluice_decisions_total{action=reject}`:                3,
		`sluice_decisions_total{action=tempfail}`:              0,
		`sluice_refusals_total{action=reject,phase=rcpt}`:      2,
		`sluice_refusals_total{action=reject,phase=data}`:      1,
		`sluice_rule_hits_total{action=block,rule=role}`:       2,
		`sluice_rule_hits_total{action=score,rule=spammy}`:     1,
		`sluice_rule_hits_total{action=score,rule=caps}`:       1,
		`sluice_rule_hits_total{action=hold,rule=review}`:      1,
		`sluice_rule_hits_total{action=block,rule=acl}`:        0,
		`sluice_rule_hits_total{action=score,rule=tagme}`:      0,
		`sluice_deliveries_total{result=delivered}`:            3,
		`sluice_deliveries_total{result=deferred}`:             0,
		`sluice_deliveries_total{result=failed}`:               0,
		`sluice_delivery_latency_seconds{}`:                    3,
		`sluice_queue_messages{state=queued}`:                  0,
		`sluice_queue_messages{state=deferred}`:                0,
		`sluice_queue_messages{state=held}`:                    1,
		`sluice_spool_bytes{}`:                                 -1,
		`sluice_rules_last_reload_success{}`:                   1,
		`sluice_rules_last_reload_success_timestamp_seconds{}`: -1,
		`sluice_rules_reloads_total{result=success}`:           0,
		`sluice_sessions_total{mode=submission}`:               2,
		`sluice_sessions_open{mode=submission}`:                2,
		`sluice_sessions_total{mode=plain}`:                    0,
		`sluice_store_errors_total{op=read}`:                   0,
		`sluice_store_errors_total{op=write}`:                  0,
		`sluice_connections_refused_total{limit=per_ip}`:       0,
	}
	for key, w := range want {
		g, ok := got[key]
		switch {
		case w < 0:
			if !ok || g <= 0 {
				t.Errorf("%s = %v (present %v), want > 0", key, g, ok)
			}
		case g != w:
			t.Errorf("%s = %v, want %v", key, g, w)
		}
	}
	if ts := got[`sluice_rules_last_reload_success_timestamp_seconds{}`]; time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("last good reload at %v", time.Unix(int64(ts), 0))
	}
	// No label carries an address, a user or a domain.
	for key := range got {
		for _, bad := range []string{"@", "acme", "example.org", "billing", "ops", "127.0.0.1"} {
			if strings.HasPrefix(key, "sluice_") && strings.Contains(key, bad) {
				t.Errorf("series %s carries %q", key, bad)
			}
		}
	}

	ops.Quit()
	billing.Quit()
	deadline = time.Now().Add(5 * time.Second)
	for scrapeMetrics(t, r)[`sluice_sessions_open{mode=submission}`] != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := scrapeMetrics(t, r)[`sluice_sessions_open{mode=submission}`]; n != 0 {
		t.Errorf("sessions open after QUIT: %v", n)
	}

	problems, err := testutil.GatherAndLint(r.srv.Metrics().Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// TestMetricsOnWebListener: /metrics is served on web.admin_listen when it
// is set, and then not on web.listen (SPEC 8).
func TestMetricsOnWebListener(t *testing.T) {
	k := newSink(t)
	cfg := testConfig(t, k)
	pub, admin := freePort(t), freePort(t)
	cfg.Web = WebConfig{Listen: pub, AdminListen: admin}
	r := startRelay(t, cfg, testRules)
	c := r.dial(t, "submission")
	login(t, c, "ops")
	if _, err := send(c, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", "hello")); err != nil {
		t.Fatal(err)
	}
	code, body := get(t, "http://"+admin+"/metrics")
	if code != 200 || !strings.Contains(body, "sluice_decisions_total{action=\"accept\"} 1\n") {
		t.Errorf("GET /metrics on web.admin_listen: %d\n%s", code, body)
	}
	if code, _ := get(t, "http://"+pub+"/metrics"); code == 200 {
		t.Errorf("GET /metrics on web.listen with an admin listener: %d, want it refused", code)
	}
}
