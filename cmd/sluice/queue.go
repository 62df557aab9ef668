package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluicemail/sluice/queue"
	"github.com/sluicemail/sluice/server"
)

const queueUsage = "usage: sluice queue list [--count] [--json] | show ID [--body] | retry ID...|ALL | delete [--bounce] ID...|ALL [--config FILE]"

// queueArea is the delivery queue, of the running relay or of the spool.
type queueArea interface {
	Queued(ctx context.Context) ([]*queue.Envelope, error)
	QueuedMessage(ctx context.Context, id string) (*server.QueuedMessage, error)
	QueueRetry(ctx context.Context, ids []string, all bool) (*server.QueueResult, error)
	QueueDelete(ctx context.Context, ids []string, all, bounce bool) (*server.QueueResult, error)
}

// queue returns the queue and what closes it: the spool opened directly
// holds its lock until closed, so a relay starting meanwhile waits.
func (rs *relayState) queue() (queueArea, func(), error) {
	if rs.admin != nil {
		return rs.admin, func() {}, nil
	}
	sp, err := queue.OpenSpool(filepath.Join(rs.dir, "spool"))
	if err != nil {
		return nil, nil, err
	}
	return spoolQueue{sp}, func() { sp.Close() }, nil
}

// spoolQueue is the queue read and changed in the spool directly, while
// no relay runs: a retry sets the next attempt to now, which the relay
// honours when it starts.
type spoolQueue struct{ sp *queue.Spool }

func (q spoolQueue) Queued(context.Context) ([]*queue.Envelope, error) {
	ids, err := q.sp.List(queue.AreaQueue)
	out := []*queue.Envelope{}
	for _, id := range ids {
		if e, err := q.sp.Envelope(queue.AreaQueue, id); err == nil {
			out = append(out, e)
		}
	}
	return out, err
}

func (q spoolQueue) QueuedMessage(_ context.Context, id string) (*server.QueuedMessage, error) {
	e, err := q.sp.Envelope(queue.AreaQueue, id)
	if err != nil {
		return nil, err
	}
	msg, err := q.sp.Message(queue.AreaQueue, id)
	return &server.QueuedMessage{Envelope: e, Message: msg}, err
}

func (q spoolQueue) each(ids []string, all bool, do func(id string) error) (*server.QueueResult, error) {
	if all {
		var err error
		if ids, err = q.sp.List(queue.AreaQueue); err != nil {
			return nil, err
		}
	}
	res := &server.QueueResult{}
	for _, id := range ids {
		switch err := do(id); {
		case errors.Is(err, queue.ErrNotFound):
			res.Missing = append(res.Missing, id)
		case err != nil:
			return res, fmt.Errorf("%s: %w", id, err)
		default:
			res.Done = append(res.Done, id)
		}
	}
	return res, nil
}

func (q spoolQueue) QueueRetry(_ context.Context, ids []string, all bool) (*server.QueueResult, error) {
	now := time.Now().UTC()
	return q.each(ids, all, func(id string) error {
		e, err := q.sp.Envelope(queue.AreaQueue, id)
		if err != nil {
			return err
		}
		e.NextAttempt = now
		return q.sp.Update(queue.AreaQueue, e)
	})
}

// errBounceNeedsRelay: a bounce is a message to send, which only a
// running relay does.
var errBounceNeedsRelay = errors.New("--bounce needs the running relay, which sends the bounces: start it, or delete without --bounce")

func (q spoolQueue) QueueDelete(_ context.Context, ids []string, all, bounce bool) (*server.QueueResult, error) {
	if bounce {
		return nil, errBounceNeedsRelay
	}
	// Discard, not Remove: a delete lost in a crash would bring the
	// message back to be delivered.
	return q.each(ids, all, func(id string) error { return q.sp.Discard(queue.AreaQueue, id) })
}

func cmdQueue(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("queue", stderr)
	config := fs.String("config", "", "config `FILE` (default: $SLUICE_CONFIG, else the embedded default)")
	count := fs.Bool("count", false, "list: print only the number of queued messages")
	asJSON := fs.Bool("json", false, "list: print the envelopes as JSON")
	body := fs.Bool("body", false, "show: print the whole message, not only its header")
	bounce := fs.Bool("bounce", false, "delete: send the sender a bounce first (needs the running relay)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) == 0 {
		fmt.Fprintln(stderr, queueUsage)
		return 2
	}
	switch pos[0] {
	case "list", "show", "retry", "delete":
	default:
		fmt.Fprintf(stderr, "sluice queue: unknown subcommand %q\n%s\n", pos[0], queueUsage)
		return 2
	}
	if (pos[0] == "show" && len(pos) != 2) || ((pos[0] == "retry" || pos[0] == "delete") && len(pos) < 2) {
		fmt.Fprintln(stderr, queueUsage)
		return 2
	}
	rs, ok := openRelayState("queue", *config, stderr)
	if !ok {
		return 1
	}
	q, closeQueue, err := rs.queue()
	if err != nil {
		fmt.Fprintln(stderr, "sluice queue:", err)
		return 1
	}
	defer closeQueue()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	now := time.Now()
	switch pos[0] {
	case "list":
		envs, err := q.Queued(ctx)
		if err != nil {
			fmt.Fprintln(stderr, "sluice queue:", err)
			return 1
		}
		switch {
		case *count:
			fmt.Fprintln(stdout, len(envs))
		case *asJSON:
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			enc.Encode(envs)
		default:
			printQueue(stdout, envs, now)
		}
		return 0
	case "show":
		m, err := q.QueuedMessage(ctx, pos[1])
		if err != nil {
			fmt.Fprintf(stderr, "sluice queue show: %s: %v%s\n", pos[1], err, rs.heldHint(ctx, pos[1], err))
			return 1
		}
		printQueued(stdout, m, now, *body)
		return 0
	}
	ids, all := pos[1:], len(pos) == 2 && pos[1] == "ALL"
	var res *server.QueueResult
	if pos[0] == "retry" {
		res, err = q.QueueRetry(ctx, ids, all)
	} else {
		res, err = q.QueueDelete(ctx, ids, all, *bounce)
	}
	code := 0
	if res != nil {
		bounced := map[string]bool{}
		for _, id := range res.Bounced {
			bounced[id] = true
		}
		for _, id := range res.Done {
			if pos[0] == "delete" {
				switch {
				case bounced[id]:
					fmt.Fprintf(stdout, "%s deleted, its sender sent a bounce\n", id)
				case *bounce:
					fmt.Fprintf(stdout, "%s deleted (no bounce: the null sender, a bounce itself, inbound mail, or no recipient undelivered)\n", id)
				default:
					fmt.Fprintf(stdout, "%s deleted (no bounce sent)\n", id)
				}
			} else if rs.admin != nil {
				fmt.Fprintf(stdout, "%s: next attempt now\n", id)
			} else {
				fmt.Fprintf(stdout, "%s: next attempt as soon as the relay runs\n", id)
			}
		}
		for _, id := range res.Busy {
			if pos[0] == "retry" {
				fmt.Fprintf(stdout, "%s: being delivered right now\n", id)
			} else {
				fmt.Fprintf(stderr, "sluice queue delete: %s: being delivered right now; try again in a moment\n", id)
				code = 1
			}
		}
		for _, id := range res.Missing {
			if all {
				continue // delivered since the queue was listed
			}
			fmt.Fprintf(stderr, "sluice queue %s: %s: %v%s\n", pos[0], id, queue.ErrNotFound, rs.heldHint(ctx, id, queue.ErrNotFound))
			code = 1
		}
		if all && len(res.Done)+len(res.Busy)+len(res.Missing) == 0 {
			fmt.Fprintln(stdout, "the queue is empty")
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "sluice queue %s: %v\n", pos[0], err)
		return 1
	}
	return code
}

// heldHint points to sluice hold for an id not in the queue but held.
func (rs *relayState) heldHint(ctx context.Context, id string, err error) string {
	if !errors.Is(err, queue.ErrNotFound) {
		return ""
	}
	if h, herr := rs.hold(); herr == nil {
		if _, herr := h.HeldMessage(ctx, id); herr == nil {
			return " in the queue: it is in the holding area (sluice hold show|release|delete)"
		}
	}
	return ""
}

// printQueue prints one paragraph per message: its line (age, size,
// attempts, next attempt, sender), then each recipient with its status
// and the last reply or error, as mailq does.
func printQueue(w io.Writer, envs []*queue.Envelope, now time.Time) {
	pending := 0
	for _, e := range envs {
		fmt.Fprintf(w, "%s  age %s  %d bytes  %s  next %s  from <%s>\n",
			e.ID, age(now.Sub(e.Received)), e.Size, plural(e.Attempts, "attempt"), nextAttempt(e.NextAttempt, now), e.From)
		for _, r := range e.Rcpts {
			if r.Status == queue.StatusPending {
				pending++
			}
			fmt.Fprintf(w, "    %-9s <%s>%s\n", r.Status, r.Addr, lastReply(r))
		}
	}
	fmt.Fprintf(w, "%s waiting, %s pending\n", plural(len(envs), "message"), plural(pending, "recipient"))
}

func printQueued(w io.Writer, m *server.QueuedMessage, now time.Time, body bool) {
	e := m.Envelope
	fmt.Fprintf(w, "id:       %s\nreceived: %s (age %s)\n", e.ID, e.Received.Format(time.RFC3339), age(now.Sub(e.Received)))
	fmt.Fprintf(w, "user:     %s\nclient:   %s (helo %s)\nfrom:     <%s>\nsize:     %d bytes\n", dash(e.User), dash(e.ClientIP), dash(e.Helo), e.From, e.Size)
	fmt.Fprintf(w, "attempts: %d\nnext:     %s", e.Attempts, nextAttempt(e.NextAttempt, now))
	if !e.NextAttempt.IsZero() {
		fmt.Fprintf(w, " (%s)", e.NextAttempt.Format(time.RFC3339))
	}
	fmt.Fprintln(w)
	for _, r := range e.Rcpts {
		fmt.Fprintf(w, "to:       <%s> %s%s", r.Addr, r.Status, lastReply(r))
		if !r.At.IsZero() {
			fmt.Fprintf(w, " (at %s)", r.At.Format(time.RFC3339))
		}
		fmt.Fprintln(w)
	}
	if e.Bounce {
		fmt.Fprintln(w, "bounce:   yes (a delivery status notification: never bounced itself)")
	}
	fmt.Fprintln(w)
	msg := m.Message
	if !body {
		msg = header(msg)
	}
	w.Write(msg)
}

// header is the message's header section with the blank line that ends it.
func header(msg []byte) []byte {
	for _, sep := range []string{"\r\n\r\n", "\n\n"} {
		if i := bytes.Index(msg, []byte(sep)); i >= 0 {
			return msg[:i+len(sep)]
		}
	}
	return msg
}

// lastReply is a recipient's last reply or error, with the host that gave it.
func lastReply(r queue.RcptState) string {
	var parts []string
	if r.Code != 0 {
		parts = append(parts, fmt.Sprint(r.Code))
	}
	if r.Enhanced != "" {
		parts = append(parts, r.Enhanced)
	}
	if r.Detail != "" {
		parts = append(parts, strings.Join(strings.Fields(r.Detail), " "))
	}
	if r.Remote != "" {
		parts = append(parts, "(from "+r.Remote+")")
	}
	if len(parts) == 0 {
		return ""
	}
	return "  " + strings.Join(parts, " ")
}

// nextAttempt says when the next attempt is due, relative to now.
func nextAttempt(at, now time.Time) string {
	if d := at.Sub(now); d > 0 {
		return "in " + age(d)
	}
	return "due now"
}

// age is a duration as an operator reads it: 45s, 12m30s, 3h5m, 2d4h.
func age(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}
