package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluicemail/sluice/engine"
	"github.com/sluicemail/sluice/ruletest"
	"github.com/sluicemail/sluice/server"
	"github.com/sluicemail/sluice/store"
)

func cmdList(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("list", stderr)
	config := fs.String("config", "", "config `FILE` (default: $SLUICE_CONFIG, else the embedded default)")
	reason := fs.String("reason", "", "why the key is on the list (add)")
	forDur := fs.String("for", "", "how long the entry lasts, e.g. 12h or 7d (add; default: for good)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	usage := "usage: sluice list show NAME [KEY] | add NAME KEY [--reason TEXT] [--for 7d] | remove NAME KEY [--config FILE]"
	if len(pos) < 2 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	rs, ok := openRelayState("list", *config, stderr)
	if !ok {
		return 1
	}
	ls, done, err := rs.store()
	if err != nil {
		fmt.Fprintln(stderr, "sluice list:", err)
		return 1
	}
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now := time.Now()
	name := pos[1]
	switch {
	case pos[0] == "show" && len(pos) <= 3:
		var es []store.Entry
		if len(pos) == 3 {
			e, err := ls.ListGet(ctx, name, pos[2], now)
			if err != nil {
				fmt.Fprintln(stderr, "sluice list:", err)
				return 1
			}
			if e == nil {
				fmt.Fprintf(stderr, "sluice list: %s is not on %s\n", pos[2], name)
				return 1
			}
			es = []store.Entry{*e}
		} else if es, err = ls.ListEntries(ctx, name, now); err != nil {
			fmt.Fprintln(stderr, "sluice list:", err)
			return 1
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY\tADDED\tEXPIRES\tSOURCE\tREASON")
		for _, e := range es {
			exp := "never"
			if !e.Expires.IsZero() {
				exp = e.Expires.Local().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Key, e.Added.Local().Format(time.RFC3339), exp, dash(e.Source), dash(e.Reason))
		}
		tw.Flush()
		fmt.Fprintf(stdout, "%d on %s\n", len(es), name)
		return 0
	case pos[0] == "add" && len(pos) == 3:
		e := store.Entry{List: name, Key: pos[2], Reason: *reason, Source: "operator (sluice list)", Added: now}
		if *forDur != "" {
			d, err := parseDuration(*forDur)
			if err != nil {
				fmt.Fprintln(stderr, "sluice list:", err)
				return 2
			}
			e.Expires = now.Add(d)
		}
		if err := ls.ListAdd(ctx, e); err != nil {
			fmt.Fprintln(stderr, "sluice list:", err)
			return 1
		}
		fmt.Fprintf(stdout, "%s added to %s\n", store.NormalizeKey(pos[2]), name)
		return 0
	case pos[0] == "remove" && len(pos) == 3:
		ok, err := ls.ListRemove(ctx, name, pos[2])
		if err != nil {
			fmt.Fprintln(stderr, "sluice list:", err)
			return 1
		}
		if !ok {
			fmt.Fprintf(stderr, "sluice list: %s is not on %s\n", pos[2], name)
			return 1
		}
		fmt.Fprintf(stdout, "%s removed from %s\n", store.NormalizeKey(pos[2]), name)
		return 0
	}
	fmt.Fprintln(stderr, usage)
	return 2
}

func parseDuration(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		var n float64
		if _, err := fmt.Sscanf(d, "%g", &n); err != nil || n <= 0 {
			return 0, errors.New("--for: want e.g. 12h or 7d")
		}
		return time.Duration(n * float64(24*time.Hour)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, errors.New("--for: want e.g. 12h or 7d")
	}
	return d, nil
}

// cmdDecision shows the record of a decision by its id, as quoted in a
// refusal ("... [01M83B4TQ5R6MKEAVVSTZDDCHG]").
func cmdDecision(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("decision", stderr)
	config := fs.String("config", "", "config `FILE` (default: $SLUICE_CONFIG, else the embedded default)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "usage: sluice decision ID [--config FILE]")
		return 2
	}
	rs, ok := openRelayState("decision", *config, stderr)
	if !ok {
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id := strings.Trim(pos[0], "[]")
	st, done, err := rs.store()
	if err != nil {
		fmt.Fprintln(stderr, "sluice decision:", err)
		return 1
	}
	defer done()
	d, err := st.Decision(ctx, id)
	if err != nil {
		fmt.Fprintln(stderr, "sluice decision:", err)
		return 1
	}
	if d == nil {
		fmt.Fprintf(stderr, "sluice decision: no decision %s (records are kept 30 days)\n", id)
		return 1
	}
	fmt.Fprintf(stdout, "id:       %s\nat:       %s\nclient:   %s (helo %s)\nuser:     %s\nfrom:     <%s>\nto:       %s\n",
		d.ID, d.At.Local().Format(time.RFC3339), d.IP, dash(d.Helo), dash(d.User), d.From, strings.Join(d.Rcpts, ", "))
	fmt.Fprintf(stdout, "verdict:  %s %d %s %q at %s", d.Action, d.Code, d.Enhanced, d.Text, d.Phase)
	if d.Rule != "" {
		fmt.Fprintf(stdout, " by rule %s", d.Rule)
	}
	fmt.Fprintf(stdout, "\nscore:    %s\n", formatScore(decisionScore(d)))
	if d.Delivery != "" {
		fmt.Fprintf(stdout, "delivery: %s\n", d.Delivery)
	}
	writeAuth(stdout, d.Auth)
	writeHits(stdout, d)
	writeContext(stdout, d)
	return 0
}

// writeHits prints the rules that fired with their evidence, as explain
// does.
func writeHits(stdout io.Writer, d *server.Decision) {
	if len(d.Fired) == 0 {
		fmt.Fprintln(stdout, "\nno rule fired")
		return
	}
	hits := make([]engine.Hit, len(d.Fired))
	for i, h := range d.Fired {
		hits[i] = engine.Hit{Rule: h.Rule, Phase: h.Phase, Action: h.Action, Score: h.Score, Shadow: h.Shadow, Recipient: h.Rcpt, Evidence: h.Evidence}
		if hits[i].Action == "" && h.Score != 0 { // a record from before actions were kept
			hits[i].Action = formatScore(h.Score)
			if h.Score > 0 {
				hits[i].Action = "+" + hits[i].Action
			}
		}
		for j, e := range h.Evidence {
			hits[i].Evidence[j].Value = fromJSON(e.Value)
		}
	}
	fmt.Fprintln(stdout)
	ruletest.WriteHits(stdout, hits)
}

// writeAuth prints the authentication checks the rules used, and why each
// came out as it did.
func writeAuth(w io.Writer, a *server.DecisionAuth) {
	if a == nil {
		return
	}
	fmt.Fprintln(w, "\nauthentication:")
	line := func(name string, c *server.AuthCheck, what ...string) {
		fmt.Fprintf(w, "  %-7s %s", name, c.Result)
		for i := 0; i+1 < len(what); i += 2 {
			if what[i+1] != "" {
				fmt.Fprintf(w, " %s=%s", what[i], what[i+1])
			}
		}
		if c.Detail != "" {
			fmt.Fprintf(w, " (%s)", c.Detail)
		}
		fmt.Fprintln(w)
	}
	if c := a.SPF; c != nil {
		line("spf:", c, "domain", c.Domain)
	}
	if c := a.DKIM; c != nil {
		line("dkim:", c, "passed", strings.Join(c.Domains, ","))
		for _, sig := range c.Signatures {
			line("", &sig, "d", sig.Domain, "s", sig.Selector)
		}
	}
	if c := a.DMARC; c != nil {
		line("dmarc:", c, "from", c.Domain, "policy", c.Policy)
	}
	if c := a.ARC; c != nil {
		line("arc:", c, "sealers", strings.Join(c.Domains, ","))
	}
}

// writeContext prints the session as the rules saw it, with the DNS
// answers the checks got, as a fixture's context: pasted into a file, it
// replays the decision offline (sluice explain --context FILE MESSAGE.eml).
// Records taken outside the rules have none.
func writeContext(w io.Writer, d *server.Decision) {
	if d.Outbound == nil && d.DNS == nil {
		return
	}
	q := func(s string) string {
		b, _ := json.Marshal(s)
		return string(b)
	}
	fmt.Fprintln(w, "\n# to replay offline, save what follows as FILE: sluice explain --context FILE MESSAGE.eml")
	fmt.Fprintf(w, "context:\n  client_ip: %s\n  helo: %s\n  mail_from: %s\n", q(d.IP), q(d.Helo), q(d.From))
	if len(d.Rcpts) > 0 {
		rcpts := make([]string, len(d.Rcpts))
		for i, r := range d.Rcpts {
			rcpts[i] = q(r)
		}
		fmt.Fprintf(w, "  rcpts: [%s]\n", strings.Join(rcpts, ", "))
	}
	if d.RDNS != nil {
		fmt.Fprintf(w, "  rdns: %s\n", q(*d.RDNS))
	}
	if d.User != "" {
		fmt.Fprintf(w, "  smtp_user: %s\n", q(d.User))
	}
	if d.Outbound != nil {
		fmt.Fprintf(w, "  outbound: %v\n", *d.Outbound)
	}
	if d.DNS != nil {
		fmt.Fprintln(w, "  dns:")
		d.DNS.WriteYAML(w, "    ")
	}
}

// decisionScore is the message's score; records from before refusals
// kept theirs have only the scores of the rules that fired.
func decisionScore(d *server.Decision) float64 {
	if d.Score != 0 {
		return d.Score
	}
	var sum float64
	for _, h := range d.Fired {
		if !h.Shadow {
			sum += h.Score
		}
	}
	return sum
}

func formatScore(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// fromJSON gives evidence read back from a record the types the engine
// gave it, so that it prints as explain prints it: a list of strings is a
// []string again.
func fromJSON(v any) any {
	l, ok := v.([]any)
	if !ok {
		return v
	}
	ss := make([]string, len(l))
	for i, x := range l {
		s, ok := x.(string)
		if !ok {
			return v
		}
		ss[i] = s
	}
	return ss
}
