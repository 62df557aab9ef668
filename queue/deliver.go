package queue

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/sluicemail/sluice/builtins"
)

// Deliverer takes messages from the queue area to their next hop: a local
// directory, a smarthost, or each recipient domain's MX. Each recipient
// has its own status; temporary failures are retried on the table of
// DeliveryConfig.Retry with ±10% jitter until MaxAge; the sender gets a
// delay notice once and a final RFC 3464 bounce (never the null sender).
//
// Attempts run on goroutines started for due messages, at most
// MaxWorkers at once: an idle queue holds no worker, a backlog gets as
// many as the cap allows. Remote attempts share a pool of open SMTP
// sessions, at most ConnsPerDest per next hop (see pool): messages for
// one destination that arrive together queue for its sessions and go
// out one after another on each.
type Deliverer struct {
	spool *Spool
	relay Relay
	log   *slog.Logger
	now   func() time.Time
	res   *net.Resolver
	sync  bool

	mu sync.Mutex
	// due orders queued ids by time; an entry whose time is not
	// queued[id] any more is stale (Enqueue moved the message earlier)
	// and is skipped.
	due    dueHeap
	queued map[string]time.Time
	busy   map[string]bool
	// again is a retry asked for (Enqueue) while the message was in
	// flight: it is queued then at this time if the attempt leaves it.
	again map[string]time.Time
	// claimed are the ids this process is spooling: on disk, where the
	// rescan lists them, before the spool's write has returned and the
	// spooler has queued them. Nothing else queues a claimed id, so a
	// message is never queued twice (issue 7, item 12).
	claimed map[string]bool
	running int // attempts in flight
	wake    chan struct{}
	stopCh  chan struct{}
	wg      sync.WaitGroup
	// fresh holds messages just spooled, so their first attempt does not
	// read back from disk what it just wrote; bounded by freshMax bytes.
	fresh      map[string]freshMsg
	freshBytes int

	pool     *pool
	local    *localWriter
	verified verifyCache
}

// Relay is what delivery needs from the relay around it.
type Relay interface {
	// DeliveryConfig is the live configuration, read once per attempt.
	DeliveryConfig() *DeliveryConfig
	// NewID names a new message (a DSN) spooled at now.
	NewID(now time.Time) string
	// Attempted is told the recipients an attempt decided or deferred,
	// with their new state: for metrics, counters and the bounce list.
	Attempted(env *Envelope, out []Outcome)
	// Undeliverable is told of an inbound message that failed and is not
	// bounced to its unverified sender (delivery.inbound_bounces: none).
	Undeliverable(env *Envelope)
}

// Outcome is one recipient's result in one attempt.
type Outcome struct {
	Rcpt   *RcptState
	Result Result
}

// DeliveryConfig is the part of the relay's configuration delivery reads.
type DeliveryConfig struct {
	Hostname string
	// Mode is local, smarthost or mx.
	Mode      string
	LocalDir  string
	Smarthost Smarthost
	// Retry is the wait after each failed attempt; the last repeats.
	Retry       []time.Duration
	MaxAge      time.Duration
	DelayNotice time.Duration
	// InboundBounces is none or headers (see Bounceable).
	InboundBounces string
	RescanInterval time.Duration
	// Port is MX hosts' port (25).
	Port        int
	VerifyMXTLS bool
	// MaxWorkers caps the attempts in flight.
	MaxWorkers int
	// ConnsPerDest caps the open SMTP sessions to one next hop.
	ConnsPerDest int
	// IdleTimeout closes a pooled session unused this long.
	IdleTimeout time.Duration
	// MessagesPerConn closes a session after this many messages.
	MessagesPerConn int
}

// Smarthost is the next hop of mode smarthost.
type Smarthost struct {
	Addr               string
	TLS                string // starttls, implicit, none
	Username, Password string
	InsecureSkipVerify bool
}

// Result is the outcome of one recipient in one attempt.
type Result struct {
	Code     int
	Enhanced string
	Detail   string
	Remote   string // the host that answered, "local" for local delivery
	Perm     bool   // a permanent failure
	OK       bool
	// busy: not tried, the sessions to busyKey (a pool key) were all
	// taken (errBusy).
	busy    bool
	busyKey string
}

// busyWait is how long a message turned away by a busy destination (all
// its recipients, errBusy) waits at most; it is parked with the
// destination's pool, which queues it as soon as a session is free, in
// the order they were turned away. Such an attempt does not count
// (Attempts, the retry table).
const busyWait = 30 * time.Second

// DeliverOptions are the Deliverer's parts.
type DeliverOptions struct {
	Spool *Spool
	Relay Relay
	Log   *slog.Logger
	// Now is the clock (time.Now if nil).
	Now func() time.Time
	// Resolver finds MX and address records (net.DefaultResolver if nil).
	Resolver *net.Resolver
	// NoSync skips fsync of locally delivered files: benchmarks only.
	NoSync bool
}

type freshMsg struct {
	env *Envelope
	msg []byte
}

const freshMax = 16 << 20

// NewDeliverer builds a deliverer; Start starts it.
func NewDeliverer(o DeliverOptions) *Deliverer {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	d := &Deliverer{spool: o.Spool, relay: o.Relay, log: o.Log, now: o.Now, res: o.Resolver, sync: !o.NoSync,
		queued: map[string]time.Time{}, busy: map[string]bool{}, again: map[string]time.Time{}, claimed: map[string]bool{},
		wake: make(chan struct{}, 1), stopCh: make(chan struct{})}
	d.pool = newPool(o.Now)
	d.pool.wake = func(id string) { d.Enqueue(id, d.now()) }
	d.local = newLocalWriter(!o.NoSync)
	return d
}

// EnqueueFresh queues a message just spooled, keeping it in memory for
// its first attempt.
func (d *Deliverer) EnqueueFresh(env *Envelope, msg []byte) {
	e := *env // the caller keeps env
	e.Rcpts = append([]RcptState(nil), env.Rcpts...)
	d.keepFresh(&e, msg)
	d.Enqueue(env.ID, env.NextAttempt)
}

// Put spools a new message in area; one put in the queue is claimed until
// its spooler queues it (Enqueue, EnqueueFresh) or gives it up (Release).
func (d *Deliverer) Put(area string, env *Envelope, msg []byte) error {
	if area == AreaQueue {
		d.mu.Lock()
		d.claimed[env.ID] = true
		d.mu.Unlock()
	}
	if err := d.spool.Put(area, env, msg); err != nil {
		d.Release(env.ID)
		return err
	}
	return nil
}

// Release gives up the claim on a message that will not be queued.
func (d *Deliverer) Release(id string) {
	d.mu.Lock()
	delete(d.claimed, id)
	d.mu.Unlock()
}

// keepFresh keeps env and msg in memory for the message's next attempt,
// within freshMax bytes.
func (d *Deliverer) keepFresh(env *Envelope, msg []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.fresh[env.ID]; ok || d.freshBytes+len(msg) > freshMax {
		return
	}
	if d.fresh == nil {
		d.fresh = map[string]freshMsg{}
	}
	d.fresh[env.ID] = freshMsg{env, msg}
	d.freshBytes += len(msg)
}

func (d *Deliverer) takeFresh(id string) (freshMsg, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f, ok := d.fresh[id]
	if ok {
		delete(d.fresh, id)
		d.freshBytes -= len(f.msg)
	}
	return f, ok
}

// Start queues every spooled message (a restart resumes delivery) and
// starts the dispatcher, the rescan and the pool's idle reaper.
func (d *Deliverer) Start(ctx context.Context) {
	ids, err := d.spool.List(AreaQueue)
	if err != nil {
		d.log.Error("reading the queue", "err", err)
	}
	for _, id := range ids {
		at := d.now()
		if env, err := d.spool.Envelope(AreaQueue, id); err == nil {
			at = env.NextAttempt
		}
		d.enqueueFound(id, at)
	}
	if len(ids) > 0 {
		d.log.Info("queue resumed", "messages", len(ids))
	}
	d.wg.Add(3)
	go d.dispatch(ctx)
	go d.rescan(ctx)
	go func() {
		defer d.wg.Done()
		d.pool.reap(d.stopCh, d.relay.DeliveryConfig)
	}()
}

// rescan picks up messages put in the queue by another process, such as
// `sluice hold release`.
func (d *Deliverer) rescan(ctx context.Context) {
	defer d.wg.Done()
	t := time.NewTicker(d.relay.DeliveryConfig().RescanInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.stopCh:
			return
		case <-t.C:
		}
		ids, err := d.spool.List(AreaQueue)
		if err != nil {
			continue
		}
		for _, id := range ids {
			if d.known(id) {
				continue
			}
			if env, err := d.spool.Envelope(AreaQueue, id); err == nil {
				d.enqueueFound(id, env.NextAttempt)
			}
		}
	}
}

// Stop stops delivery, waiting for attempts in flight until ctx ends, and
// closes the pooled sessions. An attempt cut short leaves its message in
// the queue, to be retried after a restart (at worst delivered twice,
// never lost).
func (d *Deliverer) Stop(ctx context.Context) {
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
	d.pool.closeAll()
	d.local.close()
}

// known reports whether id is this process's already: queued, in
// flight, or being spooled.
func (d *Deliverer) known(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, q := d.queued[id]
	return q || d.busy[id] || d.claimed[id]
}

// Enqueue queues a message of the queue area for an attempt at at, or
// moves it earlier when it is queued for later: RetryNow for `sluice
// queue retry`, Enqueue for a message released from hold. Its spooler's
// claim ends.
func (d *Deliverer) Enqueue(id string, at time.Time) {
	d.mu.Lock()
	delete(d.claimed, id)
	if d.busy[id] {
		if prev, ok := d.again[id]; !ok || at.Before(prev) {
			d.again[id] = at
		}
	} else {
		d.push(id, at)
	}
	d.mu.Unlock()
	d.poke()
}

// RetryNow asks for an attempt of a queued message now, whatever its next
// attempt time; a message in flight is tried again as soon as its attempt
// ends, if that leaves it queued.
func (d *Deliverer) RetryNow(id string) { d.Enqueue(id, d.now()) }

// RetryIDs brings the next attempt of the queued messages ids to now
// (`sluice queue retry`), ids on disk that this process has not seen yet
// included, and returns those in flight or still being spooled: their
// attempt is under way, or comes at once anyway.
func (d *Deliverer) RetryIDs(ids []string) (busy []string) {
	now := d.now()
	d.mu.Lock()
	for _, id := range ids {
		if d.busy[id] || d.claimed[id] {
			busy = append(busy, id)
			continue
		}
		d.push(id, now) // moves a queued message earlier; its old entry goes stale
	}
	d.mu.Unlock()
	d.poke()
	return busy
}

// WhileIdle runs f (a delete: `sluice queue delete`) with id out of the
// deliverer's hands: out of the schedule and the fresh cache, and marked
// busy so that neither the dispatcher nor a rescan picks it up meanwhile.
// While an attempt (or the message's spooling) is under way it does not
// run f and reports busy: the copy in flight may arrive, so a delete then
// would be a promise the relay cannot keep.
func (d *Deliverer) WhileIdle(id string, f func() error) (busy bool, err error) {
	d.mu.Lock()
	if d.busy[id] || d.claimed[id] {
		d.mu.Unlock()
		return true, nil
	}
	delete(d.queued, id) // its heap entry is stale now
	delete(d.again, id)
	if fm, ok := d.fresh[id]; ok {
		delete(d.fresh, id)
		d.freshBytes -= len(fm.msg)
	}
	d.busy[id] = true
	d.mu.Unlock()
	err = f()
	d.mu.Lock()
	delete(d.busy, id)
	d.mu.Unlock()
	// Had f failed, with the message still spooled, the next rescan
	// queues it again.
	return false, err
}

// enqueueFound queues a message found in the queue directory, unless this
// process knows it already.
func (d *Deliverer) enqueueFound(id string, at time.Time) {
	d.mu.Lock()
	if _, q := d.queued[id]; q || d.busy[id] || d.claimed[id] {
		d.mu.Unlock()
		return
	}
	d.push(id, at)
	d.mu.Unlock()
	d.poke()
}

// push queues id at at, or earlier than it was; d.mu is held.
func (d *Deliverer) push(id string, at time.Time) {
	if prev, ok := d.queued[id]; ok && !at.Before(prev) {
		return
	}
	d.queued[id] = at
	heap.Push(&d.due, dueItem{at: at, id: id})
}

func (d *Deliverer) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// dispatch starts an attempt for each due message while fewer than
// MaxWorkers run: it alone waits on the heap's earliest time, so an idle
// queue costs nothing.
func (d *Deliverer) dispatch(ctx context.Context) {
	defer d.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		cap := max(d.relay.DeliveryConfig().MaxWorkers, 1)
		d.mu.Lock()
		wait := time.Hour
		now := d.now()
		for len(d.due) > 0 && d.running < cap {
			top := d.due[0]
			if at, ok := d.queued[top.id]; !ok || !at.Equal(top.at) {
				heap.Pop(&d.due) // stale: moved earlier, already done
				continue
			}
			if w := top.at.Sub(now); w > 0 {
				wait = w
				break
			}
			heap.Pop(&d.due)
			delete(d.queued, top.id)
			d.busy[top.id] = true
			d.running++
			d.wg.Add(1)
			go d.work(top.id)
		}
		d.mu.Unlock()
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

func (d *Deliverer) work(id string) {
	defer d.wg.Done()
	next, queued := d.attempt(id)
	d.mu.Lock()
	delete(d.busy, id)
	d.running--
	if at, ok := d.again[id]; ok {
		delete(d.again, id)
		if queued && at.Before(next) {
			next = at
		}
	}
	if queued {
		d.push(id, next)
	}
	d.mu.Unlock()
	d.poke()
}

// load reads a queued message: from memory on its first attempt, else from
// the spool.
func (d *Deliverer) load(id string) (*Envelope, []byte, bool) {
	if f, ok := d.takeFresh(id); ok {
		return f.env, f.msg, true
	}
	env, err := d.spool.Envelope(AreaQueue, id)
	if err != nil {
		if !errors.Is(err, ErrNotFound) {
			d.log.Error("delivery: reading envelope", "id", id, "err", err)
		}
		return nil, nil, false
	}
	msg, err := d.spool.Message(AreaQueue, id)
	if err != nil {
		d.log.Error("delivery: reading message", "id", id, "err", err)
		return nil, nil, false
	}
	return env, msg, true
}

// attempt tries a message's pending recipients once and records the
// outcome; it returns when to try again, if the message stays queued.
func (d *Deliverer) attempt(id string) (time.Time, bool) {
	env, msg, ok := d.load(id)
	if !ok {
		return time.Time{}, false
	}
	cfg := d.relay.DeliveryConfig()
	var pending []string
	for _, r := range env.Rcpts {
		if r.Status == StatusPending {
			pending = append(pending, r.Addr)
		}
	}
	results := d.deliver(cfg, env, msg, pending)
	now := d.now().UTC()
	busy := 0
	for _, r := range pending {
		if res := results[r]; res.busy {
			busy++
			d.pool.park(res.busyKey, id)
		}
	}
	if busy > 0 && busy == len(pending) {
		// Nothing was tried: the message waits its turn, unchanged.
		d.keepFresh(env, msg)
		return now.Add(busyWait), true
	}
	env.Attempts++
	d.record(env, results, now)
	still := 0
	for _, r := range env.Rcpts {
		if r.Status == StatusPending {
			still++
		}
	}
	if still > 0 && now.Sub(env.Received) >= cfg.MaxAge {
		for i := range env.Rcpts {
			r := &env.Rcpts[i]
			if r.Status == StatusPending {
				r.Status, r.Code, r.Enhanced = StatusFailed, 451, "4.4.7"
				r.Detail = fmt.Sprintf("delivery expired after %s: last error: %s", cfg.MaxAge, r.Detail)
			}
		}
		still = 0
	}
	if still == 0 {
		return d.finish(cfg, env, msg)
	}
	if !env.DelayNotified && Bounceable(env, cfg.InboundBounces) && now.Sub(env.Received) >= cfg.DelayNotice {
		if err := d.SendDSN(env, msg, "delayed"); err != nil {
			d.log.Error("delay notice", "id", id, "err", err)
		} else {
			env.DelayNotified = true
		}
	}
	env.NextAttempt = now.Add(retryWait(cfg.Retry, env.Attempts))
	if busy > 0 { // the recipients not tried go again when woken, at the latest in busyWait
		env.NextAttempt = now.Add(min(busyWait, env.NextAttempt.Sub(now)))
	}
	if err := d.spool.Update(AreaQueue, env); err != nil {
		d.log.Error("delivery: updating envelope", "id", id, "err", err)
	}
	return env.NextAttempt, true
}

// record applies an attempt's results to env's pending recipients, logs
// each, and tells the relay.
func (d *Deliverer) record(env *Envelope, results map[string]Result, now time.Time) {
	var out []Outcome
	for i := range env.Rcpts {
		r := &env.Rcpts[i]
		res, ok := results[r.Addr]
		if !ok || res.busy || r.Status != StatusPending {
			continue
		}
		r.Code, r.Enhanced, r.Detail, r.Remote, r.At = res.Code, res.Enhanced, res.Detail, res.Remote, now
		switch {
		case res.OK:
			r.Status = StatusDelivered
		case res.Perm:
			r.Status = StatusFailed
		}
		out = append(out, Outcome{r, res})
		d.log.Info("delivery", "id", env.ID, "rcpt", r.Addr, "status", r.Status, "code", res.Code, "enhanced", res.Enhanced, "remote", res.Remote, "detail", res.Detail, "attempt", env.Attempts)
	}
	d.relay.Attempted(env, out)
}

// DeliversAtOnce reports whether messages are delivered as they are
// accepted (DeliverNow): delivery.mode local.
func (d *Deliverer) DeliversAtOnce() bool { return d.relay.DeliveryConfig().Mode == "local" }

// DeliverNow delivers a message just accepted into its recipients' local
// folders, durably, before the relay answers 250: for mode local the
// folder is as safe a place as the spool, so the message is written once
// instead of spooled, read back and written again. It reports whether
// every recipient was delivered; if not, env says what happened (the
// delivered marked, the rest pending with their error and a next
// attempt) and the caller spools it, so the deliverer retries the rest
// as any queued message.
func (d *Deliverer) DeliverNow(env *Envelope, msg []byte) bool {
	cfg := d.relay.DeliveryConfig()
	if cfg.Mode != "local" {
		return false
	}
	var pending []string
	for _, r := range env.Rcpts {
		if r.Status == StatusPending {
			pending = append(pending, r.Addr)
		}
	}
	results := make(map[string]Result, len(pending))
	if len(pending) == 1 {
		results[pending[0]] = d.local.deliver(cfg.LocalDir, env, msg, pending[0])
	} else {
		// The recipients' files share one group commit.
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, rc := range pending {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res := d.local.deliver(cfg.LocalDir, env, msg, rc)
				mu.Lock()
				results[rc] = res
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	now := d.now().UTC()
	env.Attempts++
	d.record(env, results, now)
	for _, r := range env.Rcpts {
		if r.Status == StatusPending {
			env.NextAttempt = now.Add(retryWait(cfg.Retry, env.Attempts))
			return false
		}
	}
	return true
}

// retryWait is the wait after the n-th attempt (n >= 1), jittered ±10%.
func retryWait(table []time.Duration, n int) time.Duration {
	if len(table) == 0 {
		return time.Minute
	}
	w := table[min(n-1, len(table)-1)]
	j := time.Duration(float64(w) * (rand.Float64()*0.2 - 0.1))
	return w + j
}

// finish bounces failed recipients and removes the message; a bounce
// that could not be queued keeps it, to try again in a minute.
func (d *Deliverer) finish(cfg *DeliveryConfig, env *Envelope, msg []byte) (time.Time, bool) {
	failed := false
	for _, r := range env.Rcpts {
		if r.Status == StatusFailed {
			failed = true
		}
	}
	if failed {
		switch {
		case env.From == "" || env.Bounce:
			d.log.Warn("undeliverable message from the null sender: dropped, never bounced", "id", env.ID)
		case !Bounceable(env, cfg.InboundBounces):
			d.relay.Undeliverable(env)
		default:
			if err := d.SendDSN(env, msg, "failed"); err != nil {
				// Keep the message: without its bounce the sender would
				// never learn of the failure.
				d.log.Error("bounce", "id", env.ID, "err", err)
				env.NextAttempt = d.now().Add(time.Minute)
				if err := d.spool.Update(AreaQueue, env); err != nil {
					d.log.Error("delivery: updating envelope", "id", env.ID, "err", err)
				}
				return env.NextAttempt, true
			}
		}
	}
	if err := d.spool.Remove(AreaQueue, env.ID); err != nil {
		d.log.Error("delivery: removing", "id", env.ID, "err", err)
	}
	return time.Time{}, false
}

// Bounceable reports whether env's sender may be sent DSNs: not the null
// sender, not for a DSN, and, for inbound mail, whose sender address
// nothing verified, only when inboundBounces (delivery.inbound_bounces)
// is headers. A spammer forging a victim's address to a recipient the
// next hop refuses would otherwise make the relay mail the victim
// (backscatter).
func Bounceable(env *Envelope, inboundBounces string) bool {
	if env.From == "" || env.Bounce {
		return false
	}
	return !env.Inbound || inboundBounces == "headers"
}

// deliver tries rcpts of one message at the configured next hop.
func (d *Deliverer) deliver(cfg *DeliveryConfig, env *Envelope, msg []byte, rcpts []string) map[string]Result {
	out := make(map[string]Result, len(rcpts))
	if len(rcpts) == 0 {
		return out
	}
	switch cfg.Mode {
	case "local":
		for _, r := range rcpts {
			out[r] = d.local.deliver(cfg.LocalDir, env, msg, r)
		}
	case "smarthost":
		sh := cfg.Smarthost
		d.send(cfg, route{addr: sh.Addr, tls: sh.TLS, insecure: sh.InsecureSkipVerify, user: sh.Username, pass: sh.Password}, env.From, rcpts, msg, out)
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
			d.deliverMX(cfg, dom, env.From, byDomain[dom], msg, out)
		}
	}
	return out
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
