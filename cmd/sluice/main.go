// Command sluice is the sluice SMTP relay and its rule tools: check a rules
// directory, replay fixtures against it, explain a verdict.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"go.yaml.in/yaml/v3"

	"github.com/sluicemail/sluice/builtins"
	"github.com/sluicemail/sluice/engine"
	"github.com/sluicemail/sluice/ruletest"
	"github.com/sluicemail/sluice/server"
)

const usage = `sluice: an SMTP relay whose policy is written as rules

usage:
  sluice serve [--config FILE] [--rules DIR]          run the relay (no config: 127.0.0.1:2525, mail into ./sluice-state/mail)
  sluice hold list|show ID|release ID...|delete ID... [--config FILE]
                                                      review the holding area
  sluice queue list [--count] [--json] | show ID [--body] | retry ID...|ALL | delete [--bounce] ID...|ALL [--config FILE]
                                                      the delivery queue: what waits, why, when it is tried next
  sluice list show NAME [KEY] | add NAME KEY [--reason TEXT] [--for 7d] | remove NAME KEY [--config FILE]
                                                      the dynamic lists: bounces, unsubscribes, blocked, ...
  sluice decision ID [--config FILE]                  what the relay decided, and why, for an id quoted in a refusal
  sluice review list|show ID|answer ID [--text TEXT] [--config FILE]
                                                      review requests senders made on report pages
  sluice passwd < PASSWORD                            print a bcrypt hash for the config's password_hash
  sluice check [DIR] | --config FILE                  load and type-check a rules directory (or a config and its rules)
  sluice test [--rules DIR] [--junit FILE] [--coverage] [-v] PATH...
                                                      replay *.test.yaml fixtures against the rules
  sluice explain [--rules DIR] [--context FILE] [--config FILE] [--json] MESSAGE.eml
                                                      print the verdict on a message and why
  sluice scan [--rules DIR] [--context FILE] [--config FILE] [--json] [--hits] [-j N] [ham=|spam=]PATH...
                                                      judge every message in files, directories, Maildirs and mboxes:
                                                      PATH[:N] ACTION SCORE RULES per message, then a summary
  sluice learn spam|ham|forget [--config FILE] PATH...
                                                      train the relay's classifier (spam_probability) on messages,
                                                      or remove them from it
  sluice facts                                        list the facts and functions rules can use
  sluice dkim keygen [--type rsa|ed25519] [--bits N] [--out PATH] DOMAIN SELECTOR
                                                      write a DKIM signing key (0600) and print the TXT record to publish
  sluice version                                      print the version, the commit it was built from and the Go version

DIR and --rules default to rules.d. --config defaults to $SLUICE_CONFIG, else the
embedded default, whose state is ./sluice-state; relative paths in a config file are
relative to the file's directory. hold, queue, list, decision and learn act on that state through the
running relay, or directly when it is stopped, and refuse a state that does not exist.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return cmdServe(rest, stdout, stderr)
	case "hold":
		return cmdHold(rest, stdout, stderr)
	case "queue":
		return cmdQueue(rest, stdout, stderr)
	case "list":
		return cmdList(rest, stdout, stderr)
	case "decision":
		return cmdDecision(rest, stdout, stderr)
	case "review":
		return cmdReview(rest, os.Stdin, stdout, stderr)
	case "passwd":
		return cmdPasswd(rest, os.Stdin, stdout, stderr)
	case "check":
		return cmdCheck(rest, stdout, stderr)
	case "test":
		return cmdTest(rest, stdout, stderr)
	case "explain":
		return cmdExplain(rest, stdout, stderr)
	case "scan":
		return cmdScan(rest, stdout, stderr)
	case "learn":
		return cmdLearn(rest, stdout, stderr)
	case "dkim":
		return cmdDkim(rest, stdout, stderr)
	case "facts":
		fmt.Fprint(stdout, builtins.NewRegistry().Doc())
		return 0
	case "version", "--version":
		return cmdVersion(rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "sluice: unknown command %q\n\n%s", cmd, usage)
	return 2
}

// parseArgs parses flags that may come before, between or after positional
// arguments (`sluice test fixtures --junit out.xml`).
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("sluice "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// loadRules loads a rules directory, printing every problem to stderr.
func loadRules(dir string, stderr io.Writer) (*engine.RuleSet, bool) {
	rs, err := engine.LoadDir(dir, builtins.NewRegistry(), engine.Options{})
	if err != nil {
		var le *engine.LoadError
		if errors.As(err, &le) {
			for _, p := range le.Problems {
				fmt.Fprintln(stderr, p)
			}
			fmt.Fprintf(stderr, "%s: %d error(s); rules not loaded\n", dir, len(le.Problems))
		} else {
			fmt.Fprintln(stderr, err)
		}
		return nil, false
	}
	return rs, true
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", stderr)
	config := fs.String("config", "", "validate config `FILE` and the rules directory it names")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	dir := "rules.d"
	if *config != "" {
		cfg, err := server.LoadConfig(*config)
		if err == nil {
			err = cfg.CheckFiles()
		}
		if err != nil {
			fmt.Fprintln(stderr, "sluice check:", err)
			return 1
		}
		fmt.Fprintf(stdout, "%s: ok; state in %s\n", *config, cfg.StateDir)
		dir = cfg.RulesDir
	}
	if len(pos) > 0 {
		dir = pos[0]
	}
	rs, ok := loadRules(dir, stderr)
	if !ok {
		return 1
	}
	printRuleSet(stdout, rs)
	return 0
}

func printRuleSet(w io.Writer, rs *engine.RuleSet) {
	fmt.Fprintf(w, "%s: %s in %s", rs.Dir(), plural(len(rs.Rules()), "rule"), plural(len(rs.Files()), "file"))
	th := rs.Thresholds()
	var ts []string
	for _, t := range []struct {
		n string
		v *float64
	}{{"reject", th.Reject}, {"hold", th.Hold}, {"tag", th.Tag}} {
		if t.v != nil {
			ts = append(ts, fmt.Sprintf("%s >= %s", t.n, strconv.FormatFloat(*t.v, 'f', -1, 64)))
		}
	}
	if len(ts) > 0 {
		fmt.Fprintf(w, "; thresholds: %s", strings.Join(ts, ", "))
	}
	if ln := rs.ListNames(); len(ln) > 0 {
		fmt.Fprintf(w, "; lists: %s", strings.Join(ln, ", "))
	}
	fmt.Fprintln(w)
	for p := builtins.Connect; p <= builtins.Data; p++ {
		var rules []*engine.Rule
		for _, r := range rs.Rules() {
			if r.Phase == p {
				rules = append(rules, r)
			}
		}
		if len(rules) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s (%d)\n", p, len(rules))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, r := range rules {
			flags := ""
			if r.PerRecipient {
				flags += " [per recipient]"
			}
			if r.Shadow {
				flags += " [shadow]"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s%s\n", r.Name, r.Where(), r.Then, flags)
		}
		tw.Flush()
	}
	if ws := rs.Warnings(); len(ws) > 0 {
		fmt.Fprintf(w, "\n%d warning(s):\n", len(ws))
		for _, p := range ws {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
	fmt.Fprintln(w, "\nok")
}

func cmdTest(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("test", stderr)
	rules := fs.String("rules", "rules.d", "rules directory")
	junit := fs.String("junit", "", "also write a JUnit XML report to `FILE`")
	coverage := fs.Bool("coverage", false, "list the rules no case fired")
	verbose := fs.Bool("v", false, "print passing cases too")
	paths, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if len(paths) == 0 {
		paths = []string{"."}
	}
	rs, ok := loadRules(*rules, stderr)
	if !ok {
		return 1
	}
	sum, err := ruletest.RunPaths(context.Background(), rs, paths)
	if err != nil {
		fmt.Fprintf(stderr, "sluice test: %v\n", err)
		return 1
	}
	sum.WriteText(stdout, *verbose)
	if *coverage {
		sum.WriteCoverage(stdout, rs)
	}
	if *junit != "" {
		if err := sum.WriteJUnit(*junit); err != nil {
			fmt.Fprintf(stderr, "sluice test: %v\n", err)
			return 1
		}
	}
	if len(sum.Results)+len(sum.LoadErrors) == 0 {
		fmt.Fprintf(stderr, "sluice test: no *.test.yaml files under %s\n", strings.Join(paths, ", "))
	}
	sum.WriteSummary(stdout)
	if sum.Failed() > 0 {
		return 1
	}
	return 0
}

func cmdExplain(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("explain", stderr)
	rules := fs.String("rules", "rules.d", "rules directory")
	ctxFile := fs.String("context", "", "YAML `FILE` with the session context (the keys of a fixture's context)")
	asJSON := fs.Bool("json", false, "print the verdict as JSON")
	config := fs.String("config", "", "config `FILE`: its rules directory (unless --rules is given) and the classifier of its state")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "usage: sluice explain [--rules DIR] [--context FILE] [--config FILE] [--json] MESSAGE.eml")
		return 2
	}
	if *config != "" && !flagGiven(fs, "rules") {
		cfg, err := server.LoadConfig(*config)
		if err != nil {
			fmt.Fprintf(stderr, "sluice explain: %v\n", err)
			return 1
		}
		*rules = cfg.RulesDir
	}
	raw, err := os.ReadFile(pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "sluice explain: %v\n", err)
		return 1
	}
	var c ruletest.Context
	if *ctxFile != "" {
		if err := readContext(*ctxFile, &c); err != nil {
			fmt.Fprintf(stderr, "sluice explain: %v\n", err)
			return 1
		}
	}
	rs, ok := loadRules(*rules, stderr)
	if !ok {
		return 1
	}
	if *config != "" {
		cls, closeCls := configClassifier("explain", *config, stderr)
		defer closeCls()
		c.Classifier = cls
	}
	in, env, err := c.Input(rs.Registry(), raw)
	if err != nil {
		fmt.Fprintf(stderr, "sluice explain: %s: %v\n", *ctxFile, err)
		return 1
	}
	v := rs.Replay(context.Background(), in, env)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			fmt.Fprintf(stderr, "sluice explain: %v\n", err)
			return 1
		}
		return 0
	}
	printVerdict(stdout, rs, v, env)
	return 0
}

// readContext reads a context file: the keys of a fixture's context, at the
// top level or under `context:`.
func readContext(path string, c *ruletest.Context) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var wrapped struct {
		Context *ruletest.Context `yaml:"context"`
	}
	if yaml.Unmarshal(b, &wrapped) == nil && wrapped.Context != nil {
		*c = *wrapped.Context
		return nil
	}
	if err := yaml.Unmarshal(b, c); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	return nil
}

func printVerdict(w io.Writer, rs *engine.RuleSet, v *engine.Verdict, env engine.Envelope) {
	fmt.Fprintf(w, "verdict:  %s %d %s %s\n", v.Action, v.Code, v.Enhanced, strconv.Quote(v.Text))
	score := strconv.FormatFloat(v.Score, 'f', -1, 64)
	th := rs.Thresholds()
	if th.Reject != nil {
		score += fmt.Sprintf(" (reject at %s)", strconv.FormatFloat(*th.Reject, 'f', -1, 64))
	}
	fmt.Fprintf(w, "score:    %s\n", score)
	switch {
	case v.Rule != "":
		fmt.Fprintf(w, "decided:  by rule %s at %s\n", v.Rule, v.Phase)
	case v.Action == engine.Reject || v.Action == engine.Hold || v.Action == engine.Tag:
		fmt.Fprintf(w, "decided:  by thresholds after data\n")
	}
	fmt.Fprintf(w, "id:       %s\n", v.ID)
	fmt.Fprintf(w, "envelope: MAIL FROM:<%s> RCPT TO:<%s>\n", env.MailFrom, strings.Join(env.Rcpts, ">, <"))
	// Errors of rules (which did not fire) and facts that could not be
	// computed (which tempfail the message) alike.
	for _, e := range v.Errors {
		fmt.Fprintf(w, "error:    %s\n", e)
	}
	fmt.Fprintln(w)
	if len(v.Hits) == 0 {
		fmt.Fprintln(w, "no rule fired")
	} else {
		ruletest.WriteHits(w, v.Hits)
	}
	if len(v.Recipients) > 0 {
		fmt.Fprintln(w, "\nrecipients:")
		for _, r := range v.Recipients {
			line := fmt.Sprintf("  %s: %s %d %s", r.Addr, r.Action, r.Code, r.Enhanced)
			if r.Action != engine.Accept {
				line += " " + strconv.Quote(r.Text)
			}
			if r.Rule != "" {
				line += " (rule " + r.Rule + ")"
			}
			fmt.Fprintln(w, line)
		}
	}
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
