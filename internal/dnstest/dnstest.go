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
	r, _ := ServeAddr(t, zone, servfail)
	return r
}

// ServeAddr is Serve that also gives the server's "127.0.0.1:port", for
// resolvers that take a server address; it answers over UDP and TCP.
func ServeAddr(t testing.TB, zone map[string][]dns.RR, servfail map[string]bool) (*net.Resolver, string) {
	t.Helper()
	addr := ServeFunc(t, Answer(zone, servfail))
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}, addr
}

// Answer is the handler Serve runs, for tests that wrap it (to count
// queries, or to truncate answers).
func Answer(zone map[string][]dns.RR, servfail map[string]bool) dns.HandlerFunc {
	return func(w dns.ResponseWriter, req *dns.Msg) {
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
	}
}

// ServeFunc runs h on 127.0.0.1, UDP and TCP on one port, until the test
// ends, and returns the address.
func ServeFunc(t testing.TB, h dns.HandlerFunc) string {
	t.Helper()
	var pc net.PacketConn
	var ln net.Listener
	for try := 0; ; try++ {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if try == 10 { // the port is taken for TCP: take another
			t.Fatal(err)
		}
	}
	udp := &dns.Server{PacketConn: pc, Handler: h}
	tcp := &dns.Server{Listener: ln, Handler: h}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	t.Cleanup(func() { udp.Shutdown(); tcp.Shutdown() })
	return pc.LocalAddr().String()
}

// Silent returns the address of a UDP socket on 127.0.0.1 that reads
// queries and never answers: a DNS server that times out.
func Silent(t testing.TB) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 512)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
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

// Resolver is a *net.Resolver that asks only the server at addr (over UDP).
func Resolver(addr string) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
}
