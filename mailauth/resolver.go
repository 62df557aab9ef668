package mailauth

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Cache bounds of DNSResolver.
const (
	cacheEntries   = 10000
	maxPositiveTTL = 24 * time.Hour
	// RFC 2308 5: negative answers are cached for the SOA minimum; a cap
	// keeps a record an operator has just published from staying unseen.
	maxNegativeTTL = 5 * time.Minute
	// RFC 6891 / DNS flag day 2020: an EDNS buffer that avoids fragmentation.
	ednsSize = 1232
)

// DNSResolver is the Resolver the relay's checks use: it asks the given
// servers (UDP, TCP when the answer is truncated), caches answers for their
// TTL, and runs one query for concurrent lookups of the same name and type.
type DNSResolver struct {
	servers []string
	timeout time.Duration
	udp     *dns.Client
	tcp     *dns.Client

	// Now is the clock the cache reads; tests set it.
	Now func() time.Time

	mu      sync.Mutex
	cache   map[cacheKey]*list.Element // of *cacheEntry
	order   *list.List                 // insertion order, oldest first
	flights map[cacheKey]*flight
	// Queries counts the queries sent to servers (for tests and metrics).
	queries int64
}

type cacheKey struct {
	name  string // lower-case FQDN
	qtype uint16
}

type cacheEntry struct {
	key     cacheKey
	ans     answer
	expires time.Time
}

// answer is what a lookup of one name and type gives: the records, or
// notFound, or a temporary failure (never cached).
type answer struct {
	rrs      []dns.RR
	notFound bool
	ttl      time.Duration
}

type flight struct {
	done chan struct{}
	ans  answer
	err  error
}

// NewDNSResolver returns a resolver asking servers ("host:port") in order;
// none means those of /etc/resolv.conf, or 127.0.0.1:53 without one.
// timeout bounds one lookup, whatever the number of servers tried (each gets
// an equal share); 0 means 2s.
func NewDNSResolver(servers []string, timeout time.Duration) (*DNSResolver, error) {
	if len(servers) == 0 {
		servers = systemServers("/etc/resolv.conf")
	} else {
		servers = append([]string(nil), servers...)
	}
	for i, s := range servers {
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			// A bare address means port 53.
			if _, perr := netip.ParseAddr(strings.Trim(s, "[]")); perr != nil {
				return nil, fmt.Errorf("dns server %q: %w", s, err)
			}
			host, port = strings.Trim(s, "[]"), "53"
		}
		servers[i] = net.JoinHostPort(host, port)
	}
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	return &DNSResolver{
		servers: servers,
		timeout: timeout,
		udp:     &dns.Client{Net: "udp", UDPSize: ednsSize},
		tcp:     &dns.Client{Net: "tcp"},
		Now:     time.Now,
		cache:   make(map[cacheKey]*list.Element),
		order:   list.New(),
		flights: make(map[cacheKey]*flight),
	}, nil
}

func systemServers(path string) []string {
	cfg, err := dns.ClientConfigFromFile(path)
	if err != nil || len(cfg.Servers) == 0 {
		return []string{"127.0.0.1:53"}
	}
	out := make([]string, 0, len(cfg.Servers))
	for _, s := range cfg.Servers {
		out = append(out, net.JoinHostPort(s, cfg.Port))
	}
	return out
}

// Queries returns how many queries the resolver has sent to servers.
func (r *DNSResolver) Queries() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.queries
}

// LookupTXT returns name's TXT records, each record's strings joined into
// one (RFC 7208 3.3).
func (r *DNSResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.lookup(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return out, nil
}

// LookupMX returns name's MX records, hosts as FQDNs (with the final dot,
// as *net.Resolver gives them).
func (r *DNSResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	rrs, err := r.lookup(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	out := make([]*net.MX, 0, len(rrs))
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		out = append(out, &net.MX{Host: mx.Mx, Pref: mx.Preference})
	}
	return out, nil
}

// LookupAddr returns the PTR names of addr (an IP address).
func (r *DNSResolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	rev, err := dns.ReverseAddr(addr)
	if err != nil {
		return nil, notFoundError(addr, "unrecognized address")
	}
	rrs, err := r.lookup(ctx, rev, dns.TypePTR)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, rr.(*dns.PTR).Ptr)
	}
	return out, nil
}

// LookupIPAddr returns host's A and AAAA records, asked together. An
// address answers itself, as with *net.Resolver.
func (r *DNSResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	ips, err := r.LookupNetIP(ctx, "ip", host)
	return ipAddrs(ips), err
}

// LookupNetIP returns host's A records (network "ip4"), AAAA ("ip6") or
// both ("ip"), as *net.Resolver does; DNSBL asks only for A.
func (r *DNSResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip}, nil
	}
	var types []uint16
	switch network {
	case "ip4":
		types = []uint16{dns.TypeA}
	case "ip6":
		types = []uint16{dns.TypeAAAA}
	default:
		types = []uint16{dns.TypeA, dns.TypeAAAA}
	}
	type res struct {
		rrs []dns.RR
		err error
	}
	results := make([]res, len(types))
	var wg sync.WaitGroup
	for i, t := range types {
		wg.Go(func() {
			rrs, err := r.lookup(ctx, host, t)
			results[i] = res{rrs, err}
		})
	}
	wg.Wait()
	var ips []netip.Addr
	var firstErr error
	for _, res := range results {
		if res.err != nil {
			// Temporary failures win over "not found": the name may exist.
			if firstErr == nil || (IsNotFound(firstErr) && !IsNotFound(res.err)) {
				firstErr = res.err
			}
			continue
		}
		for _, rr := range res.rrs {
			switch rr := rr.(type) {
			case *dns.A:
				ip, _ := netip.AddrFromSlice(rr.A.To4())
				ips = append(ips, ip)
			case *dns.AAAA:
				ip, _ := netip.AddrFromSlice(rr.AAAA.To16())
				ips = append(ips, ip)
			}
		}
	}
	// Answers of one type are used even when the other failed, as
	// *net.Resolver does.
	if len(ips) > 0 {
		return ips, nil
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return nil, notFoundError(host, "no such host")
}

// lookup answers from the cache, or joins the query in flight for the same
// name and type, or starts one.
func (r *DNSResolver) lookup(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	fqdn := dns.Fqdn(strings.ToLower(name))
	if _, ok := dns.IsDomainName(fqdn); !ok || fqdn == "." {
		return nil, notFoundError(name, "no such host")
	}
	key := cacheKey{fqdn, qtype}

	r.mu.Lock()
	if el, ok := r.cache[key]; ok {
		e := el.Value.(*cacheEntry)
		if r.Now().Before(e.expires) {
			r.mu.Unlock()
			return e.ans.result(name)
		}
		r.order.Remove(el)
		delete(r.cache, key)
	}
	f, ok := r.flights[key]
	if !ok {
		f = &flight{done: make(chan struct{})}
		r.flights[key] = f
		// The query outlives a caller that gives up, so that the others
		// waiting for it, and the cache, still get its answer; the
		// resolver's timeout bounds it.
		go r.run(context.WithoutCancel(ctx), key, f)
	}
	r.mu.Unlock()

	select {
	case <-f.done:
		if f.err != nil {
			return nil, f.err
		}
		return f.ans.result(name)
	case <-ctx.Done():
		return nil, &net.DNSError{Err: ctx.Err().Error(), Name: name,
			IsTimeout: errors.Is(ctx.Err(), context.DeadlineExceeded), IsTemporary: true}
	}
}

func (a answer) result(name string) ([]dns.RR, error) {
	if a.notFound {
		return nil, notFoundError(name, "no such host")
	}
	return a.rrs, nil
}

func (r *DNSResolver) run(ctx context.Context, key cacheKey, f *flight) {
	ans, err := r.query(ctx, key)
	f.ans, f.err = ans, err

	r.mu.Lock()
	delete(r.flights, key)
	if err == nil && ans.ttl > 0 {
		r.store(key, ans)
	}
	r.mu.Unlock()
	close(f.done)
}

// store adds an answer to the cache, making room by dropping expired
// entries, then the oldest. r.mu is held.
func (r *DNSResolver) store(key cacheKey, ans answer) {
	now := r.Now()
	if r.order.Len() >= cacheEntries {
		for el := r.order.Front(); el != nil; {
			next := el.Next()
			if e := el.Value.(*cacheEntry); !now.Before(e.expires) {
				r.order.Remove(el)
				delete(r.cache, e.key)
			}
			el = next
		}
	}
	for r.order.Len() >= cacheEntries {
		e := r.order.Remove(r.order.Front()).(*cacheEntry)
		delete(r.cache, e.key)
	}
	if old, ok := r.cache[key]; ok {
		r.order.Remove(old)
	}
	r.cache[key] = r.order.PushBack(&cacheEntry{key: key, ans: ans, expires: now.Add(ans.ttl)})
}

// query asks the servers in turn until one answers NOERROR or NXDOMAIN.
func (r *DNSResolver) query(ctx context.Context, key cacheKey) (answer, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	share := r.timeout / time.Duration(len(r.servers))

	m := new(dns.Msg)
	m.SetQuestion(key.name, key.qtype)
	m.RecursionDesired = true
	m.SetEdns0(ednsSize, false)

	var lastErr error
	for _, server := range r.servers {
		actx, acancel := context.WithTimeout(ctx, share)
		ans, err := r.exchange(actx, m, key, server)
		acancel()
		if err == nil {
			return ans, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return answer{}, lastErr
}

func (r *DNSResolver) exchange(ctx context.Context, m *dns.Msg, key cacheKey, server string) (answer, error) {
	r.mu.Lock()
	r.queries++
	r.mu.Unlock()
	resp, _, err := r.udp.ExchangeContext(ctx, m, server)
	if err == nil && resp.Truncated {
		r.mu.Lock()
		r.queries++
		r.mu.Unlock()
		resp, _, err = r.tcp.ExchangeContext(ctx, m, server)
	}
	name := strings.TrimSuffix(key.name, ".")
	if err != nil {
		var ne net.Error
		timeout := errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
		msg := err.Error()
		if timeout {
			msg = "i/o timeout"
		}
		return answer{}, &net.DNSError{Err: msg, Name: name, Server: server, IsTimeout: timeout, IsTemporary: true}
	}
	switch resp.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return answer{notFound: true, ttl: negativeTTL(resp)}, nil
	default: // SERVFAIL, REFUSED and the rest: the name may well exist
		return answer{}, &net.DNSError{Err: "server misbehaving: " + dns.RcodeToString[resp.Rcode],
			Name: name, Server: server, IsTemporary: true}
	}
	var rrs []dns.RR
	var ttl uint32
	for _, rr := range resp.Answer {
		if rr.Header().Rrtype != key.qtype {
			continue // a CNAME chain's links: the records asked for follow them
		}
		if len(rrs) == 0 || rr.Header().Ttl < ttl {
			ttl = rr.Header().Ttl
		}
		rrs = append(rrs, rr)
	}
	if len(rrs) == 0 { // NODATA
		return answer{notFound: true, ttl: negativeTTL(resp)}, nil
	}
	return answer{rrs: rrs, ttl: min(time.Duration(ttl)*time.Second, maxPositiveTTL)}, nil
}

// negativeTTL is how long a "not found" may be cached: RFC 2308 5, the
// lesser of the SOA's TTL and its MINIMUM, capped; without a SOA, not at all.
func negativeTTL(resp *dns.Msg) time.Duration {
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			ttl := min(soa.Hdr.Ttl, soa.Minttl)
			return min(time.Duration(ttl)*time.Second, maxNegativeTTL)
		}
	}
	return 0
}

func notFoundError(name, msg string) error {
	return &net.DNSError{Err: msg, Name: name, IsNotFound: true}
}

// ipAddrs converts for LookupIPAddr, the method *net.Resolver's callers know.
func ipAddrs(ips []netip.Addr) []net.IPAddr {
	out := make([]net.IPAddr, 0, len(ips))
	for _, ip := range ips {
		out = append(out, net.IPAddr{IP: ip.AsSlice()})
	}
	return out
}
