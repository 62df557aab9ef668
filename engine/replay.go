package engine

import (
	"context"

	"github.com/sluicemail/sluice/builtins"
)

// Envelope is what a replayed session sends: the sender, the recipients and
// the message. Replay drives a Txn through every SMTP phase with it, exactly
// as the relay drives one from a live session.
type Envelope struct {
	Helo     string
	MailFrom string
	Rcpts    []string
	Raw      []byte
}

// Replay evaluates one message as if it arrived over SMTP, stopping where
// the rules refuse it, and returns the verdict.
func (rs *RuleSet) Replay(ctx context.Context, in *builtins.Input, env Envelope) *Verdict {
	t := rs.Begin(ctx, in)
	defer t.Close()
	if t.Connect() != nil {
		return t.Verdict()
	}
	if t.Helo(env.Helo) != nil {
		return t.Verdict()
	}
	if t.Mail(env.MailFrom) != nil {
		return t.Verdict()
	}
	for _, r := range env.Rcpts {
		if reply := t.Rcpt(r); reply != nil && t.decided != nil {
			// A refusal of the whole message, not of this recipient alone.
			return t.Verdict()
		}
	}
	if len(env.Rcpts) > 0 && len(in.Rcpts) == 0 {
		return t.Verdict()
	}
	return t.Data(env.Raw)
}
