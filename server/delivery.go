package server

import (
	"bytes"
	"container/heap"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/sluicemail/sluice/builtins"
	"github.com/sluicemail/sluice/queue"
	"github.com/sluicemail/sluice/store"
)

// deliverer takes messages from the queue area to their next hop: a local
// directory, a smarthost, or each recipient domain's MX. Each recipient
// has its own status; temporary failures are retried on the table of
// Delivery.Retry with ±10% jitter until Delivery.MaxAge; the sender gets a
// delay notice once and a final RFC 3464 bounce (never the null sender).
type deliverer struct {
	s      *Server
	mu     sync.Mutex
	due    dueHeap
	queued map[string]bool
	busy   map[string]bool
	// claimed are the ids this process is spooling: on disk, where the
	// rescan lists them, before the spool's sync has returned and the
	// spooler has queued them. Nothing else queues a claimed id, so a
	// message is never queued twice (issue 7, item 12).
	claimed map[string]bool
	wake    chan struct{}
	stopCh  chan struct{}
	wg      sync.WaitGroup
	// fresh holds messages just spooled, so their first attempt does not
	// read back from disk what it just wrote; bounded by freshMax bytes.
	fresh      map[string]freshMsg
	freshBytes int
	dirs       sync.Map // local delivery folders known to exist
	verified   verifyCache
}

type freshMsg struct {
	env *queue.Envelope
	msg []byte
}

const freshMax = 16 << 20

// enqueueFresh queues a message just spooled, keeping it in memory for
// its first attempt.
func (d *deliverer) enqueueFresh(env *queue.Envelope, msg []byte) {
	d.mu.Lock()
	if d.freshBytes+len(msg) <= freshMax {
		if d.fresh == nil {
			d.fresh = map[string]freshMsg{}
		}
		e := *env
		e.Rcpts = append([]queue.RcptState(nil), env.Rcpts...)
		d.fresh[env.ID] = freshMsg{&e, msg}
		d.freshBytes += len(msg)
	}
	d.mu.Unlock()
	d.enqueue(env.ID, env.NextAttempt)
}

// put spools a new message in area; one put in the queue is claimed until
// its spooler queues it (enqueue, enqueueFresh) or gives it up (release).
func (d *deliverer) put(area string, env *queue.Envelope, msg []byte) error {
	if area == queue.AreaQueue {
		d.mu.Lock()
		d.claimed[env.ID] = true
		d.mu.Unlock()
	}
	if err := d.s.spool.Put(area, env, msg); err != nil {
		d.release(env.ID)
		return err
	}
	return nil
}

// commitMessage stands between a verdict that accepts a message and its 250: the
// message is spooled, counted (hourly_sent and every count() the rules
// read), then queued. A message the store could not count gets no 250
// under store.on_failure tempfail (issue 7, item 13): it is taken out of
// the spool again, before delivery could see it (it is claimed), and the
// client is told 451 4.3.0 to send it again. The count comes after the
// spooling so that a message the spool refuses is never charged.
func (s *Server) commitMessage(ci *connInfo, area string, env *queue.Envelope, msg []byte, rcpts []string) error {
	env.Inbound = !ci.in.Authenticated && !s.cfg.Load().mayRelayFrom(ci.ip)
	if err := s.delivery.put(area, env, msg); err != nil {
		s.log.Error("spool write failed: message refused with 451", "id", env.ID, "err", err.Error())
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: replyText("Could not store the message; try again later", env.ID)}
	}
	if err := s.countSent(ci, rcpts); err != nil && !s.degraded(err, "the accepted message is not counted", "id", env.ID) {
		s.log.Error("store: the message could not be counted: refused with 451 and taken out of the spool (on_failure: tempfail)", "id", env.ID, "err", err.Error())
		if err := s.spool.Discard(area, env.ID); err != nil {
			s.log.Error("spool: discarding the refused message", "id", env.ID, "err", err.Error())
		}
		s.delivery.release(env.ID)
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: replyText("Temporary failure; try again later", env.ID)}
	}
	if area == queue.AreaQueue {
		s.delivery.enqueueFresh(env, msg)
	}
	return nil
}

// release gives up the claim on a message that will not be queued.
func (d *deliverer) release(id string) {
	d.mu.Lock()
	delete(d.claimed, id)
	d.mu.Unlock()
}

func (d *deliverer) takeFresh(id string) (freshMsg, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f, ok := d.fresh[id]
	if ok {
		delete(d.fresh, id)
		d.freshBytes -= len(f.msg)
	}
	return f, ok
}

func newDeliverer(s *Server) *deliverer {
	return &deliverer{s: s, queued: map[string]bool{}, busy: map[string]bool{}, claimed: map[string]bool{},
		wake: make(chan struct{}, 1), stopCh: make(chan struct{})}
}

// start queues every spooled message (a restart resumes delivery) and
// starts the workers.
func (d *deliverer) start(ctx context.Context) {
	ids, err := d.s.spool.List(queue.AreaQueue)
	if err != nil {
		d.s.log.Error("reading the queue", "err", err)
	}
	for _, id := range ids {
		at := d.s.opts.Now()
		if env, err := d.s.spool.Envelope(queue.AreaQueue, id); err == nil {
			at = env.NextAttempt
		}
		d.enqueueFound(id, at)
	}
	if len(ids) > 0 {
		d.s.log.Info("queue resumed", "messages", len(ids))
	}
	work := make(chan string)
	d.wg.Add(1)
	go d.dispatch(ctx, work)
	for range d.s.cfg.Load().Delivery.Workers {
		d.wg.Add(1)
		go d.worker(work)
	}
	d.wg.Add(1)
	go d.rescan(ctx)
}

// rescan picks up messages put in the queue by another process, such as
// `sluice hold release`.
func (d *deliverer) rescan(ctx context.Context) {
	defer d.wg.Done()
	t := time.NewTicker(d.s.cfg.Load().Delivery.RescanInterval.D())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.stopCh:
			return
		case <-t.C:
		}
		ids, err := d.s.spool.List(queue.AreaQueue)
		if err != nil {
			continue
		}
		for _, id := range ids {
			if d.known(id) {
				continue
			}
			if env, err := d.s.spool.Envelope(queue.AreaQueue, id); err == nil {
				d.enqueueFound(id, env.NextAttempt)
			}
		}
	}
}

// stop stops the workers, waiting for attempts in flight until ctx ends.
// An attempt cut short leaves its message in the queue, to be retried
// after a restart (at worst delivered twice, never lost).
func (d *deliverer) stop(ctx context.Context) {
	select {
	case <-d.stopCh:
	default:
		close(d.stopCh)
	}
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// known reports whether id is this process's already: queued, in
// flight, or being spooled.
func (d *deliverer) known(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queued[id] || d.busy[id] || d.claimed[id]
}

// enqueue queues a message for an attempt at at; its spooler's claim ends.
func (d *deliverer) enqueue(id string, at time.Time) {
	d.mu.Lock()
	delete(d.claimed, id)
	d.push(id, at)
	d.mu.Unlock()
	d.poke()
}

// enqueueFound queues a message found in the queue directory, unless this
// process knows it already.
func (d *deliverer) enqueueFound(id string, at time.Time) {
	d.mu.Lock()
	if d.busy[id] || d.claimed[id] {
		d.mu.Unlock()
		return
	}
	d.push(id, at)
	d.mu.Unlock()
	d.poke()
}

// push adds id to the heap once; d.mu is held.
func (d *deliverer) push(id string, at time.Time) {
	if !d.queued[id] {
		d.queued[id] = true
		heap.Push(&d.due, dueItem{at: at, id: id})
	}
}

func (d *deliverer) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// dispatch hands due messages to the workers: it alone waits on the
// heap's earliest time, so idle workers cost nothing.
func (d *deliverer) dispatch(ctx context.Context, work chan<- string) {
	defer d.wg.Done()
	defer close(work)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		d.mu.Lock()
		var due []string
		wait := time.Hour
		now := d.s.opts.Now()
		for len(d.due) > 0 {
			top := d.due[0]
			if w := top.at.Sub(now); w > 0 {
				wait = w
				break
			}
			heap.Pop(&d.due)
			delete(d.queued, top.id)
			d.busy[top.id] = true
			due = append(due, top.id)
		}
		d.mu.Unlock()
		for _, id := range due {
			select {
			case work <- id:
			case <-ctx.Done():
				return
			case <-d.stopCh:
				return
			}
		}
		if len(due) > 0 {
			continue
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-d.stopCh:
			return
		case <-d.wake:
		case <-t.C:
		}
	}
}

func (d *deliverer) worker(work <-chan string) {
	defer d.wg.Done()
	for id := range work {
		d.attempt(id)
		d.mu.Lock()
		delete(d.busy, id)
		d.mu.Unlock()
	}
}

// load reads a queued message: from memory on its first attempt, else from
// the spool.
func (d *deliverer) load(id string) (*queue.Envelope, []byte, bool) {
	if f, ok := d.takeFresh(id); ok {
		return f.env, f.msg, true
	}
	env, err := d.s.spool.Envelope(queue.AreaQueue, id)
	if err != nil {
		if !errors.Is(err, queue.ErrNotFound) {
			d.s.log.Error("delivery: reading envelope", "id", id, "err", err)
		}
		return nil, nil, false
	}
	msg, err := d.s.spool.Message(queue.AreaQueue, id)
	if err != nil {
		d.s.log.Error("delivery: reading message", "id", id, "err", err)
		return nil, nil, false
	}
	return env, msg, true
}

// result is the outcome of one recipient in one attempt.
type result struct {
	code     int
	enhanced string
	detail   string
	remote   string
	perm     bool // a permanent failure
	ok       bool
}

func (d *deliverer) attempt(id string) {
	s := d.s
	env, msg, ok := d.load(id)
	if !ok {
		return
	}
	cfg := s.cfg.Load()
	var pending []string
	for _, r := range env.Rcpts {
		if r.Status == queue.StatusPending {
			pending = append(pending, r.Addr)
		}
	}
	results := d.deliver(cfg, env, msg, pending)
	now := s.opts.Now().UTC()
	env.Attempts++
	var charge []string // the sender's delivery counters, counted at once below
	for i := range env.Rcpts {
		r := &env.Rcpts[i]
		res, ok := results[r.Addr]
		if !ok || r.Status != queue.StatusPending {
			continue
		}
		r.Code, r.Enhanced, r.Detail, r.Remote, r.At = res.code, res.enhanced, res.detail, res.remote, now
		switch {
		case res.ok:
			r.Status = queue.StatusDelivered
			s.metrics.Delivery("delivered", now.Sub(env.Received))
		case res.perm:
			r.Status = queue.StatusFailed
			s.metrics.Delivery("failed", 0)
		default:
			s.metrics.Delivery("deferred", 0)
		}
		s.recordBounce(env, r, res)
		charge = append(charge, deliveryCounters(env, res)...)
		s.log.Info("delivery", "id", id, "rcpt", r.Addr, "status", r.Status, "code", res.code, "enhanced", res.enhanced, "remote", res.remote, "detail", res.detail, "attempt", env.Attempts)
	}
	s.countDeliveries(env.ID, charge)
	still := 0
	for _, r := range env.Rcpts {
		if r.Status == queue.StatusPending {
			still++
		}
	}
	if still > 0 && now.Sub(env.Received) >= cfg.Delivery.MaxAge.D() {
		for i := range env.Rcpts {
			r := &env.Rcpts[i]
			if r.Status == queue.StatusPending {
				r.Status, r.Code, r.Enhanced = queue.StatusFailed, 451, "4.4.7"
				r.Detail = fmt.Sprintf("delivery expired after %s: last error: %s", cfg.Delivery.MaxAge.D(), r.Detail)
			}
		}
		still = 0
	}
	if still == 0 {
		d.finish(env, msg)
		return
	}
	if !env.DelayNotified && s.bounceable(cfg, env) && now.Sub(env.Received) >= cfg.Delivery.DelayNotice.D() {
		if err := s.sendDSN(env, msg, "delayed"); err != nil {
			s.log.Error("delay notice", "id", id, "err", err)
		} else {
			env.DelayNotified = true
		}
	}
	env.NextAttempt = now.Add(retryWait(cfg.Delivery.Retry, env.Attempts))
	if err := s.spool.Update(queue.AreaQueue, env); err != nil {
		s.log.Error("delivery: updating envelope", "id", id, "err", err)
	}
	d.enqueue(id, env.NextAttempt)
}

// retryWait is the wait after the n-th attempt (n >= 1), jittered ±10%.
func retryWait(table []Duration, n int) time.Duration {
	w := table[min(n-1, len(table)-1)].D()
	j := time.Duration(float64(w) * (rand.Float64()*0.2 - 0.1))
	return w + j
}

// finish bounces failed recipients and removes the message.
func (d *deliverer) finish(env *queue.Envelope, msg []byte) {
	s := d.s
	failed := false
	for _, r := range env.Rcpts {
		if r.Status == queue.StatusFailed {
			failed = true
		}
	}
	if failed {
		switch {
		case env.From == "" || env.Bounce:
			s.log.Warn("undeliverable message from the null sender: dropped, never bounced", "id", env.ID)
		case !s.bounceable(s.cfg.Load(), env):
			s.undeliverableInbound(env)
		default:
			if err := s.sendDSN(env, msg, "failed"); err != nil {
				// Keep the message: without its bounce the sender would
				// never learn of the failure.
				s.log.Error("bounce", "id", env.ID, "err", err)
				env.NextAttempt = s.opts.Now().Add(time.Minute)
				s.spool.Update(queue.AreaQueue, env)
				d.enqueue(env.ID, env.NextAttempt)
				return
			}
		}
	}
	if err := s.spool.Remove(queue.AreaQueue, env.ID); err != nil {
		s.log.Error("delivery: removing", "id", env.ID, "err", err)
	}
}

// bounceable reports whether env's sender may be sent DSNs: not the null
// sender, not for a DSN, and, for inbound mail, whose sender address
// nothing verified, only when delivery.inbound_bounces allows it. A
// spammer forging a victim's address to a recipient the next hop refuses
// would otherwise make the relay mail the victim (backscatter).
func (s *Server) bounceable(cfg *Config, env *queue.Envelope) bool {
	if env.From == "" || env.Bounce {
		return false
	}
	return !env.Inbound || cfg.Delivery.InboundBounces == "headers"
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

func (d *deliverer) deliver(cfg *Config, env *queue.Envelope, msg []byte, rcpts []string) map[string]result {
	out := map[string]result{}
	if len(rcpts) == 0 {
		return out
	}
	switch cfg.Delivery.Mode {
	case "local":
		for _, r := range rcpts {
			out[r] = d.deliverLocal(cfg.Delivery.LocalDir, env, msg, r, d.s.spool.SyncsPerFile())
		}
		// The delivered files must be durable before the spool forgets
		// the message.
		if err := d.s.spool.Sync(); err != nil {
			for _, r := range rcpts {
				out[r] = result{code: 451, enhanced: "4.3.0", detail: "sync: " + err.Error(), remote: "local"}
			}
		}
	case "smarthost":
		sh := cfg.Delivery.Smarthost
		res := d.sendSMTP(cfg, sh.Addr, sh.TLS, sh.InsecureSkipVerify, sh.Username, sh.Password, env.From, rcpts, msg)
		for k, v := range res {
			out[k] = v
		}
	case "mx":
		byDomain := map[string][]string{}
		var domains []string
		for _, r := range rcpts {
			dom := builtins.Domain(r)
			if byDomain[dom] == nil {
				domains = append(domains, dom)
			}
			byDomain[dom] = append(byDomain[dom], r)
		}
		for _, dom := range domains {
			for k, v := range d.deliverMX(cfg, dom, env.From, byDomain[dom], msg) {
				out[k] = v
			}
		}
	}
	return out
}

// deliverLocal writes the message for rcpt into dir/RCPT/ID.eml: the
// built-in target of the embedded default. Writing the same id again
// replaces the file, so a retried delivery never duplicates.
func (d *deliverer) deliverLocal(dir string, env *queue.Envelope, msg []byte, rcpt string, sync bool) result {
	folder := strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r < 0x20 || r == 0 {
			return '_'
		}
		return r
	}, strings.ToLower(rcpt))
	if folder == "" || folder == "." || folder == ".." {
		folder = "_"
	}
	path := filepath.Join(dir, folder, env.ID+".eml")
	if _, known := d.dirs.Load(filepath.Dir(path)); !known {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return result{code: 451, enhanced: "4.3.0", detail: err.Error(), remote: "local"}
		}
		d.dirs.Store(filepath.Dir(path), true)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "Return-Path: <%s>\r\nDelivered-To: %s\r\n", env.From, rcpt)
	b.Write(msg)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err == nil {
		_, err = f.Write(b.Bytes())
		if err == nil && sync {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		d.dirs.Delete(filepath.Dir(path)) // it may have been removed: make it again next time
		return result{code: 451, enhanced: "4.3.0", detail: err.Error(), remote: "local"}
	}
	return result{ok: true, code: 250, enhanced: "2.0.0", detail: "delivered to " + path, remote: "local"}
}

// deliverMX sends to the domain's MX hosts in order of preference, or to
// the domain itself when it has no MX (RFC 5321 5.1).
func (d *deliverer) deliverMX(cfg *Config, domain, from string, rcpts []string, msg []byte) map[string]result {
	all := func(r result) map[string]result {
		out := map[string]result{}
		for _, rc := range rcpts {
			out[rc] = r
		}
		return out
	}
	res := d.s.opts.MXResolver
	if res == nil {
		res = net.DefaultResolver
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mxs, err := res.LookupMX(ctx, domain)
	var hosts []string
	var dnsErr *net.DNSError
	switch {
	case err == nil:
		sort.SliceStable(mxs, func(i, j int) bool { return mxs[i].Pref < mxs[j].Pref })
		for _, mx := range mxs {
			hosts = append(hosts, strings.TrimSuffix(mx.Host, "."))
		}
		if len(hosts) == 1 && hosts[0] == "" { // null MX, RFC 7505
			return all(result{perm: true, code: 556, enhanced: "5.1.10", detail: domain + " accepts no mail (null MX)"})
		}
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		hosts = []string{domain} // no MX: the address records of the domain
	default:
		return all(result{code: 451, enhanced: "4.4.3", detail: "MX lookup for " + domain + ": " + err.Error()})
	}
	last := result{code: 451, enhanced: "4.4.1", detail: "no MX host reachable for " + domain}
	for _, h := range hosts {
		addrs, err := res.LookupHost(ctx, h)
		if err != nil {
			if errors.As(err, &dnsErr) && dnsErr.IsNotFound && len(hosts) == 1 && h == domain {
				return all(result{perm: true, code: 550, enhanced: "5.1.2", detail: domain + " has no MX and no address"})
			}
			last.detail = "lookup " + h + ": " + err.Error()
			continue
		}
		for _, a := range addrs {
			out := d.sendSMTP(cfg, net.JoinHostPort(a, strconv.Itoa(cfg.Delivery.Port)), "opportunistic", !cfg.Delivery.VerifyMXTLS, "", "", from, rcpts, msg)
			if !connectionFailed(out) {
				return out
			}
			for _, v := range out {
				last = v
			}
		}
	}
	return all(last)
}

func connectionFailed(out map[string]result) bool {
	for _, r := range out {
		if r.code != 0 && r.code != 421 {
			return false
		}
	}
	return true
}

// sendSMTP runs one SMTP transaction for rcpts and returns each one's
// result. tlsMode is starttls (required), implicit, none or opportunistic.
// A nil msg is a probe: the transaction stops after RCPT, within seconds.
func (d *deliverer) sendSMTP(cfg *Config, addr, tlsMode string, insecure bool, user, pass, from string, rcpts []string, msg []byte) map[string]result {
	probe := msg == nil
	timeout := 30 * time.Second
	if probe {
		timeout = probeTimeout
	}
	out := map[string]result{}
	fail := func(r result) map[string]result {
		r.remote = addr
		for _, rc := range rcpts {
			if _, done := out[rc]; !done {
				out[rc] = r
			}
		}
		return out
	}
	host, _, _ := net.SplitHostPort(addr)
	tc := &tls.Config{ServerName: host, InsecureSkipVerify: insecure, MinVersion: tls.VersionTLS12}
	dial := func() (net.Conn, error) {
		return (&net.Dialer{Timeout: timeout}).Dial("tcp", addr)
	}
	var c *smtp.Client
	conn, err := dial()
	if err != nil {
		return fail(result{detail: "connect: " + err.Error()})
	}
	switch tlsMode {
	case "implicit":
		c = smtp.NewClient(tls.Client(conn, tc))
	case "starttls":
		c, err = smtp.NewClientStartTLS(conn, tc)
		if err != nil {
			conn.Close()
			return fail(smtpResult(err, "STARTTLS"))
		}
	case "opportunistic":
		c, err = smtp.NewClientStartTLS(conn, tc)
		if err != nil {
			conn.Close()
			var se *smtp.SMTPError
			if errors.As(err, &se) && se.Code/100 == 5 {
				return fail(smtpResult(err, "greeting"))
			}
			// No STARTTLS or a failed handshake: cleartext, as
			// opportunistic TLS allows (RFC 7435).
			if conn, err = dial(); err != nil {
				return fail(result{detail: "connect: " + err.Error()})
			}
			c = smtp.NewClient(conn)
		}
	default:
		c = smtp.NewClient(conn)
	}
	defer c.Close()
	c.CommandTimeout = 2 * time.Minute
	if probe {
		c.CommandTimeout = probeTimeout
	}
	c.SubmissionTimeout = 10 * time.Minute
	if err := c.Hello(cfg.Hostname); err != nil {
		return fail(smtpResult(err, "EHLO"))
	}
	if user != "" {
		if err := c.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
			r := smtpResult(err, "AUTH")
			r.perm = false // a credentials problem is the operator's to fix: keep the mail
			return fail(r)
		}
	}
	if err := c.Mail(from, nil); err != nil {
		return fail(smtpResult(err, "MAIL FROM"))
	}
	var accepted []string
	for _, rc := range rcpts {
		if err := c.Rcpt(rc, nil); err != nil {
			r := smtpResult(err, "RCPT TO")
			r.remote = addr
			out[rc] = r
			continue
		}
		accepted = append(accepted, rc)
	}
	if probe { // recipient verification: no DATA
		for _, rc := range accepted {
			out[rc] = result{ok: true, code: 250, enhanced: "2.1.5", detail: "recipient accepted", remote: addr}
		}
		c.Quit()
		return out
	}
	if len(accepted) == 0 {
		c.Quit()
		return out
	}
	w, err := c.Data()
	if err != nil {
		return fail(smtpResult(err, "DATA"))
	}
	if _, err := w.Write(msg); err != nil {
		return fail(smtpResult(err, "DATA"))
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return fail(smtpResult(err, "end of DATA"))
	}
	for _, rc := range accepted {
		out[rc] = result{ok: true, code: 250, enhanced: "2.0.0", detail: resp.StatusText, remote: addr}
	}
	c.Quit()
	return out
}

// smtpResult turns a client error into a result: an SMTP reply keeps its
// code (5xx permanent), anything else is a temporary network failure.
func smtpResult(err error, stage string) result {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		enh := ""
		if se.EnhancedCode != smtp.NoEnhancedCode && se.EnhancedCode != (smtp.EnhancedCode{}) {
			enh = fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
		}
		return result{code: se.Code, enhanced: enh, detail: stage + ": " + se.Message, perm: se.Code >= 500}
	}
	return result{detail: stage + ": " + err.Error()}
}

type dueItem struct {
	at time.Time
	id string
}

type dueHeap []dueItem

func (h dueHeap) Len() int { return len(h) }
func (h dueHeap) Less(i, j int) bool {
	if h[i].at.Equal(h[j].at) {
		return h[i].id < h[j].id
	}
	return h[i].at.Before(h[j].at)
}
func (h dueHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)   { *h = append(*h, x.(dueItem)) }
func (h *dueHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
