package web

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Queued is a message in the delivery queue.
type Queued struct {
	ID, From, User string
	Received       time.Time
	Size, Attempts int
	NextAttempt    time.Time
	Rcpts          []QueuedRcpt
	Node           string
}

// QueuedRcpt is one recipient's delivery state: pending, delivered or
// failed, with the last reply or error.
type QueuedRcpt struct {
	Addr, Status, Detail, Remote string
	Code                         int
	Enhanced                     string
	At                           time.Time
}

// queuePage lists the delivery queue, with retry-now and delete for the
// checked messages.
func (c *Console) queuePage(w http.ResponseWriter, r *http.Request) {
	q, err := c.opts.Relay.Queue(r.Context())
	if err != nil {
		c.oops(w, r, "read the queue", err)
		return
	}
	c.show(w, r, http.StatusOK, "queue", "Delivery queue", "console_queue.html", q)
}

// queueAct retries or deletes the checked messages, as `sluice queue
// retry|delete` does.
func (c *Console) queueAct(w http.ResponseWriter, r *http.Request) {
	op, ids, admin := r.PostForm.Get("op"), r.PostForm["id"], sess(r).admin
	if op != "retry" && op != "delete" {
		c.fail(w, http.StatusBadRequest, "Request not understood", "Unknown action.")
		return
	}
	if len(ids) == 0 {
		done(w, r, "/queue", "No message was selected.")
		return
	}
	var n int
	var failed []string
	for _, id := range ids {
		var err error
		if op == "retry" {
			err = c.opts.Relay.RetryQueued(r.Context(), id)
		} else {
			err = c.opts.Relay.DeleteQueued(r.Context(), id)
		}
		if err != nil {
			c.opts.Log.Warn("console: queue "+op, "admin", admin, "id", id, "err", err.Error())
			failed = append(failed, id+" ("+err.Error()+")")
			continue
		}
		n++
		c.opts.Log.Info("console: queue "+op, "admin", admin, "id", id)
	}
	msg := "Retried now: "
	if op == "delete" {
		msg = "Deleted (no bounce sent): "
	}
	msg += strconv.Itoa(n)
	if failed != nil {
		msg += "; failed: " + strings.Join(failed, ", ")
	}
	done(w, r, "/queue", msg+".")
}
