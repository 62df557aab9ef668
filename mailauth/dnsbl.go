package mailauth

import "context"

// DNSBL returns the A records zone answers for subject: an IPv4 address as
// reversed octets, an IPv6 address as reversed nibbles, a domain name as
// is; empty when not listed or subject is "". A temporary failure is an
// error.
// STUB: replaced by the DNSBL implementation.
func DNSBL(ctx context.Context, r Resolver, zone, subject string) ([]string, error) {
	return nil, nil
}

// FCrDNS reports whether ptr (the client's PTR name) resolves back to ip.
// STUB: replaced by the implementation.
func FCrDNS(ctx context.Context, r Resolver, ip, ptr string) (bool, error) {
	return false, nil
}
