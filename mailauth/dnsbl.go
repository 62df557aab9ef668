package mailauth

import (
	"context"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// netIPResolver is the A-only lookup *net.Resolver, DNSResolver and
// StaticResolver have; DNSBL uses it when there, so as not to ask for AAAA
// records no list publishes.
type netIPResolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// DNSBL returns the A records zone answers for subject: an IPv4 address as
// reversed octets, an IPv6 address as reversed nibbles, a domain name as
// is; empty when not listed or subject is "". A temporary failure is an
// error.
//
// Only answers in 127.0.0.0/8 are listings (RFC 5782 2.1): anything else is
// a resolver's or a parked zone's wildcard, not the list speaking. All of
// 127/8 is returned, including the codes some lists use to say they refused
// the query (Spamhaus: 127.255.255.252-255); rules compare with the codes
// their list documents, e.g. "127.0.0.2" in dnsbl(zone, client_ip).
func DNSBL(ctx context.Context, r Resolver, zone, subject string) ([]string, error) {
	zone = strings.Trim(zone, ".")
	subject = strings.TrimSuffix(subject, ".")
	if subject == "" || zone == "" {
		return nil, nil
	}
	name := subject + "." + zone
	if ip, err := netip.ParseAddr(subject); err == nil {
		// RFC 5782 2.1 and 2.4: reversed octets, or the 32 reversed nibbles.
		rev, _ := dns.ReverseAddr(ip.Unmap().String())
		rev = strings.TrimSuffix(strings.TrimSuffix(rev, "in-addr.arpa."), "ip6.arpa.")
		name = rev + zone
	}
	var ips []netip.Addr
	var err error
	if nr, ok := r.(netIPResolver); ok {
		ips, err = nr.LookupNetIP(ctx, "ip4", name)
	} else {
		ips, err = lookupIPAddrs(ctx, r, name)
	}
	if err != nil {
		if IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	var out []string
	for _, ip := range ips {
		ip = ip.Unmap()
		if ip.Is4() && ip.As4()[0] == 127 {
			out = append(out, ip.String())
		}
	}
	return out, nil
}

func lookupIPAddrs(ctx context.Context, r Resolver, host string) ([]netip.Addr, error) {
	addrs, err := r.LookupIPAddr(ctx, host)
	ips := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			ips = append(ips, ip.Unmap())
		}
	}
	return ips, err
}

// FCrDNS reports whether ptr (the client's PTR name) resolves back to ip.
// A name that does not resolve is false; a temporary failure is an error.
func FCrDNS(ctx context.Context, r Resolver, ip, ptr string) (bool, error) {
	want, err := netip.ParseAddr(ip)
	ptr = strings.TrimSuffix(ptr, ".")
	if err != nil || ptr == "" {
		return false, nil
	}
	want = want.Unmap()
	got, err := lookupIPAddrs(ctx, r, ptr)
	if err != nil {
		if IsNotFound(err) {
			return false, nil
		}
		return false, err
	}
	for _, a := range got {
		if a == want {
			return true, nil
		}
	}
	return false, nil
}
