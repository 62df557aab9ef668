package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluicemail/sluice/server"
	"github.com/sluicemail/sluice/web"
)

// reviewDesk is where review requests are: the running relay, or the store.
type reviewDesk interface {
	Reviews(ctx context.Context) ([]web.Review, error)
	Review(ctx context.Context, id string) (*web.Review, error)
	AnswerReview(ctx context.Context, id, text string) (*web.Review, error)
}

func (s storeState) Reviews(ctx context.Context) ([]web.Review, error) {
	return web.ListReviews(ctx, s.Store, time.Now())
}

func (s storeState) Review(ctx context.Context, id string) (*web.Review, error) {
	return web.GetReview(ctx, s.Store, id)
}

func (s storeState) AnswerReview(ctx context.Context, id, text string) (*web.Review, error) {
	return web.AnswerReview(ctx, s.Store, id, text, time.Now())
}

const reviewUsage = "usage: sluice review list|show ID|answer ID [--text TEXT] [--config FILE]"

// cmdReview shows and answers the review requests senders made on report
// pages (SPEC 5 and 8).
func cmdReview(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlags("review", stderr)
	config := fs.String("config", "", "config `FILE` (default: $SLUICE_CONFIG, else the embedded default)")
	text := fs.String("text", "", "the answer (default: read from standard input)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) == 0 || !(pos[0] == "list" && len(pos) == 1 || (pos[0] == "show" || pos[0] == "answer") && len(pos) == 2) {
		fmt.Fprintln(stderr, reviewUsage)
		return 2
	}
	rs, ok := openRelayState("review", *config, stderr)
	if !ok {
		return 1
	}
	st, done, err := rs.store()
	if err != nil {
		fmt.Fprintln(stderr, "sluice review:", err)
		return 1
	}
	defer done()
	desk := st.(reviewDesk)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var rv *web.Review
	switch pos[0] {
	case "list":
		rvs, err := desk.Reviews(ctx)
		if err != nil {
			fmt.Fprintln(stderr, "sluice review:", err)
			return 1
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tDECISION\tAT\tSTATUS\tCONTACT\tMESSAGE")
		for _, r := range rvs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Decision, r.At.Local().Format(time.RFC3339), r.Status, oneLine(r.Contact, 40), oneLine(r.Message, 50))
		}
		tw.Flush()
		return 0
	case "show":
		rv, err = desk.Review(ctx, pos[1])
	case "answer":
		answer := *text
		if answer == "" {
			b, _ := io.ReadAll(io.LimitReader(stdin, 1<<16))
			answer = strings.TrimSpace(string(b))
		}
		if answer == "" {
			fmt.Fprintln(stderr, "sluice review answer: give the answer with --text TEXT or on standard input")
			return 2
		}
		rv, err = desk.AnswerReview(ctx, pos[1], answer)
	}
	if errors.Is(err, web.ErrNoReview) {
		fmt.Fprintf(stderr, "sluice review: no review request %s\n", pos[1])
		return 1
	}
	if err != nil {
		fmt.Fprintln(stderr, "sluice review:", err)
		return 1
	}
	fmt.Fprintf(stdout, "id:       %s\ndecision: %s (sluice decision %s)\nat:       %s\ncontact:  %s\nstatus:   %s\n\n%s\n",
		rv.ID, rv.Decision, rv.Decision, rv.At.Local().Format(time.RFC3339), oneLine(rv.Contact, 254), rv.Status, printable(rv.Message))
	if rv.Answer != "" {
		fmt.Fprintf(stdout, "\nanswer (%s):\n%s\n", rv.Answered.Local().Format(time.RFC3339), printable(rv.Answer))
	}
	return 0
}

// printable drops the control characters of a sender's text but line
// breaks, so that it cannot drive the operator's terminal.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if (r < ' ' && r != '\n' && r != '\t') || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return -1
		}
		return r
	}, s)
}

var _ reviewDesk = (*server.AdminClient)(nil)

// oneLine shortens a sender's text to one line of at most n runes, with
// control characters dropped so a terminal shows only text.
func oneLine(s string, n int) string {
	s = strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
