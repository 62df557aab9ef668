package mailauth

import "context"

// ARCResult is the outcome of ARC chain validation (RFC 8617).
type ARCResult struct {
	Result  string   // pass, fail, none, temperror
	Domains []string // d= of the seals of a chain that validates, newest first
	Detail  string
}

// VerifyARC validates msg's ARC chain.
// STUB: replaced by the ARC implementation.
func VerifyARC(ctx context.Context, r Resolver, msg []byte) ARCResult {
	return ARCResult{Result: None}
}
