package mailauth

import (
	"strings"

	"golang.org/x/net/publicsuffix"
)

// OrganizationalDomain is domain's organizational domain (RFC 7489 3.2): the
// public suffix it is under plus one label, by the public suffix list. A
// domain that is itself a public suffix, or that the list cannot place, is
// its own organizational domain. The result is lower case without a
// trailing dot.
func OrganizationalDomain(domain string) string {
	d := canonDomain(domain)
	if d == "" {
		return ""
	}
	org, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		return d
	}
	return org
}

// canonDomain is domain as DMARC compares it: DNS names are case-insensitive
// (RFC 4343) and "example.com." is "example.com".
func canonDomain(domain string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(domain), "."))
}
