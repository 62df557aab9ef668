package mailauth

import (
	"context"
	"net/netip"
)

// SPFResult is the outcome of an SPF check (RFC 7208).
type SPFResult struct {
	Result string // pass, fail, softfail, neutral, none, temperror, permerror
	Domain string // the domain checked: mail_from's, or the HELO name for the null sender
	Detail string // why, for the evidence and Authentication-Results
}

// CheckSPF checks client ip for mailFrom's domain, or for the HELO name
// when mailFrom is the null sender (RFC 7208 2.4).
// STUB: replaced by the SPF implementation.
func CheckSPF(ctx context.Context, r Resolver, ip netip.Addr, helo, mailFrom string) SPFResult {
	return SPFResult{Result: None}
}

// SPFAuthorizes reports whether domain's SPF record gives pass for every
// one of ips (the relay's own outgoing addresses), and the result for the
// first that does not pass.
// STUB: replaced by the SPF implementation.
func SPFAuthorizes(ctx context.Context, r Resolver, domain string, ips []netip.Addr) (bool, SPFResult) {
	return false, SPFResult{Result: None}
}
