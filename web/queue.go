package web

import (
	"net/http"
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

// queuePage lists the delivery queue. Only a list: the relay offers no
// retry-now or delete of a queued message yet (`sluice queue` has not
// landed), and deleting behind the deliverer's back would race its
// attempt.
func (c *Console) queuePage(w http.ResponseWriter, r *http.Request) {
	q, err := c.opts.Relay.Queue(r.Context())
	if err != nil {
		c.oops(w, r, "read the queue", err)
		return
	}
	c.show(w, r, http.StatusOK, "queue", "Delivery queue", "console_queue.html", q)
}
