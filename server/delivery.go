package server

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sluicemail/sluice/queue"
	"github.com/sluicemail/sluice/store"
)

// Delivery itself (the queue's scheduling, SMTP sessions to the next hop,
// local folders, bounces) is package queue's; the relay gives it the live
// configuration and hears of each attempt's outcome (deliveryRelay).

// commitMessage stands between a verdict that accepts a message and its 250: the
// message is spooled, counted (hourly_sent and every count() the rules
// read), then queued. A message the store could not count gets no 250
// under store.on_failure tempfail (issue 7, item 13): it is taken out of
// the spool again, before delivery could see it (it is claimed), and the
// client is told 451 4.3.0 to send it again. The count comes after the
// spooling so that a message the spool refuses is never charged.
//
// With local delivery (delivery.mode local) a message for the queue is
// counted first and then written straight into its recipients' folders
// (queue.Deliverer.DeliverNow): a store that cannot count it refuses it
// before any mailbox sees it; only recipients whose folder failed are
// spooled, to be retried. A disk that takes neither the folder nor the
// spool then refuses a message already counted: the one case where a
// refused message is charged.
func (s *Server) commitMessage(ci *connInfo, area string, env *queue.Envelope, msg []byte, rcpts []string) error {
	env.Inbound = !ci.in.Authenticated && !s.cfg.Load().mayRelayFrom(ci.ip)
	if area == queue.AreaQueue && s.delivery.DeliversAtOnce() {
		return s.commitLocal(ci, env, msg, rcpts)
	}
	if err := s.delivery.Put(area, env, msg); err != nil {
		s.log.Error("spool write failed: message refused with 451", "id", env.ID, "err", err.Error())
		return tempFailed("Could not store the message; try again later", env.ID)
	}
	if err := s.countSent(ci, rcpts); err != nil && !s.degraded(err, "the accepted message is not counted", "id", env.ID) {
		s.log.Error("store: the message could not be counted: refused with 451 and taken out of the spool (on_failure: tempfail)", "id", env.ID, "err", err.Error())
		if err := s.spool.Discard(area, env.ID); err != nil {
			s.log.Error("spool: discarding the refused message", "id", env.ID, "err", err.Error())
		}
		s.delivery.Release(env.ID)
		return tempFailed("Temporary failure; try again later", env.ID)
	}
	if area == queue.AreaQueue {
		s.delivery.EnqueueFresh(env, msg)
	}
	return nil
}

// tempFailed is the 451 4.3.0 of a message the relay could not take: the
// client keeps it and sends it again.
func tempFailed(text, id string) error {
	return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: replyText(text, id)}
}

// commitLocal is commitMessage for local delivery (see there).
func (s *Server) commitLocal(ci *connInfo, env *queue.Envelope, msg []byte, rcpts []string) error {
	if err := s.countSent(ci, rcpts); err != nil && !s.degraded(err, "the accepted message is not counted", "id", env.ID) {
		s.log.Error("store: the message could not be counted: refused with 451 (on_failure: tempfail)", "id", env.ID, "err", err.Error())
		return tempFailed("Temporary failure; try again later", env.ID)
	}
	if s.delivery.DeliverNow(env, msg) {
		return nil
	}
	if err := s.delivery.Put(queue.AreaQueue, env, msg); err != nil {
		s.log.Error("local delivery and spool write failed: message refused with 451", "id", env.ID, "err", err.Error())
		return tempFailed("Could not store the message; try again later", env.ID)
	}
	s.delivery.EnqueueFresh(env, msg)
	return nil
}

func newDeliverer(s *Server) *queue.Deliverer {
	return queue.NewDeliverer(queue.DeliverOptions{Spool: s.spool, Relay: &deliveryRelay{s: s}, Log: s.log, Now: s.opts.Now,
		Resolver: s.opts.MXResolver, NoSync: s.opts.NoSync})
}

// deliveryRelay is what package queue's deliverer sees of the relay.
type deliveryRelay struct {
	s *Server
	// last is the delivery configuration made from the live Config it
	// names, remade when a reload swaps the Config.
	last atomic.Pointer[deliveryConfigOf]
}

type deliveryConfigOf struct {
	from *Config
	dc   *queue.DeliveryConfig
}

func (r *deliveryRelay) DeliveryConfig() *queue.DeliveryConfig {
	cfg := r.s.cfg.Load()
	if l := r.last.Load(); l != nil && l.from == cfg {
		return l.dc
	}
	dc := cfg.Delivery.queueConfig(cfg.Hostname)
	r.last.Store(&deliveryConfigOf{cfg, dc})
	return dc
}

func (r *deliveryRelay) NewID(now time.Time) string { return r.s.ids.Next(now) }

func (r *deliveryRelay) Undeliverable(env *queue.Envelope) { r.s.undeliverableInbound(env) }

// Attempted counts an attempt's outcomes: metrics, the bounce list, and
// the sender's delivery counters (one store call per attempt).
func (r *deliveryRelay) Attempted(env *queue.Envelope, out []queue.Outcome) {
	s := r.s
	var charge []string
	for _, o := range out {
		switch o.Rcpt.Status {
		case queue.StatusDelivered:
			s.metrics.Delivery("delivered", o.Rcpt.At.Sub(env.Received))
		case queue.StatusFailed:
			s.metrics.Delivery("failed", 0)
		default:
			s.metrics.Delivery("deferred", 0)
		}
		s.recordBounce(env, o.Rcpt, o.Result)
		charge = append(charge, deliveryCounters(env, o.Result)...)
	}
	s.countDeliveries(env.ID, charge)
}

// queueConfig is d as package queue reads it.
func (d *Delivery) queueConfig(hostname string) *queue.DeliveryConfig {
	dc := &queue.DeliveryConfig{Hostname: hostname, Mode: d.Mode, LocalDir: d.LocalDir,
		Smarthost: queue.Smarthost{Addr: d.Smarthost.Addr, TLS: d.Smarthost.TLS, Username: d.Smarthost.Username,
			Password: d.Smarthost.Password, InsecureSkipVerify: d.Smarthost.InsecureSkipVerify},
		MaxAge: d.MaxAge.D(), DelayNotice: d.DelayNotice.D(), InboundBounces: d.InboundBounces,
		RescanInterval: d.RescanInterval.D(), Port: d.Port, VerifyMXTLS: d.VerifyMXTLS,
		MaxWorkers: d.Workers, ConnsPerDest: d.ConnectionsPerDestination,
		IdleTimeout: d.ConnectionIdleTimeout.D(), MessagesPerConn: d.MessagesPerConnection}
	for _, w := range d.Retry {
		dc.Retry = append(dc.Retry, w.D())
	}
	return dc
}

// undeliverableInbound is the end of an inbound message that failed and
// is not bounced: the operator sees it in the log and in the decision
// record (`sluice decision ID`), and it is counted against the client's
// address for count("undeliverable_inbound", client_ip, WINDOW).
func (s *Server) undeliverableInbound(env *queue.Envelope) {
	var failed []string
	for _, r := range env.Rcpts {
		if r.Status == queue.StatusFailed {
			failed = append(failed, fmt.Sprintf("<%s>: %d %s %s", r.Addr, r.Code, r.Enhanced, oneLine(r.Detail)))
		}
	}
	note := "undeliverable, not bounced (inbound mail, delivery.inbound_bounces: none): " + strings.Join(failed, "; ")
	s.log.Warn("undeliverable inbound message: not bounced to its unverified sender", "id", env.ID, "mail_from", env.From,
		"client_ip", env.ClientIP, "failed", failed)
	ctx, cancel := storeCtx(context.Background())
	defer cancel()
	if _, err := s.store.Count(ctx, s.opts.Now(), 1, []string{"count:undeliverable_inbound:" + store.NormalizeKey(env.ClientIP)}, nil); err != nil {
		s.log.Error("store: undeliverable inbound message not counted", "id", env.ID, "err", err.Error())
	}
	d, err := LookupDecision(ctx, s.store, env.ID)
	if err != nil || d == nil {
		return // the record is gone or the store is down: the log line stands
	}
	d.Delivery = note
	b, _ := json.Marshal(d)
	if ttl := decisionTTL - s.opts.Now().Sub(d.At); ttl > 0 {
		if err := s.store.Put(ctx, "decision", d.ID, b, ttl); err != nil {
			s.log.Warn("store: decision record", "id", d.ID, "err", err.Error())
		}
	}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
