package metrics

import (
	"context"
	"net"
	"time"

	"github.com/sluicemail/sluice/mailauth"
)

// Resolver is a mailauth.Resolver that counts and times the lookups of the
// one it wraps, by record type and result; the names looked up are never
// labels.
type Resolver struct {
	next mailauth.Resolver
	m    *Metrics
}

var _ mailauth.Resolver = (*Resolver)(nil)

// WrapResolver instruments next; a nil m leaves it as it is.
func (m *Metrics) WrapResolver(next mailauth.Resolver) mailauth.Resolver {
	if m == nil || next == nil {
		return next
	}
	return &Resolver{next: next, m: m}
}

func (r *Resolver) observe(qtype string, start time.Time, err error) {
	res := "ok"
	switch {
	case err == nil:
	case mailauth.IsNotFound(err):
		res = "notfound"
	default:
		res = "error"
	}
	r.m.dnsLookups.WithLabelValues(qtype, res).Inc()
	r.m.dnsDuration.WithLabelValues(qtype).Observe(time.Since(start).Seconds())
}

// LookupTXT implements mailauth.Resolver.
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	start := time.Now()
	out, err := r.next.LookupTXT(ctx, name)
	r.observe("TXT", start, err)
	return out, err
}

// LookupMX implements mailauth.Resolver.
func (r *Resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	start := time.Now()
	out, err := r.next.LookupMX(ctx, name)
	r.observe("MX", start, err)
	return out, err
}

// LookupIPAddr implements mailauth.Resolver (A and AAAA).
func (r *Resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	start := time.Now()
	out, err := r.next.LookupIPAddr(ctx, host)
	r.observe("A/AAAA", start, err)
	return out, err
}

// LookupAddr implements mailauth.Resolver.
func (r *Resolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	start := time.Now()
	out, err := r.next.LookupAddr(ctx, addr)
	r.observe("PTR", start, err)
	return out, err
}
