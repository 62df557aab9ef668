package mailauth

import (
	"context"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicemail/sluice/internal/dnstest"
)

// countingServer runs dnstest's zone answerer on 127.0.0.1 and counts the
// queries that reach it, by lower-case FQDN and type.
type countingServer struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *countingServer) count(name string, qtype uint16) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[strings.ToLower(dns.Fqdn(name))+" "+dns.TypeToString[qtype]]
}

func serveCounting(t testing.TB, zone map[string][]dns.RR, servfail map[string]bool, delay time.Duration) (*countingServer, string) {
	c := &countingServer{n: map[string]int{}}
	answer := dnstest.Answer(zone, servfail)
	addr := dnstest.ServeFunc(t, func(w dns.ResponseWriter, req *dns.Msg) {
		q := req.Question[0]
		c.mu.Lock()
		c.n[strings.ToLower(q.Name)+" "+dns.TypeToString[q.Qtype]]++
		c.mu.Unlock()
		time.Sleep(delay)
		answer(w, req)
	})
	return c, addr
}

func zoneOf(t testing.TB, rrs ...string) map[string][]dns.RR {
	z := map[string][]dns.RR{}
	for _, s := range rrs {
		rr := dnstest.RR(t, s)
		n := strings.ToLower(rr.Header().Name)
		z[n] = append(z[n], rr)
	}
	return z
}

func newTestResolver(t testing.TB, addr string, timeout time.Duration) *DNSResolver {
	t.Helper()
	r, err := NewDNSResolver([]string{addr}, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDNSResolverAnswersEachType(t *testing.T) {
	zone := zoneOf(t,
		`example.com. 300 IN TXT "v=spf1 " "ip4:192.0.2.0/24 -all"`,
		`example.com. 300 IN TXT "other"`,
		`example.com. 300 IN MX 10 mx.example.com.`,
		`mx.example.com. 300 IN A 192.0.2.10`,
		`mx.example.com. 300 IN AAAA 2001:db8::10`,
		`10.2.0.192.in-addr.arpa. 300 IN PTR mx.example.com.`,
		`nodata.example.com. 300 IN A 192.0.2.1`,
	)
	_, addr := dnstest.ServeAddr(t, zone, map[string]bool{"broken.example.com.": true})
	r := newTestResolver(t, addr, time.Second)
	ctx := context.Background()

	txt, err := r.LookupTXT(ctx, "Example.COM")
	slices.Sort(txt)
	if err != nil || !slices.Equal(txt, []string{"other", "v=spf1 ip4:192.0.2.0/24 -all"}) {
		t.Errorf("TXT = %q, %v; want the strings of each record joined (RFC 7208 3.3)", txt, err)
	}
	mx, err := r.LookupMX(ctx, "example.com.")
	if err != nil || len(mx) != 1 || mx[0].Host != "mx.example.com." || mx[0].Pref != 10 {
		t.Errorf("MX = %v, %v", mx, err)
	}
	ips, err := r.LookupIPAddr(ctx, "mx.example.com")
	if err != nil || len(ips) != 2 {
		t.Errorf("IPAddr = %v, %v; want the A and the AAAA", ips, err)
	}
	ptr, err := r.LookupAddr(ctx, "192.0.2.10")
	if err != nil || !slices.Equal(ptr, []string{"mx.example.com."}) {
		t.Errorf("PTR = %v, %v", ptr, err)
	}
	if _, err := r.LookupTXT(ctx, "absent.example.com"); !IsNotFound(err) {
		t.Errorf("NXDOMAIN: err = %v, want not found", err)
	}
	if _, err := r.LookupTXT(ctx, "nodata.example.com"); !IsNotFound(err) {
		t.Errorf("NODATA: err = %v, want not found", err)
	}
	_, err = r.LookupTXT(ctx, "broken.example.com")
	var de *net.DNSError
	if !IsTemporary(err) || !errorsAs(err, &de) || !de.Temporary() {
		t.Errorf("SERVFAIL: err = %v, want a temporary *net.DNSError", err)
	}
	if _, err := r.LookupAddr(ctx, "not an address"); !IsNotFound(err) {
		t.Errorf("PTR of a non-address: err = %v, want not found", err)
	}
}

func errorsAs(err error, de **net.DNSError) bool {
	d, ok := err.(*net.DNSError)
	*de = d
	return ok
}

func TestDNSResolverSilentServerTimesOut(t *testing.T) {
	r := newTestResolver(t, dnstest.Silent(t), 200*time.Millisecond)
	start := time.Now()
	_, err := r.LookupTXT(context.Background(), "example.com")
	var de *net.DNSError
	if !errorsAs(err, &de) || !de.IsTimeout || !de.Temporary() || IsNotFound(err) {
		t.Fatalf("err = %#v, want a *net.DNSError with IsTimeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v, want about the 200ms timeout", d)
	}
}

func TestDNSResolverTriesTheNextServer(t *testing.T) {
	_, good := dnstest.ServeAddr(t, zoneOf(t, `example.com. 60 IN TXT "hello"`), nil)
	r, err := NewDNSResolver([]string{dnstest.Silent(t), good}, 400*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	txt, err := r.LookupTXT(context.Background(), "example.com")
	if err != nil || !slices.Equal(txt, []string{"hello"}) {
		t.Errorf("TXT = %q, %v; want the second server's answer", txt, err)
	}
}

func TestDNSResolverCacheHonoursTTL(t *testing.T) {
	zone := zoneOf(t, `short.example.com. 30 IN TXT "a"`, `long.example.com. 3600 IN TXT "b"`)
	srv, addr := serveCounting(t, zone, map[string]bool{"fail.example.com.": true}, 0)
	r := newTestResolver(t, addr, time.Second)
	now := time.Unix(1_700_000_000, 0)
	r.Now = func() time.Time { return now }
	ctx := context.Background()
	look := func(name string) {
		t.Helper()
		r.LookupTXT(ctx, name)
	}

	look("short.example.com")
	look("SHORT.example.com.")
	look("long.example.com")
	look("absent.example.com") // NXDOMAIN, SOA minimum 60s
	look("absent.example.com")
	look("fail.example.com") // SERVFAIL is never cached
	look("fail.example.com")
	if got := srv.count("short.example.com", dns.TypeTXT); got != 1 {
		t.Errorf("within the TTL: %d queries reached the server, want 1", got)
	}
	if got := srv.count("absent.example.com", dns.TypeTXT); got != 1 {
		t.Errorf("NXDOMAIN within the SOA minimum: %d queries, want 1", got)
	}
	if got := srv.count("fail.example.com", dns.TypeTXT); got != 2 {
		t.Errorf("SERVFAIL: %d queries, want 2 (not cached)", got)
	}

	now = now.Add(31 * time.Second)
	look("short.example.com")
	look("long.example.com")
	look("absent.example.com")
	if got := srv.count("short.example.com", dns.TypeTXT); got != 2 {
		t.Errorf("after the TTL: %d queries, want 2", got)
	}
	if got := srv.count("long.example.com", dns.TypeTXT); got != 1 {
		t.Errorf("within a long TTL: %d queries, want 1", got)
	}
	if got := srv.count("absent.example.com", dns.TypeTXT); got != 1 {
		t.Errorf("NXDOMAIN within 60s: %d queries, want 1", got)
	}
	now = now.Add(30 * time.Second)
	look("absent.example.com")
	if got := srv.count("absent.example.com", dns.TypeTXT); got != 2 {
		t.Errorf("NXDOMAIN after the SOA minimum: %d queries, want 2", got)
	}
}

func TestDNSResolverCacheIsBounded(t *testing.T) {
	r := newTestResolver(t, "127.0.0.1:1", time.Second)
	now := time.Unix(1_700_000_000, 0)
	r.Now = func() time.Time { return now }
	r.mu.Lock()
	for i := range cacheEntries + 50 {
		r.store(cacheKey{name: strings.Repeat("x", i%7) + ".example.", qtype: uint16(i)}, answer{notFound: true, ttl: time.Minute})
	}
	n := len(r.cache)
	r.mu.Unlock()
	if n != cacheEntries || r.order.Len() != cacheEntries {
		t.Errorf("cache holds %d (list %d), want %d", n, r.order.Len(), cacheEntries)
	}
}

func TestDNSResolverCoalescesConcurrentLookups(t *testing.T) {
	zone := zoneOf(t, `example.com. 0 IN TXT "v=spf1 -all"`) // TTL 0: only coalescing can save queries
	srv, addr := serveCounting(t, zone, nil, 100*time.Millisecond)
	r := newTestResolver(t, addr, 2*time.Second)
	var wg sync.WaitGroup
	var ok atomic.Int32
	for range 20 {
		wg.Go(func() {
			if txt, err := r.LookupTXT(context.Background(), "example.com"); err == nil && len(txt) == 1 {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 20 {
		t.Errorf("%d of 20 lookups answered", ok.Load())
	}
	if got := srv.count("example.com", dns.TypeTXT); got != 1 {
		t.Errorf("20 concurrent lookups sent %d queries, want 1", got)
	}
}

func TestDNSResolverCallerDeadline(t *testing.T) {
	r := newTestResolver(t, dnstest.Silent(t), 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := r.LookupTXT(ctx, "example.com")
	var de *net.DNSError
	if !errorsAs(err, &de) || !de.IsTimeout {
		t.Errorf("err = %v, want a timeout *net.DNSError at the caller's deadline", err)
	}
}

func TestDNSResolverFallsBackToTCPWhenTruncated(t *testing.T) {
	long := strings.Repeat("x", 250)
	var rrs []string
	for i := range 12 { // about 3 KB: more than the 1232-byte EDNS buffer
		rrs = append(rrs, `big.example.com. 60 IN TXT "`+long+`" "`+string(rune('a'+i))+`"`)
	}
	zone := zoneOf(t, rrs...)
	answer := dnstest.Answer(zone, nil)
	var udp, tcp atomic.Int32
	addr := dnstest.ServeFunc(t, func(w dns.ResponseWriter, req *dns.Msg) {
		if w.RemoteAddr().Network() == "udp" {
			udp.Add(1)
			m := new(dns.Msg)
			m.SetReply(req)
			m.Truncated = true // RFC 1035 4.2.1: ask again over TCP
			w.WriteMsg(m)
			return
		}
		tcp.Add(1)
		answer(w, req)
	})
	r := newTestResolver(t, addr, 2*time.Second)
	txt, err := r.LookupTXT(context.Background(), "big.example.com")
	if err != nil || len(txt) != 12 || txt[0][:len(long)] != long {
		t.Fatalf("TXT: %d records, %v", len(txt), err)
	}
	if udp.Load() != 1 || tcp.Load() != 1 {
		t.Errorf("udp %d, tcp %d queries; want 1 each", udp.Load(), tcp.Load())
	}
}

func TestSystemServersFallsBackToLoopback(t *testing.T) {
	if got := systemServers("/nonexistent/resolv.conf"); !slices.Equal(got, []string{"127.0.0.1:53"}) {
		t.Errorf("systemServers = %v", got)
	}
	dir := t.TempDir() + "/resolv.conf"
	writeFile(t, dir, "nameserver 192.0.2.53\nnameserver 2001:db8::53\n")
	if got := systemServers(dir); !slices.Equal(got, []string{"192.0.2.53:53", "[2001:db8::53]:53"}) {
		t.Errorf("systemServers = %v", got)
	}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
