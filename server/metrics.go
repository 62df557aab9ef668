package server

import (
	"net/http"
	"slices"

	"github.com/sluicemail/sluice/metrics"
	"github.com/sluicemail/sluice/queue"
)

// MetricsHandler serves the relay's metrics (SPEC 8: GET /metrics), for the
// web listener to mount.
func (s *Server) MetricsHandler() http.Handler { return s.metrics.Handler() }

// Metrics are the relay's metrics.
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }

// watchState points the scrape-time gauges at the spool and the rules.
func (s *Server) watchState() {
	s.metrics.WatchSpool(s.spoolState)
	s.metrics.WatchRules(func() metrics.RulesState {
		st := s.rules.Status()
		return metrics.RulesState{LastReloadOK: st.OK, Reloads: st.Reloads, Failures: st.Failures, RuleErrors: s.rules.Current().RuleErrors()}
	})
}

// spoolState counts the spool's messages by state from their envelopes. A
// message removed between the listing and the read is simply not counted.
func (s *Server) spoolState() (metrics.SpoolState, error) {
	var st metrics.SpoolState
	for _, area := range []string{queue.AreaQueue, queue.AreaHold} {
		ids, err := s.spool.List(area)
		if err != nil {
			return st, err
		}
		for _, id := range ids {
			env, err := s.spool.Envelope(area, id)
			if err != nil {
				continue
			}
			st.Bytes += int64(env.Size)
			switch {
			case area == queue.AreaHold:
				st.Held++
			case env.Attempts > 0:
				st.Deferred++
			default:
				st.Queued++
			}
		}
	}
	return st, nil
}

// countDecision counts a decision, its refusal and the rules that fired in
// it: recordDecision, which every decision goes through, calls it. A hit
// is counted in the verdict of the message or recipient it belongs to, once:
// a refusal at RCPT counts the refused recipient's hits, the end of DATA
// the message's hits and its accepted recipients' (the refused ones' were
// counted at RCPT).
func (s *Server) countDecision(d Decision) {
	s.metrics.Decision(d.Phase, d.Action)
	for _, h := range d.Fired {
		if d.Phase == "rcpt" {
			if len(d.Rcpts) == 0 || h.Rcpt != d.Rcpts[0] {
				continue
			}
		} else if h.Rcpt != "" && !slices.Contains(d.Rcpts, h.Rcpt) {
			continue
		}
		s.metrics.RuleHit(h.Rule, h.Action)
	}
}
