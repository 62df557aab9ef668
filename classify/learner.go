package classify

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicemail/sluice/builtins"
	"github.com/sluicemail/sluice/store"
)

// Learn operations, as `sluice learn` names them.
const (
	LearnSpam   = "spam"
	LearnHam    = "ham"
	LearnForget = "forget"
)

// Learn results: what one message did to the classifier.
const (
	Learned   = "learned"   // new to it
	Known     = "known"     // already learned as that class
	Moved     = "moved"     // learned before as the other class
	Forgotten = "forgotten" // forget: removed
	Unknown   = "unknown"   // forget: it was never learned
)

// Learner learns messages into a classifier one at a time and says what
// each did, from the class the store had for the message before (read in
// the same atomic step as the change): a relay's console, autolearn and
// `sluice learn` go through it.
type Learner struct {
	c *Classifier
}

// NewLearner learns into c.
func NewLearner(c *Classifier) *Learner { return &Learner{c: c} }

// Learn learns raw as op (LearnSpam, LearnHam, LearnForget).
func (l *Learner) Learn(ctx context.Context, op string, raw []byte) (string, error) {
	var class store.TokenClass
	switch op {
	case LearnSpam:
		class = store.TokenSpam
	case LearnHam:
		class = store.TokenHam
	case LearnForget:
		class = store.TokenNone
	default:
		return "", fmt.Errorf("learn %q: want spam, ham or forget", op)
	}
	if err := checkRaw(raw); err != nil {
		return "", err
	}
	prev, err := l.c.learnAs(ctx, raw, parse(raw), class)
	switch {
	case err != nil:
		return "", err
	case class == store.TokenNone && prev == store.TokenNone:
		return Unknown, nil
	case class == store.TokenNone:
		return Forgotten, nil
	case prev == class:
		return Known, nil
	case prev == store.TokenNone:
		return Learned, nil
	default:
		return Moved, nil
	}
}

// Counts are the messages learned as ham and as spam.
func (l *Learner) Counts(ctx context.Context) (ham, spam int, err error) {
	return l.c.Counts(ctx)
}

// SpamProbability is the classifier's verdict on a raw message.
func (l *Learner) SpamProbability(ctx context.Context, raw []byte) (float64, []string, error) {
	return l.c.SpamProbability(ctx, builtins.Parse(raw, builtins.Limits{}))
}

// learnJob is a message autolearn queued.
type learnJob struct {
	raw  []byte
	spam bool
}

// Autolearner learns messages off the SMTP reply path: Offer only queues
// (the caller's copy), a full queue drops, and one worker learns what is
// queued through the Learner, telling done each result.
type Autolearner struct {
	l       *Learner
	timeout time.Duration // of the store work of one message
	done    func(op, result string, err error)
	q       chan learnJob
	stop    chan struct{}
	stopped chan struct{}
	once    sync.Once
	started atomic.Bool
}

// NewAutolearner queues up to size messages for l; done hears each
// learn's result ("error" with err when it failed).
func NewAutolearner(l *Learner, size int, timeout time.Duration, done func(op, result string, err error)) *Autolearner {
	return &Autolearner{l: l, timeout: timeout, done: done, q: make(chan learnJob, size),
		stop: make(chan struct{}), stopped: make(chan struct{})}
}

// Offer queues raw to be learned as spam or ham; false when the queue is
// full and it was dropped.
func (a *Autolearner) Offer(raw []byte, spam bool) bool {
	select {
	case a.q <- learnJob{raw: raw, spam: spam}:
		return true
	default:
		return false
	}
}

// Queued is how many messages wait to be learned.
func (a *Autolearner) Queued() int { return len(a.q) }

// Start runs the worker until ctx ends or Shutdown.
func (a *Autolearner) Start(ctx context.Context) {
	a.started.Store(true)
	go func() {
		defer close(a.stopped)
		for {
			select {
			case <-ctx.Done():
				return
			case <-a.stop:
				return
			case j := <-a.q:
				op := LearnHam
				if j.spam {
					op = LearnSpam
				}
				lctx, cancel := context.WithTimeout(ctx, a.timeout)
				res, err := a.l.Learn(lctx, op, j.raw)
				cancel()
				if err != nil {
					res = "error"
				}
				a.done(op, res, err)
			}
		}
	}()
}

// Shutdown stops the worker after the message it is learning; what is
// still queued is not learned. It returns at once if Start never ran.
func (a *Autolearner) Shutdown() {
	a.once.Do(func() { close(a.stop) })
	if a.started.Load() {
		<-a.stopped
	}
}
