package mailauth

import (
	"context"
	"net"
	"time"
)

// SystemPTR looks up PTR names as the system does: /etc/hosts, then the
// servers of /etc/resolv.conf, in nsswitch.conf's order; the rdns fact's
// resolver when the relay is given none. It is Go's own resolver, not
// libc's: libc's costs a thread per lookup (a cgo call, about 4% of the
// relay's CPU at one connection per message) to consult NSS modules such
// as mdns, which have no say in a mail client's name.
type SystemPTR struct{ r *net.Resolver }

// NewSystemPTR returns a SystemPTR; each lookup is bounded to 5 s.
func NewSystemPTR() SystemPTR { return SystemPTR{&net.Resolver{PreferGo: true}} }

// LookupAddr returns the names of addr.
func (p SystemPTR) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return p.r.LookupAddr(ctx, addr)
}
