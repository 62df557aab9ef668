package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"iter"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/sluicemail/sluice/engine"
	"github.com/sluicemail/sluice/ruletest"
	"github.com/sluicemail/sluice/server"
)

const scanUsage = "usage: sluice scan [--rules DIR] [--context FILE] [--config FILE] [--json] [--hits] [-j N] [ham=|spam=]PATH..."

// scanActions are the verdicts the summary counts, in its order (SPEC 7).
var scanActions = [...]string{engine.Accept, engine.Tag, engine.Hold, engine.Tempfail, engine.Reject}

// scanSource is one PATH argument, with its label when given as ham=PATH
// or spam=PATH.
type scanSource struct{ label, path string }

// scanJob is one message on its way through the workers; done is closed
// when v (or err) is set.
type scanJob struct {
	label string
	name  string
	raw   []byte
	v     *engine.Verdict
	err   error
	read  bool // err is a path that could not be read
	done  chan struct{}
}

func cmdScan(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("scan", stderr)
	rules := fs.String("rules", "rules.d", "rules directory")
	ctxFile := fs.String("context", "", "YAML `FILE` with the session context applied to every message")
	config := fs.String("config", "", "config `FILE`: its rules directory (unless --rules is given) and the classifier of its state")
	asJSON := fs.Bool("json", false, "print one JSON object per message, and no summary")
	hits := fs.Bool("hits", false, "add a table of every rule's hits (per ham= and spam= label when given)")
	jobs := fs.Int("j", runtime.GOMAXPROCS(0), "evaluate `N` messages at a time")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) == 0 || *jobs < 1 || (*asJSON && *hits) {
		if *asJSON && *hits {
			fmt.Fprintln(stderr, "sluice scan: --hits prints a table, which --json does not carry")
		}
		fmt.Fprintln(stderr, scanUsage)
		return 2
	}
	if *config != "" && !flagGiven(fs, "rules") {
		cfg, err := server.LoadConfig(*config)
		if err != nil {
			fmt.Fprintf(stderr, "sluice scan: %v\n", err)
			return 1
		}
		*rules = cfg.RulesDir
	}
	var c ruletest.Context
	if *ctxFile != "" {
		if err := readContext(*ctxFile, &c); err != nil {
			fmt.Fprintf(stderr, "sluice scan: %v\n", err)
			return 1
		}
	}
	if *config != "" {
		cls, closeCls := configClassifier("scan", *config, stderr)
		defer closeCls()
		c.Classifier = cls
	}
	rs, ok := loadRules(*rules, stderr)
	if !ok {
		return 1
	}
	// The context is the same for every message: a bad one is said once.
	if _, _, err := c.Input(rs.Registry(), nil); err != nil {
		fmt.Fprintf(stderr, "sluice scan: %s: %v\n", *ctxFile, err)
		return 1
	}
	var srcs []scanSource
	for _, p := range pos {
		label, path, ok := strings.Cut(p, "=")
		if !ok || (label != "ham" && label != "spam") {
			label, path = "", p
		}
		srcs = append(srcs, scanSource{label, path})
	}

	s := newScanStats(rs)
	out := bufio.NewWriterSize(stdout, 64<<10)
	enc := json.NewEncoder(out)
	var prog *progress
	if isTerminal(stderr) {
		prog = &progress{w: stderr, verb: "scanned", start: time.Now()}
	}
	code := 0
	for j := range scanAll(context.Background(), rs, &c, srcs, *jobs) {
		if j.err != nil {
			fmt.Fprintf(stderr, "sluice scan: %v\n", j.err)
			if j.read {
				code = 2
			} else if code == 0 {
				code = 1
			}
			continue
		}
		names := firedRules(j.v)
		s.add(j.label, j.v.Action, names)
		if *asJSON {
			if names == nil {
				names = []string{}
			}
			enc.Encode(struct {
				Path   string   `json:"path"`
				Action string   `json:"action"`
				Score  float64  `json:"score"`
				Rules  []string `json:"rules"`
			}{j.name, j.v.Action, j.v.Score, names})
		} else {
			list := "-"
			if len(names) > 0 {
				list = strings.Join(names, ",")
			}
			fmt.Fprintf(out, "%s\t%s\t%g\t%s\n", j.name, j.v.Action, j.v.Score, list)
		}
		prog.tick(s.total.n)
	}
	prog.clear()
	if !*asJSON {
		if *hits {
			fmt.Fprintln(out)
			if s.labelled() {
				s.writeFrequencies(out)
			} else {
				s.writeHits(out)
			}
		}
		s.writeSummary(out)
	}
	if err := out.Flush(); err != nil {
		fmt.Fprintf(stderr, "sluice scan: %v\n", err)
		return 1
	}
	return code
}

// scanAll evaluates every message under srcs on n workers and yields them
// in input order. At most 4n messages are read ahead of the one being
// yielded, so a corpus is never held in memory.
func scanAll(ctx context.Context, rs *engine.RuleSet, c *ruletest.Context, srcs []scanSource, n int) iter.Seq[*scanJob] {
	return func(yield func(*scanJob) bool) {
		order := make(chan *scanJob, 4*n)
		work := make(chan *scanJob, n)
		stop := make(chan struct{})
		defer func() {
			close(stop)
			for range order { // let the reader and the workers finish
			}
		}()
		go func() {
			defer close(order)
			defer close(work)
			for _, src := range srcs {
				for f, err := range ruletest.Messages(src.path) {
					j := &scanJob{label: src.label, name: f.Name(), raw: f.Raw, done: make(chan struct{})}
					if err != nil {
						j.err, j.read = err, true
						close(j.done)
					}
					select {
					case order <- j:
					case <-stop:
						return
					}
					if err == nil {
						work <- j
					}
				}
			}
		}()
		for range n {
			go func() {
				for j := range work {
					v, err := c.Judge(ctx, rs, j.raw)
					if err != nil {
						err = fmt.Errorf("%s: %w", j.name, err)
					}
					j.v, j.err, j.raw = v, err, nil
					close(j.done)
				}
			}()
		}
		for j := range order {
			<-j.done
			if !yield(j) {
				return
			}
		}
	}
}

// firedRules are the rules that fired on the message, shadow rules
// included, each once, in the order they fired.
func firedRules(v *engine.Verdict) []string {
	var out []string
	for _, h := range v.Hits {
		if !slices.Contains(out, h.Rule) {
			out = append(out, h.Rule)
		}
	}
	return out
}

// scanCounts are the verdicts on a set of messages and how often each rule
// fired on them.
type scanCounts struct {
	n       int
	actions map[string]int
	rules   map[string]int
}

func (c *scanCounts) add(action string, rules []string) {
	c.n++
	c.actions[action]++
	for _, r := range rules {
		c.rules[r]++
	}
}

// flagged counts the messages tagged, held or rejected.
func (c *scanCounts) flagged() int {
	return c.actions[engine.Tag] + c.actions[engine.Hold] + c.actions[engine.Reject]
}

func pct(n, of int) float64 {
	if of == 0 {
		return 0
	}
	return 100 * float64(n) / float64(of)
}

type scanStats struct {
	rs               *engine.RuleSet
	total, ham, spam scanCounts
}

func newScanStats(rs *engine.RuleSet) *scanStats {
	s := &scanStats{rs: rs}
	for _, c := range []*scanCounts{&s.total, &s.ham, &s.spam} {
		c.actions, c.rules = map[string]int{}, map[string]int{}
	}
	return s
}

func (s *scanStats) add(label, action string, rules []string) {
	s.total.add(action, rules)
	switch label {
	case "ham":
		s.ham.add(action, rules)
	case "spam":
		s.spam.add(action, rules)
	}
}

func (s *scanStats) labelled() bool { return s.ham.n+s.spam.n > 0 }

// ruleNames are the rule set's rules, then any other rule that fired.
func (s *scanStats) ruleNames() []string {
	var names []string
	for _, r := range s.rs.Rules() {
		names = append(names, r.Name)
	}
	for r := range s.total.rules {
		if !slices.Contains(names, r) {
			names = append(names, r)
		}
	}
	return names
}

// writeHits is the table of every rule's hits over all messages, most hits
// first.
func (s *scanStats) writeHits(w io.Writer) {
	names := s.ruleNames()
	slices.SortStableFunc(names, func(a, b string) int {
		return cmp.Or(cmp.Compare(s.total.rules[b], s.total.rules[a]), cmp.Compare(a, b))
	})
	fmt.Fprintf(w, "%6s %7s  %s\n", "HITS", "%", "RULE")
	for _, r := range names {
		fmt.Fprintf(w, "%6d %7.2f  %s\n", s.total.rules[r], pct(s.total.rules[r], s.total.n), r)
	}
	fmt.Fprintln(w)
}

// frequency is one row of the hit-frequencies table.
type frequency struct {
	name               string
	overall, spam, ham float64
	so, rank, score    float64
	fired              bool
}

// writeFrequencies prints, as SpamAssassin's masses/hit-frequencies does,
// each rule's share of all messages (OVERALL%), of spam and of ham it fired
// on, S/O (spam% / (spam% + ham%): 1 fires only on spam, 0 only on ham),
// RANK and the rule's SCORE; then the share of ham flagged and of spam
// caught. RANK runs from 0 to 1 over the rules that fired: 1 separates
// best (S/O farthest from 0.5, then most hits on its side), and rules
// that separate equally share a rank.
func (s *scanStats) writeFrequencies(w io.Writer) {
	var rows []*frequency
	for _, name := range s.ruleNames() {
		sh, hh := s.spam.rules[name], s.ham.rules[name]
		f := &frequency{
			name:    name,
			overall: pct(sh+hh, s.spam.n+s.ham.n),
			spam:    pct(sh, s.spam.n),
			ham:     pct(hh, s.ham.n),
			fired:   sh+hh > 0,
		}
		if f.spam+f.ham > 0 {
			f.so = f.spam / (f.spam + f.ham)
		}
		if r, ok := s.rs.Rule(name); ok {
			f.score = r.Then.Score
		}
		rows = append(rows, f)
	}
	// side is the hit rate on the side the rule points to.
	side := func(f *frequency) float64 {
		if f.so >= 0.5 {
			return f.spam
		}
		return f.ham
	}
	var fired []*frequency
	for _, f := range rows {
		if f.fired {
			fired = append(fired, f)
		}
	}
	byKey := func(a, b *frequency) int {
		return cmp.Or(cmp.Compare(math.Abs(a.so-0.5), math.Abs(b.so-0.5)), cmp.Compare(side(a), side(b)))
	}
	slices.SortStableFunc(fired, byKey)
	// Rules that separate equally share a rank.
	distinct := slices.CompactFunc(slices.Clone(fired), func(a, b *frequency) bool { return byKey(a, b) == 0 })
	for _, f := range fired {
		i, _ := slices.BinarySearchFunc(distinct, f, byKey)
		if len(distinct) == 1 {
			f.rank = 1
		} else {
			f.rank = float64(i) / float64(len(distinct)-1)
		}
	}
	slices.SortStableFunc(rows, func(a, b *frequency) int {
		if a.fired != b.fired {
			if a.fired {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(b.so, a.so), cmp.Compare(b.spam, a.spam), cmp.Compare(a.ham, b.ham), cmp.Compare(a.name, b.name))
	})
	n := s.spam.n + s.ham.n
	fmt.Fprintf(w, "%8s %8s %8s %6s %6s %6s  %s\n", "OVERALL%", "SPAM%", "HAM%", "S/O", "RANK", "SCORE", "NAME")
	fmt.Fprintf(w, "%8d %8d %8d %6.3f %6.2f %6.2f  %s\n", n, s.spam.n, s.ham.n, pct(s.spam.n, n)/100, 0.0, 0.0, "(all messages)")
	fmt.Fprintf(w, "%8.3f %8.4f %8.4f %6.3f %6.2f %6.2f  %s\n", 100.0, pct(s.spam.n, n), pct(s.ham.n, n), pct(s.spam.n, n)/100, 0.0, 0.0, "(all messages as %)")
	for _, f := range rows {
		fmt.Fprintf(w, "%8.3f %8.4f %8.4f %6.3f %6.2f %6.2f  %s\n", f.overall, f.spam, f.ham, f.so, f.rank, f.score, f.name)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "ham flagged (tag, hold or reject): %d of %d, %.2f%%\n", s.ham.flagged(), s.ham.n, pct(s.ham.flagged(), s.ham.n))
	fmt.Fprintf(w, "spam caught (tag, hold or reject): %d of %d, %.2f%%\n", s.spam.flagged(), s.spam.n, pct(s.spam.flagged(), s.spam.n))
	fmt.Fprintln(w)
}

// writeSummary ends the output: the verdicts per label when labels were
// given, then on its own last line over every message (SPEC 7).
func (s *scanStats) writeSummary(w io.Writer) {
	line := func(c *scanCounts) string {
		parts := make([]string, len(scanActions))
		for i, a := range scanActions {
			parts[i] = fmt.Sprintf("%d %s", c.actions[a], a)
		}
		return fmt.Sprintf("%s: %s", plural(c.n, "message"), strings.Join(parts, ", "))
	}
	if s.ham.n > 0 {
		fmt.Fprintf(w, "ham:  %s\n", line(&s.ham))
	}
	if s.spam.n > 0 {
		fmt.Fprintf(w, "spam: %s\n", line(&s.spam))
	}
	fmt.Fprintln(w, line(&s.total))
}

// progress is the line on a terminal saying how far a long run (scan,
// learn) is: "VERB N messages, R msg/s".
type progress struct {
	w     io.Writer
	verb  string
	start time.Time
	last  time.Time
	shown bool
}

func (p *progress) tick(n int) {
	if p == nil {
		return
	}
	now := time.Now()
	if now.Sub(p.last) < 200*time.Millisecond {
		return
	}
	p.last, p.shown = now, true
	rate := float64(n) / now.Sub(p.start).Seconds()
	fmt.Fprintf(p.w, "\r\033[K%s %d messages, %.0f msg/s", p.verb, n, rate)
}

func (p *progress) clear() {
	if p != nil && p.shown {
		fmt.Fprint(p.w, "\r\033[K")
		p.shown = false
	}
}

// isTerminal reports whether w is a terminal (a character device; good
// enough for a progress line, and needs no ioctl).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}
