package server

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/sluicemail/sluice/queue"
)

// The delivery queue as the operator sees it (`sluice queue`, SPEC 5):
// list, show, retry now, delete. While the relay runs these go through it,
// so that a retry reaches the deliverer at once and a delete never races
// an attempt in flight; while it is stopped the command opens the spool
// itself (cmd/sluice/queue.go).

// QueuedMessage is a message in the delivery queue with its envelope.
type QueuedMessage struct {
	Envelope *queue.Envelope `json:"envelope"`
	Message  []byte          `json:"message"`
}

// QueueResult says what a retry or a delete did to each id it was given.
type QueueResult struct {
	Done []string `json:"done"`
	// Busy are being delivered at this moment: a retry is moot (the
	// attempt is under way), a delete must wait for its outcome.
	Busy    []string `json:"busy,omitempty"`
	Missing []string `json:"missing,omitempty"`
	// Bounced are the deleted messages whose sender was sent a bounce.
	Bounced []string `json:"bounced,omitempty"`
}

// queueIDs is the body of a retry or delete.
type queueIDs struct {
	IDs    []string `json:"ids"`
	Bounce bool     `json:"bounce,omitempty"` // delete: bounce to the sender first
}

// adminBatch is how many ids one request to the admin socket carries: a
// delete syncs the spool for each, and the client gives a request 10 s.
const adminBatch = 100

// QueueRetry makes the next attempt of the queued messages ids now. The
// envelope on disk keeps its next_attempt until that attempt rewrites it.
func (s *Server) QueueRetry(ids []string) (*QueueResult, error) {
	res := &QueueResult{Done: []string{}}
	var found []string
	for _, id := range ids {
		if _, err := s.spool.Envelope(queue.AreaQueue, id); errors.Is(err, queue.ErrNotFound) {
			res.Missing = append(res.Missing, id)
			continue
		} else if err != nil {
			return res, err
		}
		found = append(found, id)
	}
	res.Busy = s.delivery.retryNow(found, s.opts.Now())
	busy := map[string]bool{}
	for _, id := range res.Busy {
		busy[id] = true
	}
	for _, id := range found {
		if !busy[id] {
			res.Done = append(res.Done, id)
		}
	}
	if len(res.Done) > 0 {
		s.log.Info("queue: retry now", "messages", len(res.Done))
	}
	return res, nil
}

// QueueDelete removes queued messages; with bounce, their senders are
// first sent a bounce (RFC 3464) for each recipient not yet delivered,
// unless they are senders no bounce goes to (see bounceable). One that is
// being delivered at this moment is left alone (Busy): its attempt would
// write its envelope back.
func (s *Server) QueueDelete(ids []string, bounce bool) (*QueueResult, error) {
	res := &QueueResult{Done: []string{}}
	for _, id := range ids {
		bounced := false
		busy, err := s.delivery.whileIdle(id, func() error {
			if bounce {
				var err error
				if bounced, err = s.bounceDeleted(id); err != nil {
					return err
				}
			}
			return s.spool.Discard(queue.AreaQueue, id)
		})
		switch {
		case busy:
			res.Busy = append(res.Busy, id)
		case errors.Is(err, queue.ErrNotFound):
			res.Missing = append(res.Missing, id)
		case err != nil:
			return res, err
		default:
			res.Done = append(res.Done, id)
			if bounced {
				res.Bounced = append(res.Bounced, id)
			}
			s.log.Info("queue: deleted by the operator", "id", id, "bounced", bounced)
		}
	}
	return res, nil
}

// bounceDeleted queues the bounce of a message the operator deletes: its
// recipients not yet delivered fail with the reason, and the last error.
func (s *Server) bounceDeleted(id string) (bool, error) {
	env, err := s.spool.Envelope(queue.AreaQueue, id)
	if err != nil {
		return false, err
	}
	if !s.bounceable(s.cfg.Load(), env) {
		return false, nil
	}
	msg, err := s.spool.Message(queue.AreaQueue, id)
	if err != nil {
		return false, err
	}
	failed := 0
	for i := range env.Rcpts {
		r := &env.Rcpts[i]
		if r.Status == queue.StatusFailed {
			failed++ // a bounce that could not be sent before: sent now
		}
		if r.Status != queue.StatusPending {
			continue
		}
		failed++
		// No SMTP server said this: no reply code, a 5.0.0 status.
		r.Status, r.Code, r.Enhanced = queue.StatusFailed, 0, "5.0.0"
		if r.Detail != "" {
			r.Detail = "deleted from the queue by the operator; last error: " + r.Detail
		} else {
			r.Detail = "deleted from the queue by the operator"
		}
	}
	if failed == 0 {
		return false, nil // every recipient has its message
	}
	if err := s.sendDSN(env, msg, "failed"); err != nil {
		return false, fmt.Errorf("bounce of %s: %w", id, err)
	}
	return true, nil
}

// The deliverer's part in the queue commands is these two calls: when
// delivery changes, they are what must follow.

// retryNow moves the ids' next attempt to now and returns those in flight
// (or still being spooled, whose first attempt comes at once anyway).
func (d *deliverer) retryNow(ids []string, now time.Time) (busy []string) {
	d.mu.Lock()
	want := map[string]bool{}
	for _, id := range ids {
		switch {
		case d.busy[id] || d.claimed[id]:
			busy = append(busy, id)
		case d.queued[id]:
			want[id] = true
		default:
			d.push(id, now) // on disk but not yet rescanned
		}
	}
	if len(want) > 0 {
		for i := range d.due {
			if want[d.due[i].id] {
				d.due[i].at = now
			}
		}
		heap.Init(&d.due)
	}
	d.mu.Unlock()
	d.poke()
	return busy
}

// whileIdle runs f (a delete) with id out of the deliverer's hands: out
// of the heap and the fresh cache, and marked busy so that neither the
// dispatcher nor a rescan picks it up meanwhile. It does not run f, and
// reports busy, while an attempt (or the message's spooling) is under way.
func (d *deliverer) whileIdle(id string, f func() error) (busy bool, err error) {
	d.mu.Lock()
	if d.busy[id] || d.claimed[id] {
		d.mu.Unlock()
		return true, nil
	}
	if d.queued[id] {
		delete(d.queued, id)
		for i := range d.due {
			if d.due[i].id == id {
				heap.Remove(&d.due, i)
				break
			}
		}
	}
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

// errBusy: a delete of a message whose attempt is under way.
var errBusy = errors.New("being delivered right now; try again in a moment")

// RetryQueued is QueueRetry of one message, for the console; one being
// delivered at this moment is being tried already.
func (c consoleRelay) RetryQueued(_ context.Context, id string) error {
	res, err := c.s.QueueRetry([]string{id})
	if err == nil && len(res.Missing) > 0 {
		err = queue.ErrNotFound
	}
	return err
}

// DeleteQueued is QueueDelete of one message, for the console.
func (c consoleRelay) DeleteQueued(_ context.Context, id string) error {
	res, err := c.s.QueueDelete([]string{id}, false)
	switch {
	case err != nil:
		return err
	case len(res.Missing) > 0:
		return queue.ErrNotFound
	case len(res.Busy) > 0:
		return errBusy
	}
	return nil
}

// queueRoutes serves the queue on the admin socket.
func (s *Server) queueRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /queue", func(w http.ResponseWriter, r *http.Request) {
		ids, err := s.spool.List(queue.AreaQueue)
		envs := []*queue.Envelope{}
		for _, id := range ids {
			if e, err := s.spool.Envelope(queue.AreaQueue, id); err == nil {
				envs = append(envs, e) // else delivered meanwhile
			}
		}
		reply(w, envs, err)
	})
	mux.HandleFunc("GET /queue/{id}", func(w http.ResponseWriter, r *http.Request) {
		var m QueuedMessage
		var err error
		if m.Envelope, err = s.spool.Envelope(queue.AreaQueue, r.PathValue("id")); err == nil {
			m.Message, err = s.spool.Message(queue.AreaQueue, r.PathValue("id"))
		}
		replySpool(w, m, err)
	})
	act := func(do func(queueIDs) (*QueueResult, error)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			var q queueIDs
			if err := json.NewDecoder(io.LimitReader(r.Body, 16<<20)).Decode(&q); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			res, err := do(q)
			reply(w, res, err)
		}
	}
	mux.HandleFunc("POST /queue/retry", act(func(q queueIDs) (*QueueResult, error) { return s.QueueRetry(q.IDs) }))
	mux.HandleFunc("POST /queue/delete", act(func(q queueIDs) (*QueueResult, error) { return s.QueueDelete(q.IDs, q.Bounce) }))
}

// errOldRelay: a 404 on an endpoint every relay with `sluice queue` has.
var errOldRelay = errors.New("the running relay does not offer the queue on its admin socket (restart it with this version)")

// Queued lists the running relay's delivery queue, oldest first.
func (a *AdminClient) Queued(ctx context.Context) ([]*queue.Envelope, error) {
	var es []*queue.Envelope
	_, err := a.do(ctx, "GET", "/queue", nil, &es)
	return es, err
}

// QueuedMessage fetches a queued message; queue.ErrNotFound if there is none.
func (a *AdminClient) QueuedMessage(ctx context.Context, id string) (*QueuedMessage, error) {
	var m QueuedMessage
	code, err := a.do(ctx, "GET", "/queue/"+url.PathEscape(id), nil, &m)
	if code == 404 {
		return nil, queue.ErrNotFound
	}
	return &m, err
}

// QueueRetry has the running relay try the messages now (all: the whole queue).
func (a *AdminClient) QueueRetry(ctx context.Context, ids []string, all bool) (*QueueResult, error) {
	return a.queueAct(ctx, "/queue/retry", ids, all, false)
}

// QueueDelete has the running relay delete the messages (all: the whole
// queue), bouncing them first if bounce.
func (a *AdminClient) QueueDelete(ctx context.Context, ids []string, all, bounce bool) (*QueueResult, error) {
	return a.queueAct(ctx, "/queue/delete", ids, all, bounce)
}

// queueAct sends the ids in batches of adminBatch; all is the queue's ids
// at this moment.
func (a *AdminClient) queueAct(ctx context.Context, path string, ids []string, all, bounce bool) (*QueueResult, error) {
	if all {
		envs, err := a.Queued(ctx)
		if err != nil {
			return nil, err
		}
		ids = nil
		for _, e := range envs {
			ids = append(ids, e.ID)
		}
	}
	total := &QueueResult{Done: []string{}}
	for len(ids) > 0 {
		n := min(len(ids), adminBatch)
		var res QueueResult
		code, err := a.do(ctx, "POST", path, queueIDs{IDs: ids[:n], Bounce: bounce}, &res)
		if code == 404 {
			return nil, errOldRelay
		}
		total.Done = append(total.Done, res.Done...)
		total.Busy = append(total.Busy, res.Busy...)
		total.Missing = append(total.Missing, res.Missing...)
		total.Bounced = append(total.Bounced, res.Bounced...)
		if err != nil {
			return total, err
		}
		ids = ids[n:]
	}
	return total, nil
}
