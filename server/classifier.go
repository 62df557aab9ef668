package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sluicemail/sluice/builtins"
	"github.com/sluicemail/sluice/classify"
	"github.com/sluicemail/sluice/engine"
	"github.com/sluicemail/sluice/internal/canon"
	"github.com/sluicemail/sluice/queue"
	"github.com/sluicemail/sluice/store"
)

// ClassifierConfig is how the relay trains its classifier on the mail it
// judges (SpamAssassin's bayes_auto_learn): only inbound mail, only on
// confident verdicts, and never on points the classifier gave itself.
type ClassifierConfig struct {
	// Autolearn turns training on the relay's own verdicts on (default off:
	// `sluice learn` and the console are the operator's choices).
	Autolearn bool `yaml:"autolearn"`
	// AutolearnSpamScore: inbound mail scoring at least this much without
	// the rules that read spam_probability is learned as spam (default 12,
	// SpamAssassin's bayes_auto_learn_threshold_spam).
	AutolearnSpamScore *float64 `yaml:"autolearn_spam_score"`
	// AutolearnHamScore: inbound mail scoring at most this much without
	// those rules is learned as ham (default 0.1, SpamAssassin's
	// bayes_auto_learn_threshold_nonspam).
	AutolearnHamScore *float64 `yaml:"autolearn_ham_score"`
	// AutolearnQueue bounds the messages waiting to be learned (default
	// 100; a new size takes a restart, the other keys a reload); when it
	// is full a message is not learned (counted in
	// sluice_classifier_learned_total{result="dropped"}), never delayed.
	AutolearnQueue int `yaml:"autolearn_queue"`
}

func (c *ClassifierConfig) finish() error {
	spam, ham := 12.0, 0.1
	if c.AutolearnSpamScore == nil {
		c.AutolearnSpamScore = &spam
	}
	if c.AutolearnHamScore == nil {
		c.AutolearnHamScore = &ham
	}
	if *c.AutolearnHamScore >= *c.AutolearnSpamScore {
		return fmt.Errorf("classifier: autolearn_ham_score %g must be below autolearn_spam_score %g", *c.AutolearnHamScore, *c.AutolearnSpamScore)
	}
	if c.AutolearnQueue < 0 {
		return errors.New("classifier.autolearn_queue: want a number of messages")
	}
	setDefault(&c.AutolearnQueue, 100)
	return nil
}

// OpenClassifier is the classifier kept in a relay's store (it stays at
// 0.5 until classify.DefaultMinLearned ham and spam are learned).
func OpenClassifier(st store.Store, now func() time.Time) (*classify.Classifier, error) {
	return classify.Open(st, classify.Options{Now: now})
}

// newAutolearner is the relay's autolearn worker: its results go to the
// metrics and the log.
func (s *Server) newAutolearner(size int) *classify.Autolearner {
	return classify.NewAutolearner(s.learner, size, storeTimeout, func(op, res string, err error) {
		if err != nil {
			s.log.Warn("autolearn", "as", op, "err", err.Error())
		}
		s.metrics.Learned("autolearn", res)
	})
}

// autolearnMaxBytes bounds the messages autolearn copies into its queue,
// and so the queue's memory: the tokens of a larger message are in its
// first megabyte (its header and text), and what is bigger is mostly
// attachments.
const autolearnMaxBytes = 1 << 20

// autolearn queues an inbound message whose verdict is confident without
// the classifier's own points. Outbound mail is the customers' and is never
// learned; a verdict a rule decided (an allowlist accept, a block) says
// who the sender is, not what the content is, and is not learned either.
func (s *Server) autolearn(in *builtins.Input, v *engine.Verdict, raw []byte) {
	cfg := s.cfg.Load().Classifier
	if !cfg.Autolearn || s.auto == nil || in.Outbound || v.Rule != "" || len(v.Errors) > 0 || v.Action == engine.Tempfail {
		return
	}
	if len(raw) > autolearnMaxBytes {
		s.metrics.Learned("autolearn", "too_big")
		return
	}
	score := scoreWithoutClassifier(v)
	var spam bool
	switch {
	case score >= *cfg.AutolearnSpamScore:
		spam = true
	case score <= *cfg.AutolearnHamScore:
	default:
		return
	}
	if !s.auto.Offer(bytes.Clone(raw), spam) {
		s.metrics.Learned("autolearn", "dropped")
	}
}

// scoreWithoutClassifier is the verdict's score less what the rules that
// read spam_probability added: SpamAssassin leaves its Bayes points out of
// the score that decides autolearning, or the classifier would only ever
// confirm itself.
func scoreWithoutClassifier(v *engine.Verdict) float64 {
	score := v.Score
	for _, h := range v.Hits {
		if h.Shadow {
			continue
		}
		for _, e := range h.Evidence {
			if e.Name == "spam_probability" {
				score -= h.Score
				break
			}
		}
	}
	return score
}

// learnHeld learns a held message as the operator judged it from the
// console: ham when released, spam when deleted as spam. Outbound mail is
// never learned. The relay's own header fields (its Received,
// Authentication-Results and X-Spam-*) come off first: learned, they
// would teach the classifier the relay's past verdict, not the message.
func (s *Server) learnHeld(ctx context.Context, env *queue.Envelope, msg []byte, op string) (string, error) {
	if !env.Inbound {
		return "", nil
	}
	ctx, cancel := storeCtx(ctx)
	defer cancel()
	res, err := s.learner.Learn(ctx, op, unstamp(msg, s.cfg.Load().Hostname))
	if errors.Is(err, classify.ErrEmptyMessage) {
		return "", nil // nothing to learn: the operator's action goes on
	}
	if err != nil {
		s.metrics.Learned("console", "error")
		return "", fmt.Errorf("learn %s as %s: %w", env.ID, op, err)
	}
	s.metrics.Learned("console", res)
	return res, nil
}

// unstamp removes the header fields the relay wrote on a message it
// accepted (stamp): its Received on top, then, as canon does to what a
// client brings, its Authentication-Results and X-Spam-* (the relay drops
// a client's before adding its own, so all of them are its own).
func unstamp(msg []byte, hostname string) []byte {
	if end := fieldEnd(msg); end > 0 {
		name, value, _ := strings.Cut(string(msg[:end]), ":")
		if strings.EqualFold(strings.TrimSpace(name), "received") && strings.Contains(value, "by "+hostname+" (sluice)") {
			msg = msg[end:]
		}
	}
	out, _ := canon.Message(msg, hostname, nil)
	return out
}

// fieldEnd is the length of the header field at the start of b with its
// continuation lines, 0 at the end of the header.
func fieldEnd(b []byte) int {
	if len(b) == 0 || b[0] == '\r' || b[0] == '\n' || b[0] == ' ' || b[0] == '\t' {
		return 0
	}
	i := 0
	for {
		nl := bytes.IndexByte(b[i:], '\n')
		if nl < 0 {
			return 0 // no end of line: not a header we wrote
		}
		i += nl + 1
		if i >= len(b) || (b[i] != ' ' && b[i] != '\t') {
			return i
		}
	}
}

// learnTimeout bounds the store work of one message learned through the
// admin socket.
const learnTimeout = 30 * time.Second

// adminClassifier serves `sluice learn` (and scan and explain with
// --config) on the admin socket while the relay holds the store.
func (s *Server) adminClassifier(mux *http.ServeMux) {
	readMsg := func(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
		max := s.cfg.Load().Limits.MaxMessageBytes
		raw, err := io.ReadAll(io.LimitReader(r.Body, max+1))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return nil, false
		}
		if int64(len(raw)) > max {
			http.Error(w, fmt.Sprintf("message larger than limits.max_message_bytes (%d)", max), http.StatusRequestEntityTooLarge)
			return nil, false
		}
		return raw, true
	}
	mux.HandleFunc("POST /classifier/learn/{op}", func(w http.ResponseWriter, r *http.Request) {
		op := r.PathValue("op")
		if op != classify.LearnSpam && op != classify.LearnHam && op != classify.LearnForget {
			http.Error(w, "want spam, ham or forget", http.StatusBadRequest)
			return
		}
		raw, ok := readMsg(w, r)
		if !ok {
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), learnTimeout)
		defer cancel()
		res, err := s.learner.Learn(ctx, op, raw)
		if err != nil {
			res = "error"
		}
		s.metrics.Learned("cli", res)
		reply(w, map[string]string{"result": res}, err)
	})
	mux.HandleFunc("GET /classifier", func(w http.ResponseWriter, r *http.Request) {
		ham, spam, err := s.learner.Counts(r.Context())
		reply(w, map[string]int{"ham": ham, "spam": spam}, err)
	})
	mux.HandleFunc("POST /classifier/probability", func(w http.ResponseWriter, r *http.Request) {
		raw, ok := readMsg(w, r)
		if !ok {
			return
		}
		p, tokens, err := s.learner.SpamProbability(r.Context(), raw)
		reply(w, spamVerdict{p, tokens}, err)
	})
}

// spamVerdict is the classifier's answer on the admin socket.
type spamVerdict struct {
	Probability float64  `json:"probability"`
	Tokens      []string `json:"tokens"`
}

// post sends raw to the running relay and decodes its JSON answer.
func (a *AdminClient) post(ctx context.Context, path string, raw []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, "POST", "http://sluice"+path, bytes.NewReader(raw))
	if err != nil {
		return err
	}
	resp, err := a.c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return errors.New(strings.TrimSpace(string(msg)))
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Learn has the running relay learn raw as op (classify.LearnSpam, LearnHam,
// LearnForget) and says what it did (Learned, Known, ...).
func (a *AdminClient) Learn(ctx context.Context, op string, raw []byte) (string, error) {
	var r struct{ Result string }
	err := a.post(ctx, "/classifier/learn/"+url.PathEscape(op), raw, &r)
	return r.Result, err
}

// Counts are the messages the running relay's classifier learned.
func (a *AdminClient) Counts(ctx context.Context) (ham, spam int, err error) {
	var c struct{ Ham, Spam int }
	_, err = a.do(ctx, "GET", "/classifier", nil, &c)
	return c.Ham, c.Spam, err
}

// Classifier is the running relay's classifier, for scan and explain.
func (a *AdminClient) Classifier() builtins.Classifier { return remoteClassifier{a} }

// remoteClassifier asks the running relay for spam_probability.
type remoteClassifier struct{ a *AdminClient }

func (r remoteClassifier) SpamProbability(ctx context.Context, p *builtins.Parsed) (float64, []string, error) {
	if p.Raw == nil {
		return 0, nil, errors.New("the relay's classifier needs the message itself")
	}
	var v spamVerdict
	err := r.a.post(ctx, "/classifier/probability", p.Raw, &v)
	return v.Probability, v.Tokens, err
}
