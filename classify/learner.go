package classify

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicemail/sluice/builtins"
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
// each did. Its lock keeps the counts it reads around a Learn its own: a
// relay's console, autolearn and `sluice learn` go through one Learner.
type Learner struct {
	mu sync.Mutex
	c  *Classifier
}

// NewLearner learns into c.
func NewLearner(c *Classifier) *Learner { return &Learner{c: c} }

// Learn learns raw as op (LearnSpam, LearnHam, LearnForget).
func (l *Learner) Learn(ctx context.Context, op string, raw []byte) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch op {
	case LearnForget:
		found, err := l.c.Forget(ctx, raw)
		if err != nil || !found {
			return Unknown, err
		}
		return Forgotten, nil
	case LearnSpam, LearnHam:
	default:
		return "", fmt.Errorf("learn %q: want spam, ham or forget", op)
	}
	// The classifier says whether it changed; the counts tell a new
	// message from one that moved class (another relay sharing a Redis
	// store may blur that split, never the sum).
	ham0, spam0, err := l.c.Counts(ctx)
	if err != nil {
		return "", err
	}
	changed, err := l.c.Learn(ctx, raw, op == LearnSpam)
	if err != nil || !changed {
		return Known, err
	}
	ham1, spam1, err := l.c.Counts(ctx)
	if err != nil {
		return Learned, nil
	}
	if ham1+spam1 == ham0+spam0 {
		return Moved, nil
	}
	return Learned, nil
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
