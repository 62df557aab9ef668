// Package metrics owns the relay's Prometheus metrics: their names, labels
// and registry, and the handler that serves them at /metrics (SPEC 8).
package metrics

import (
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is one relay's metrics, in a registry of its own: two relays in
// one process (tests) never share a counter.
//
// Labels hold only bounded values: actions, phases, results, listener
// modes, lookup types and rule names (which come from the rules
// directory); never an address, a user or a domain.
type Metrics struct {
	reg *prometheus.Registry

	decisions  *prometheus.CounterVec
	ruleHits   *prometheus.CounterVec
	refusals   *prometheus.CounterVec
	deliveries *prometheus.CounterVec
	delivery   prometheus.Histogram

	sessionsOpen  *prometheus.GaugeVec
	sessionsTotal *prometheus.CounterVec
	connRefused   *prometheus.CounterVec

	storeErrors *prometheus.CounterVec
	learned     *prometheus.CounterVec

	dnsLookups  *prometheus.CounterVec
	dnsDuration *prometheus.HistogramVec

	lastGoodReload prometheus.Gauge
	// spoolErrors counts scrapes that could not read the spool; the state
	// collector reports it itself, so a scrape always shows its own failure
	// (collectors are gathered concurrently).
	spoolErrors atomic.Uint64

	spool atomic.Pointer[func() (SpoolState, error)]
	rules atomic.Pointer[func() RulesState]
}

// SpoolState is what the spool holds at scrape time.
type SpoolState struct {
	Queued   int   // waiting for their first delivery attempt
	Deferred int   // tried at least once, waiting for the next attempt
	Held     int   // in the holding area
	Bytes    int64 // message bytes in the queue and the holding area
}

// RulesState is the rules reloader's status at scrape time.
type RulesState struct {
	LastReloadOK bool
	Reloads      int // successful swaps since start
	Failures     int // rejected sets since start
	// RuleErrors is how often each rule's expression failed at run time
	// since its set was loaded (engine.RuleSet.RuleErrors).
	RuleErrors map[string]uint64
}

// New returns the metrics with an empty registry of their own, the Go
// runtime and process collectors included.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_decisions_total",
		Help: "Decisions taken, by verdict action (accept, tag, hold, tempfail, reject).",
	}, []string{"action"})
	m.ruleHits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_rule_hits_total",
		Help: "Verdicts (of a message, or of a recipient refused at RCPT) in which a rule fired, by rule and the kind of its action (score, block, hold, accept, list).",
	}, []string{"rule", "action"})
	m.refusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_refusals_total",
		Help: "Refusals sent to SMTP clients, by the phase they were taken in and their action (reject, tempfail).",
	}, []string{"phase", "action"})
	m.deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_deliveries_total",
		Help: "Delivery attempts per recipient, by result (delivered, deferred, failed).",
	}, []string{"result"})
	m.delivery = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "sluice_delivery_latency_seconds",
		Help: "Time from acceptance to delivery of a recipient.",
		// Seconds for a next hop that answers, days for one that is down.
		Buckets: []float64{0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 5 * 86400},
	})
	m.sessionsOpen = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_sessions_open",
		Help: "SMTP connections open now, by listener mode.",
	}, []string{"mode"})
	m.sessionsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_sessions_total",
		Help: "SMTP connections admitted, by listener mode.",
	}, []string{"mode"})
	m.connRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_connections_refused_total",
		Help: "Connections refused before the greeting by a connection limit, by limit (total, per_ip).",
	}, []string{"limit"})
	m.storeErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_store_errors_total",
		Help: "Store operations that failed, by operation (read, write).",
	}, []string{"op"})
	m.learned = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_classifier_learned_total",
		Help: "Messages given to the classifier to learn, by source (autolearn, console, cli) and result (learned, known, moved, forgotten, unknown, dropped: autolearn's queue was full, too_big: over autolearn's 1 MiB, error).",
	}, []string{"source", "result"})
	m.dnsLookups = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_dns_lookups_total",
		Help: "DNS lookups of the authentication checks, by record type and result (ok, notfound, error); cache hits included.",
	}, []string{"type", "result"})
	m.dnsDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sluice_dns_lookup_duration_seconds",
		Help:    "Duration of the DNS lookups of the authentication checks, by record type.",
		Buckets: []float64{0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
	}, []string{"type"})
	m.lastGoodReload = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "sluice_rules_last_reload_success_timestamp_seconds",
		Help: "When the live rule set was loaded (Unix time).",
	})
	m.reg.MustRegister(m.decisions, m.ruleHits, m.refusals, m.deliveries, m.delivery,
		m.sessionsOpen, m.sessionsTotal, m.connRefused, m.storeErrors, m.learned, m.dnsLookups, m.dnsDuration,
		m.lastGoodReload, stateCollector{m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is the registry the metrics are in, for tests and for a caller
// adding metrics of its own.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// WatchSpool sets where the queue and spool gauges are read at scrape time.
func (m *Metrics) WatchSpool(f func() (SpoolState, error)) { m.spool.Store(&f) }

// WatchRules sets where the rules gauges and counters are read at scrape
// time.
func (m *Metrics) WatchRules(f func() RulesState) { m.rules.Store(&f) }

// Decision counts a decision, and a refusal when its action refuses.
func (m *Metrics) Decision(phase, action string) {
	if m == nil {
		return
	}
	m.decisions.WithLabelValues(action).Inc()
	if action == "reject" || action == "tempfail" {
		m.refusals.WithLabelValues(phase, action).Inc()
	}
}

// RuleHit counts a rule that fired in a decision; action is the rule's
// action as written (block 550 ..., +3, list ...), of which only the kind
// becomes a label.
func (m *Metrics) RuleHit(rule, action string) {
	if m == nil {
		return
	}
	m.ruleHits.WithLabelValues(rule, ActionKind(action)).Inc()
}

// ActionKind is the kind of a rule's action as written: score for a score
// (+3, -1.5), else its first word (block, hold, accept, list).
func ActionKind(action string) string {
	action = strings.TrimSpace(action)
	if action == "" {
		return "none"
	}
	if c := action[0]; c == '+' || c == '-' || c == '.' || c >= '0' && c <= '9' {
		return "score"
	}
	verb, _, _ := strings.Cut(action, " ")
	switch verb = strings.ToLower(verb); verb {
	case "block", "hold", "accept", "list":
		return verb
	}
	return "other" // keeps the label set bounded whatever the engine writes
}

// Delivery counts one recipient's delivery attempt; result is delivered,
// deferred or failed. For a delivered recipient, since is how long ago the
// message was accepted.
func (m *Metrics) Delivery(result string, since time.Duration) {
	if m == nil {
		return
	}
	m.deliveries.WithLabelValues(result).Inc()
	if result == "delivered" {
		m.delivery.Observe(since.Seconds())
	}
}

// SessionOpened counts a connection admitted on a listener of mode.
func (m *Metrics) SessionOpened(mode string) {
	if m == nil {
		return
	}
	m.sessionsTotal.WithLabelValues(mode).Inc()
	m.sessionsOpen.WithLabelValues(mode).Inc()
}

// SessionClosed counts a connection's end.
func (m *Metrics) SessionClosed(mode string) {
	if m == nil {
		return
	}
	m.sessionsOpen.WithLabelValues(mode).Dec()
}

// ConnectionRefused counts a connection refused at a limit (total, per_ip).
func (m *Metrics) ConnectionRefused(limit string) {
	if m == nil {
		return
	}
	m.connRefused.WithLabelValues(limit).Inc()
}

// StoreError counts a failed store operation (read or write).
func (m *Metrics) StoreError(op string) {
	if m == nil {
		return
	}
	m.storeErrors.WithLabelValues(op).Inc()
}

// Learned counts a message given to the classifier.
func (m *Metrics) Learned(source, result string) {
	if m == nil {
		return
	}
	m.learned.WithLabelValues(source, result).Inc()
}

// RulesLoaded records when a rule set went live.
func (m *Metrics) RulesLoaded(at time.Time) {
	if m == nil {
		return
	}
	m.lastGoodReload.Set(float64(at.UnixNano()) / 1e9)
}

// stateCollector reads the spool and the reloader when scraped, so the
// gauges say what is there, never what a hand-kept count drifted to.
type stateCollector struct{ m *Metrics }

var (
	queueDesc = prometheus.NewDesc("sluice_queue_messages",
		"Messages in the spool, by state (queued: not tried yet, deferred: waiting for a retry, held: in the holding area).", []string{"state"}, nil)
	spoolBytesDesc = prometheus.NewDesc("sluice_spool_bytes",
		"Message bytes in the spool (queue and holding area).", nil, nil)
	reloadOKDesc = prometheus.NewDesc("sluice_rules_last_reload_success",
		"Whether the last reload of the rules directory succeeded (1) or was rejected, keeping the last good set (0).", nil, nil)
	reloadsDesc = prometheus.NewDesc("sluice_rules_reloads_total",
		"Reloads of the rules directory since start, by result (success, failure).", []string{"result"}, nil)
	spoolErrorsDesc = prometheus.NewDesc("sluice_spool_read_errors_total",
		"Scrapes that could not read the spool; the queue gauges are left out of those.", nil, nil)
	ruleErrorsDesc = prometheus.NewDesc("sluice_rule_errors_total",
		"Evaluations in which a rule's expression failed at run time, since its rule set was loaded, by rule.", []string{"rule"}, nil)
)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{queueDesc, spoolBytesDesc, spoolErrorsDesc, reloadOKDesc, reloadsDesc, ruleErrorsDesc} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	if f := c.m.spool.Load(); f != nil {
		st, err := (*f)()
		if err == nil {
			ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(st.Queued), "queued")
			ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(st.Deferred), "deferred")
			ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(st.Held), "held")
			ch <- prometheus.MustNewConstMetric(spoolBytesDesc, prometheus.GaugeValue, float64(st.Bytes))
		} else {
			c.m.spoolErrors.Add(1)
		}
	}
	ch <- prometheus.MustNewConstMetric(spoolErrorsDesc, prometheus.CounterValue, float64(c.m.spoolErrors.Load()))
	if f := c.m.rules.Load(); f != nil {
		st := (*f)()
		ok := 0.0
		if st.LastReloadOK {
			ok = 1
		}
		ch <- prometheus.MustNewConstMetric(reloadOKDesc, prometheus.GaugeValue, ok)
		ch <- prometheus.MustNewConstMetric(reloadsDesc, prometheus.CounterValue, float64(st.Reloads), "success")
		ch <- prometheus.MustNewConstMetric(reloadsDesc, prometheus.CounterValue, float64(st.Failures), "failure")
		for rule, n := range st.RuleErrors {
			ch <- prometheus.MustNewConstMetric(ruleErrorsDesc, prometheus.CounterValue, float64(n), rule)
		}
	}
}
