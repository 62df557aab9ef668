package mailauth

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// StaticResolver is DNS as data (SPEC 6, context.dns): fixtures, explain
// and scan run every check against it, and nothing leaves the process.
type StaticResolver struct {
	records map[string][]string // by "name TYPE", name lower-case without the final dot
	names   map[string]bool     // every name listed, whatever the type
}

// Values of a static record that make the lookup fail instead of answer.
const (
	StaticServfail = "SERVFAIL"
	StaticTimeout  = "TIMEOUT"
)

var staticTypes = map[string]bool{"TXT": true, "A": true, "AAAA": true, "MX": true, "PTR": true}

// NewStaticResolver answers from records, keyed "NAME TYPE" (TYPE one of
// TXT, A, AAAA, MX, PTR; NAME case-insensitive, the final dot optional).
// MX values are "PREFERENCE HOST"; a TXT value is one whole record. A single
// value SERVFAIL or TIMEOUT makes lookups of that name and type fail so
// (temporary). A name not listed is NXDOMAIN; a name listed only with
// other types is NODATA. PTR keys are reverse names
// ("10.2.0.192.in-addr.arpa PTR"). Keys and values ValidateStaticRecords
// refuses are ignored.
func NewStaticResolver(records map[string][]string) *StaticResolver {
	s := &StaticResolver{records: make(map[string][]string), names: make(map[string]bool)}
	for k, v := range records {
		name, typ, err := parseStaticKey(k)
		if err != nil {
			continue
		}
		s.names[name] = true
		s.records[name+" "+typ] = v
	}
	return s
}

// ValidateStaticRecords reports the first key or value NewStaticResolver
// would ignore or misread, so that a fixture with a typo fails loudly.
func ValidateStaticRecords(records map[string][]string) error {
	for k, vals := range records {
		_, typ, err := parseStaticKey(k)
		if err != nil {
			return err
		}
		if isStaticFailure(vals) != "" {
			continue
		}
		for _, v := range vals {
			if err := validateStaticValue(typ, v); err != nil {
				return fmt.Errorf("dns %q: %w", k, err)
			}
		}
	}
	return nil
}

func parseStaticKey(k string) (name, typ string, err error) {
	f := strings.Fields(k)
	if len(f) != 2 {
		return "", "", fmt.Errorf("dns key %q: want \"NAME TYPE\"", k)
	}
	typ = strings.ToUpper(f[1])
	if !staticTypes[typ] {
		return "", "", fmt.Errorf("dns key %q: type %s is not one of TXT, A, AAAA, MX, PTR", k, f[1])
	}
	return staticName(f[0]), typ, nil
}

func staticName(n string) string { return strings.ToLower(strings.TrimSuffix(n, ".")) }

func validateStaticValue(typ, v string) error {
	switch typ {
	case "A", "AAAA":
		ip, err := netip.ParseAddr(v)
		if err != nil || ip.Is4() != (typ == "A") {
			return fmt.Errorf("%q is not an %s address", v, typ)
		}
	case "MX":
		if _, err := parseStaticMX(v); err != nil {
			return err
		}
	case "PTR":
		if _, ok := dns.IsDomainName(v); !ok || strings.ContainsAny(v, " \t") {
			return fmt.Errorf("%q is not a host name", v)
		}
	}
	return nil
}

func parseStaticMX(v string) (*net.MX, error) {
	f := strings.Fields(v)
	if len(f) != 2 {
		return nil, fmt.Errorf("MX %q: want \"PREFERENCE HOST\"", v)
	}
	pref, err := strconv.ParseUint(f[0], 10, 16)
	if err != nil {
		return nil, fmt.Errorf("MX %q: preference: %w", v, err)
	}
	return &net.MX{Host: dns.Fqdn(f[1]), Pref: uint16(pref)}, nil
}

func isStaticFailure(vals []string) string {
	if len(vals) == 1 && (vals[0] == StaticServfail || vals[0] == StaticTimeout) {
		return vals[0]
	}
	return ""
}

// lookup returns the values of name and typ, or the error a server would.
func (s *StaticResolver) lookup(name, typ string) ([]string, error) {
	n := staticName(name)
	vals, ok := s.records[n+" "+typ]
	switch {
	case !ok && !s.names[n]:
		return nil, notFoundError(name, "no such host")
	case !ok || len(vals) == 0:
		return nil, notFoundError(name, "no answer")
	}
	switch isStaticFailure(vals) {
	case StaticServfail:
		return nil, &net.DNSError{Err: "server misbehaving: SERVFAIL", Name: name, IsTemporary: true}
	case StaticTimeout:
		return nil, &net.DNSError{Err: "i/o timeout", Name: name, IsTimeout: true, IsTemporary: true}
	}
	return vals, nil
}

// LookupTXT returns name's TXT values.
func (s *StaticResolver) LookupTXT(_ context.Context, name string) ([]string, error) {
	vals, err := s.lookup(name, "TXT")
	if err != nil {
		return nil, err
	}
	return append([]string(nil), vals...), nil
}

// LookupMX returns name's MX values; malformed ones are left out.
func (s *StaticResolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	vals, err := s.lookup(name, "MX")
	if err != nil {
		return nil, err
	}
	out := make([]*net.MX, 0, len(vals))
	for _, v := range vals {
		if mx, err := parseStaticMX(v); err == nil {
			out = append(out, mx)
		}
	}
	return out, nil
}

// LookupAddr returns the PTR values of addr's reverse name.
func (s *StaticResolver) LookupAddr(_ context.Context, addr string) ([]string, error) {
	rev, err := dns.ReverseAddr(addr)
	if err != nil {
		return nil, notFoundError(addr, "unrecognized address")
	}
	vals, err := s.lookup(rev, "PTR")
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(vals))
	for _, v := range vals {
		out = append(out, dns.Fqdn(v))
	}
	return out, nil
}

// LookupIPAddr returns host's A and AAAA values.
func (s *StaticResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	ips, err := s.LookupNetIP(ctx, "ip", host)
	return ipAddrs(ips), err
}

// LookupNetIP returns host's A values (network "ip4"), AAAA ("ip6") or both
// ("ip"). An address answers itself.
func (s *StaticResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip}, nil
	}
	var types []string
	switch network {
	case "ip4":
		types = []string{"A"}
	case "ip6":
		types = []string{"AAAA"}
	default:
		types = []string{"A", "AAAA"}
	}
	var ips []netip.Addr
	var firstErr error
	for _, t := range types {
		vals, err := s.lookup(host, t)
		if err != nil {
			if firstErr == nil || (IsNotFound(firstErr) && !IsNotFound(err)) {
				firstErr = err
			}
			continue
		}
		for _, v := range vals {
			if ip, err := netip.ParseAddr(v); err == nil && ip.Is4() == (t == "A") {
				ips = append(ips, ip)
			}
		}
	}
	if len(ips) > 0 {
		return ips, nil
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return nil, notFoundError(host, "no answer")
}
