package queue

import (
	"errors"
	"fmt"
)

// The operator's side of the queue (`sluice queue retry|delete`, the
// console): acting on queued messages without racing their attempts.

// OpResult says what a retry or a delete did to each id it was given.
type OpResult struct {
	Done []string `json:"done"`
	// Busy are being delivered at this moment: a retry is moot (the
	// attempt is under way), a delete must wait for its outcome.
	Busy    []string `json:"busy,omitempty"`
	Missing []string `json:"missing,omitempty"`
	// Bounced are the deleted messages whose sender was sent a bounce.
	Bounced []string `json:"bounced,omitempty"`
}

// Retry makes the next attempt of the queued messages ids now. The
// envelope on disk keeps its next_attempt until that attempt rewrites it.
func (d *Deliverer) Retry(ids []string) (*OpResult, error) {
	res := &OpResult{Done: []string{}}
	var found []string
	for _, id := range ids {
		if _, err := d.spool.Envelope(AreaQueue, id); errors.Is(err, ErrNotFound) {
			res.Missing = append(res.Missing, id)
			continue
		} else if err != nil {
			return res, err
		}
		found = append(found, id)
	}
	res.Busy = d.RetryIDs(found)
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
		d.log.Info("queue: retry now", "messages", len(res.Done))
	}
	return res, nil
}

// Delete removes queued messages; with bounce, their senders are first
// sent a bounce (RFC 3464) for each recipient not yet delivered, unless
// they are senders no bounce goes to (Bounceable). One that is being
// delivered at this moment is left alone (Busy): its attempt would write
// its envelope back.
func (d *Deliverer) Delete(ids []string, bounce bool) (*OpResult, error) {
	res := &OpResult{Done: []string{}}
	for _, id := range ids {
		bounced := false
		busy, err := d.WhileIdle(id, func() error {
			if bounce {
				var err error
				if bounced, err = d.bounceDeleted(id); err != nil {
					return err
				}
			}
			return d.spool.Discard(AreaQueue, id)
		})
		switch {
		case busy:
			res.Busy = append(res.Busy, id)
		case errors.Is(err, ErrNotFound):
			res.Missing = append(res.Missing, id)
		case err != nil:
			return res, err
		default:
			res.Done = append(res.Done, id)
			if bounced {
				res.Bounced = append(res.Bounced, id)
			}
			d.log.Info("queue: deleted by the operator", "id", id, "bounced", bounced)
		}
	}
	return res, nil
}

// bounceDeleted queues the bounce of a message the operator deletes: its
// recipients not yet delivered fail with the reason, and the last error.
func (d *Deliverer) bounceDeleted(id string) (bool, error) {
	env, err := d.spool.Envelope(AreaQueue, id)
	if err != nil {
		return false, err
	}
	if !Bounceable(env, d.relay.DeliveryConfig().InboundBounces) {
		return false, nil
	}
	msg, err := d.spool.Message(AreaQueue, id)
	if err != nil {
		return false, err
	}
	failed := 0
	for i := range env.Rcpts {
		r := &env.Rcpts[i]
		if r.Status == StatusFailed {
			failed++ // a bounce that could not be sent before: sent now
		}
		if r.Status != StatusPending {
			continue
		}
		failed++
		// No SMTP server said this: no reply code, a 5.0.0 status.
		r.Status, r.Code, r.Enhanced = StatusFailed, 0, "5.0.0"
		if r.Detail != "" {
			r.Detail = "deleted from the queue by the operator; last error: " + r.Detail
		} else {
			r.Detail = "deleted from the queue by the operator"
		}
	}
	if failed == 0 {
		return false, nil // every recipient has its message
	}
	if err := d.SendDSN(env, msg, "failed"); err != nil {
		return false, fmt.Errorf("bounce of %s: %w", id, err)
	}
	return true, nil
}
