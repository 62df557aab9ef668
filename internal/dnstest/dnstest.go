// Package dnstest runs a real DNS server on 127.0.0.1 for tests (PTR for
// rdns, MX and A for delivery) and gives a resolver that asks only it.
package dnstest

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// Serve answers from zone (records by lower-case FQDN; a name absent is
// NXDOMAIN, a name without records of the asked type NODATA) and with
// SERVFAIL for the names in servfail, until the test ends.
func Serve(t testing.TB, zone map[string][]dns.RR, servfail map[string]bool) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		m.Authoritative, m.RecursionAvailable = true, true
		q := req.Question[0]
		name := strings.ToLower(q.Name)
		if servfail[name] {
			m.Rcode = dns.RcodeServerFailure
			w.WriteMsg(m)
			return
		}
		rrs, known := zone[name]
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
		if !known {
			m.Rcode = dns.RcodeNameError
		}
		if len(m.Answer) == 0 { // NXDOMAIN or NODATA carry the zone's SOA, as real servers do
			m.Ns = append(m.Ns, &dns.SOA{Hdr: dns.RR_Header{Name: "test.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
				Ns: "ns.test.", Mbox: "hostmaster.test.", Serial: 1, Refresh: 60, Retry: 60, Expire: 60, Minttl: 60})
		}
		w.WriteMsg(m)
	})
	srv := &dns.Server{PacketConn: pc, Handler: mux}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	addr := pc.LocalAddr().String()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
}

// RR parses one record in zone-file syntax.
func RR(t testing.TB, s string) dns.RR {
	t.Helper()
	r, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
