package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/sluicemail/sluice/builtins"
	"github.com/sluicemail/sluice/classify"
	"github.com/sluicemail/sluice/ruletest"
	"github.com/sluicemail/sluice/server"
)

const learnUsage = "usage: sluice learn spam|ham|forget [--config FILE] PATH..."

// learner is the classifier as `sluice learn` reaches it: the running
// relay's (server.AdminClient) or the store's, opened directly
// (classify.Learner).
type learner interface {
	Learn(ctx context.Context, op string, raw []byte) (string, error)
	Counts(ctx context.Context) (ham, spam int, err error)
}

// cmdLearn trains the classifier of the relay's state on the messages
// under the paths (read as scan reads them), or forgets them (SPEC 7).
func cmdLearn(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("learn", stderr)
	config := fs.String("config", "", "config `FILE` of the relay whose classifier learns (default $SLUICE_CONFIG, else ./sluice-state)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) < 2 || (pos[0] != classify.LearnSpam && pos[0] != classify.LearnHam && pos[0] != classify.LearnForget) {
		fmt.Fprintln(stderr, learnUsage)
		return 2
	}
	op, paths := pos[0], pos[1:]
	rs, ok := openRelayState("learn", *config, stderr)
	if !ok {
		return 1
	}
	l, closeFn, err := rs.learner()
	if err != nil {
		fmt.Fprintf(stderr, "sluice learn: %v\n", err)
		return 1
	}
	defer closeFn()

	ctx := context.Background()
	var prog *progress
	if isTerminal(stderr) {
		prog = &progress{w: stderr, verb: "learned", start: time.Now()}
	}
	results := map[string]int{}
	code, failed, n := 0, 0, 0
	for _, p := range paths {
		for f, err := range ruletest.Messages(p) {
			if err != nil {
				prog.clear()
				fmt.Fprintf(stderr, "sluice learn: %v\n", err)
				code = 2
				continue
			}
			res, err := l.Learn(ctx, op, f.Raw)
			if err != nil {
				prog.clear()
				fmt.Fprintf(stderr, "sluice learn: %s: %v\n", f.Name(), err)
				failed++
				continue
			}
			results[res]++
			n++
			prog.tick(n)
		}
	}
	prog.clear()
	if op == classify.LearnForget {
		fmt.Fprintf(stdout, "forgot %d, not learned %d, errors %d\n", results[classify.Forgotten], results[classify.Unknown], failed)
	} else {
		fmt.Fprintf(stdout, "learned %d as %s, already known %d, moved %d, errors %d\n",
			results[classify.Learned], op, results[classify.Known], results[classify.Moved], failed)
	}
	ham, spam, err := l.Counts(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "sluice learn: counts: %v\n", err)
		return max(code, 1)
	}
	fmt.Fprintf(stdout, "classifier: %d ham, %d spam learned\n", ham, spam)
	if ham < classify.DefaultMinLearned || spam < classify.DefaultMinLearned {
		fmt.Fprintf(stdout, "spam_probability stays 0.5 until at least %d ham and %d spam are learned\n", classify.DefaultMinLearned, classify.DefaultMinLearned)
	}
	if failed > 0 && code == 0 {
		code = 1
	}
	return code
}

// learner is the classifier of the relay's state: through the running
// relay, which holds the embedded store, else opened directly.
func (rs *relayState) learner() (learner, func(), error) {
	if rs.admin != nil {
		return rs.admin, func() {}, nil
	}
	st, closeFn, err := rs.store()
	if err != nil {
		return nil, nil, err
	}
	c, err := server.OpenClassifier(st.(storeState).Store, time.Now)
	if err != nil {
		closeFn()
		return nil, nil, err
	}
	return classify.NewLearner(c), closeFn, nil
}

// configClassifier is the classifier scan and explain use with --config
// (SPEC 7): that of the relay's state, through the running relay or opened
// directly. Without a state it says so, and spam_probability stays 0.5.
func configClassifier(cmd, config string, stderr io.Writer) (builtins.Classifier, func()) {
	rs, ok := openRelayState(cmd, config, stderr)
	if ok && rs.admin != nil {
		return rs.admin.Classifier(), func() {}
	}
	if ok {
		st, closeFn, err := rs.store()
		if err == nil {
			c, err := server.OpenClassifier(st.(storeState).Store, time.Now)
			if err == nil {
				return c, closeFn
			}
			closeFn()
		}
		fmt.Fprintf(stderr, "sluice %s: %v\n", cmd, err)
	}
	fmt.Fprintf(stderr, "sluice %s: no classifier: spam_probability is 0.5\n", cmd)
	return nil, func() {}
}
