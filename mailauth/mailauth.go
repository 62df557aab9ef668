// Package mailauth checks who sent a message: SPF, DKIM, DMARC, ARC, DNSBL
// and forward-confirmed reverse DNS, over a Resolver it is given, and signs
// outbound mail with DKIM. builtins' facts call it; the relay only wires it.
package mailauth

import (
	"context"
	"errors"
	"net"
)

// Resolver is the DNS the checks see. *net.Resolver satisfies it, and so
// does blitiri.com.ar/go/spf's DNSResolver. Errors follow *net.Resolver:
// a name that does not exist, or has no record of the type asked, is a
// *net.DNSError with IsNotFound; a server failure or a timeout is a
// *net.DNSError with IsTemporary or IsTimeout.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// Result values shared by the checks (SPEC 6).
const (
	Pass      = "pass"
	Fail      = "fail"
	SoftFail  = "softfail"
	Neutral   = "neutral"
	None      = "none"
	TempError = "temperror"
	PermError = "permerror"
)

// IsNotFound reports whether err says the name or record does not exist.
func IsNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// IsTemporary reports whether err is a failure that may pass: a timeout, a
// SERVFAIL, a server that does not answer (anything but "not found").
func IsTemporary(err error) bool {
	return err != nil && !IsNotFound(err)
}
