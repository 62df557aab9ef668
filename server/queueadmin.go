package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"

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
type QueueResult = queue.OpResult

// queueIDs is the body of a retry or delete.
type queueIDs struct {
	IDs    []string `json:"ids"`
	Bounce bool     `json:"bounce,omitempty"` // delete: bounce to the sender first
}

// adminBatch is how many ids one request to the admin socket carries: a
// delete syncs the spool for each, and the client gives a request 10 s.
const adminBatch = 100

// QueueRetry makes the next attempt of the queued messages ids now
// (queue.Deliverer.Retry).
func (s *Server) QueueRetry(ids []string) (*QueueResult, error) { return s.delivery.Retry(ids) }

// QueueDelete removes queued messages, bouncing them first if bounce
// (queue.Deliverer.Delete).
func (s *Server) QueueDelete(ids []string, bounce bool) (*QueueResult, error) {
	return s.delivery.Delete(ids, bounce)
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
