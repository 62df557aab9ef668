package mailauth

import "context"

// DKIMSignature is the outcome for one DKIM-Signature field.
type DKIMSignature struct {
	Domain   string // d=
	Selector string // s=
	Result   string // pass, fail, permerror, temperror
	Detail   string
	// Unsigned is true when the signature has l= and content follows the
	// signed part of the body (RFC 6376 8.2).
	Unsigned bool
}

// DKIMResult is the outcome over every signature of a message.
type DKIMResult struct {
	Result     string   // best over Signatures (SPEC 6 ranking), none without any
	Domains    []string // d= of the signatures that passed
	Signatures []DKIMSignature
}

// VerifyDKIM checks every DKIM-Signature of msg (RFC 6376), RSA and
// Ed25519, l= included.
// STUB: replaced by the DKIM implementation.
func VerifyDKIM(ctx context.Context, r Resolver, msg []byte) DKIMResult {
	return DKIMResult{Result: None}
}
