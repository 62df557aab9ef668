package server

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sluicemail/sluice/queue"
)

// TestQueueRetryAndDeleteAgainstTheDeliverer: a delete leaves alone a
// message whose attempt is in flight (its attempt would write the
// envelope back) and says so; a retry moves an attempt an hour away to
// now; a deleted message is never delivered, though the queue is rescanned
// all the time.
func TestQueueRetryAndDeleteAgainstTheDeliverer(t *testing.T) {
	k := newSink(t)
	inData, unblock := make(chan struct{}), make(chan struct{})
	k.dataAnswer = func(n int) error {
		switch n {
		case 1: // the first message's first attempt: held in flight
			close(inData)
			<-unblock
			return nil
		case 2, 4, 5: // the 2nd, 3rd and 4th messages' first attempts: deferred
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "not now"}
		}
		return nil
	}
	cfg := testConfig(t, k)
	cfg.Delivery.Retry = []Duration{Duration(time.Hour)}
	cfg.Delivery.RescanInterval = Duration(20 * time.Millisecond)
	r := startRelay(t, cfg, "rules: []\n") // no hourly limit
	s := r.srv
	c := r.dial(t, "submission")
	login(t, c, "ops")
	sendOne := func(subject string) string {
		t.Helper()
		before, _ := s.spool.List(queue.AreaQueue)
		if _, err := send(c, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", subject)); err != nil {
			t.Fatal(err)
		}
		after, _ := s.spool.List(queue.AreaQueue)
		for _, id := range after {
			if !slices.Contains(before, id) {
				return id
			}
		}
		t.Fatalf("%s: not in the queue", subject)
		return ""
	}

	first := sendOne("in flight")
	<-inData
	res, err := s.QueueDelete([]string{first, "01NOSUCHMESSAGE0000000000X"}, false)
	if err != nil || len(res.Done) != 0 || !slices.Equal(res.Busy, []string{first}) || !slices.Equal(res.Missing, []string{"01NOSUCHMESSAGE0000000000X"}) {
		t.Errorf("delete of a message in flight: %+v %v", res, err)
	}
	if res, err := s.QueueRetry([]string{first}); err != nil || !slices.Equal(res.Busy, []string{first}) {
		t.Errorf("retry of a message in flight: %+v %v", res, err)
	}
	if _, err := s.spool.Envelope(queue.AreaQueue, first); err != nil {
		t.Fatalf("the message in flight is gone: %v", err)
	}
	close(unblock)
	k.wait(t, 1, 5*time.Second)

	// Deferred for an hour, then retried now.
	second := sendOne("deferred")
	waitAttempts(t, s, second, 1)
	// Busy until the worker that wrote the envelope lets go of it.
	untilDone(t, "retry", func() (*QueueResult, error) { return s.QueueRetry([]string{second}) })
	if len(k.wait(t, 2, 3*time.Second)) != 2 {
		t.Fatal("the retry did not deliver")
	}

	// Deferred, then deleted: never delivered, never rescanned back.
	third := sendOne("deleted")
	waitAttempts(t, s, third, 1)
	untilDone(t, "delete", func() (*QueueResult, error) { return s.QueueDelete([]string{third}, false) })
	if _, err := s.spool.Envelope(queue.AreaQueue, third); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("deleted message still in the spool: %v", err)
	}
	if res, err := s.QueueRetry([]string{third}); err != nil || !slices.Equal(res.Missing, []string{third}) {
		t.Errorf("retry of the deleted message: %+v %v", res, err)
	}
	time.Sleep(300 * time.Millisecond) // 15 rescans
	if n := len(k.messages()); n != 2 {
		t.Errorf("the sink holds %d messages, want 2: the deleted one went out", n)
	}

	// Deleted with a bounce: the sender learns why, the message is gone.
	fourth := sendOne("bounced")
	waitAttempts(t, s, fourth, 1)
	untilDone(t, "delete with a bounce", func() (*QueueResult, error) {
		res, err := s.QueueDelete([]string{fourth}, true)
		if err == nil && len(res.Done) == 1 && !slices.Equal(res.Bounced, []string{fourth}) {
			t.Errorf("not said bounced: %+v", res)
		}
		return res, err
	})
	got := k.wait(t, 3, 5*time.Second)
	dsn := got[2]
	if dsn.From != "" || !slices.Equal(dsn.Rcpts, []string{"x@acme.test"}) || !strings.Contains(string(dsn.Data), "deleted from the queue by the operator; last error: ") ||
		!strings.Contains(string(dsn.Data), "Status: 5.0.0") || !strings.Contains(string(dsn.Data), "Subject: bounced") {
		t.Errorf("the bounce: from <%s> to %v\n%s", dsn.From, dsn.Rcpts, dsn.Data)
	}
	if _, err := s.spool.Envelope(queue.AreaQueue, fourth); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("bounced message still in the spool: %v", err)
	}
}

// waitAttempts waits until the queued message id has had n attempts.
func waitAttempts(t *testing.T, s *Server, id string, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if e, err := s.spool.Envelope(queue.AreaQueue, id); err == nil && e.Attempts >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d attempts not seen", id, n)
		}
	}
}

// untilDone repeats a retry or delete of one message while it is busy.
func untilDone(t *testing.T, what string, do func() (*QueueResult, error)) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		res, err := do()
		if err != nil || len(res.Missing) > 0 {
			t.Fatalf("%s: %+v %v", what, res, err)
		}
		if len(res.Done) == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still busy: %+v", what, res)
		}
	}
}

// TestAdminQueueAllInBatches: through the admin socket, as `sluice queue`
// goes, ALL covers a queue larger than one request's batch.
func TestAdminQueueAllInBatches(t *testing.T) {
	k := newSink(t)
	k.dataAnswer = func(int) error {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "not now"}
	}
	cfg := testConfig(t, k)
	cfg.Delivery.Retry = []Duration{Duration(time.Hour)}
	r := startRelay(t, cfg, "rules: []\n")
	c := r.dial(t, "submission")
	login(t, c, "ops")
	const n = 2*adminBatch + 7
	for i := range n {
		subject := "m" + strconv.Itoa(i)
		if _, err := send(c, "x@acme.test", []string{"bob@example.org"}, message("x@acme.test", "bob@example.org", subject)); err != nil {
			t.Fatal(err)
		}
	}
	ids, _ := r.srv.spool.List(queue.AreaQueue)
	if len(ids) != n {
		t.Fatalf("%d queued, want %d", len(ids), n)
	}
	for _, id := range ids {
		waitAttempts(t, r.srv, id, 1)
	}
	time.Sleep(100 * time.Millisecond) // the workers let go of them
	a, ok := DialAdmin(AdminSocket(cfg))
	if !ok {
		t.Fatal("no admin socket")
	}
	ctx := context.Background()
	if envs, err := a.Queued(ctx); err != nil || len(envs) != n {
		t.Fatalf("Queued: %d %v", len(envs), err)
	}
	res, err := a.QueueDelete(ctx, nil, true, false)
	if err != nil || len(res.Done) != n || len(res.Busy)+len(res.Missing)+len(res.Bounced) != 0 {
		t.Fatalf("delete ALL: %d done, %+v %v", len(res.Done), res, err)
	}
	if left, _ := r.srv.spool.List(queue.AreaQueue); len(left) != 0 {
		t.Errorf("%d left in the queue", len(left))
	}
	if _, err := a.QueuedMessage(ctx, ids[0]); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("QueuedMessage of a deleted message: %v", err)
	}
}
