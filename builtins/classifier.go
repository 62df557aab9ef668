package builtins

import (
	"context"
	"fmt"
)

// Classifier judges a message by what was learned of the site's own mail
// (package classify, kept in the relay's store). It is an interface here
// because classify reads Parsed: builtins must not import it.
type Classifier interface {
	// SpamProbability is the chance, 0 to 1, that the message is spam
	// (exactly 0.5 while too little has been learned), and the tokens that
	// weighed most in it, as "token=probability" strings for explain and
	// the console.
	SpamProbability(ctx context.Context, p *Parsed) (float64, []string, error)
}

func classifierFacts() []Fact {
	return []Fact{
		{Name: "spam_probability", Type: Float, Phase: Data,
			Doc: "the learned classifier's probability, 0 to 1, that the message is spam (sluice learn; " +
				"exactly 0.5 while fewer than 200 ham and 200 spam are learned, and without a classifier: " +
				"sluice test, and scan and explain without --config); the tokens that weighed most are evidence (spam_tokens)",
			Compute: computeSpamProbability,
			Detail:  spamTokens},
	}
}

// computeSpamProbability asks the input's classifier, once per message,
// over the parse the other data facts share.
func computeSpamProbability(m *Message) (any, error) {
	m.spamTokens = nil
	c := m.in.Classifier
	if c == nil {
		return 0.5, nil
	}
	ctx := m.ctx
	if _, ok := ctx.Deadline(); !ok { // a store that hangs costs the message a 451, not the session
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, lookupTimeout)
		defer cancel()
	}
	p, tokens, err := c.SpamProbability(ctx, &Parsed{Header: m.Header(), HeaderErr: m.HeaderErr(), Body: m.Body(), Raw: m.in.Raw})
	if err != nil {
		return nil, fmt.Errorf("classifier: %w", err)
	}
	m.spamTokens = tokens
	return p, nil
}

// spamTokens is the evidence next to spam_probability: the tokens the
// classifier weighed most. None when a fixture gave the value.
func spamTokens(m *Message) (string, any) {
	if _, over := m.in.Overrides["spam_probability"]; over || len(m.spamTokens) == 0 {
		return "", nil
	}
	return SpamTokensEvidence, m.spamTokens
}

// SpamTokensEvidence names the classifier's tokens in a rule's evidence.
// They show how to slip past the filter, so report pages never show them
// to senders; explain and the console do.
const SpamTokensEvidence = "spam_tokens"
