package queue

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"github.com/sluicemail/sluice/internal/dnstest"
)

// TestSlowDestinationDoesNotBlockOthers: a backlog for a slow next hop
// holds at most its sessions and as many waiting attempts, so mail for
// another destination goes out meanwhile instead of queueing behind it
// (head-of-line blocking: 10 workers would all wait for the slow one's
// two sessions). The messages turned away are woken as sessions come
// free, in order, well before busyWait: the slow backlog drains at its
// sessions' pace, each message once, over exactly two connections.
func TestSlowDestinationDoesNotBlockOthers(t *testing.T) {
	slow := newSink(t, func(k *sink) { k.dataDelay = 150 * time.Millisecond; k.listen = "127.0.0.1:0" })
	_, port, _ := net.SplitHostPort(slow.addr)
	fast := newSink(t, func(k *sink) { k.listen = "127.0.0.2:" + port })
	res := dnstest.Serve(t, map[string][]dns.RR{
		"slow.test.": {dnstest.RR(t, "slow.test. 60 IN A 127.0.0.1")},
		"fast.test.": {dnstest.RR(t, "fast.test. 60 IN A 127.0.0.2")},
	}, nil)
	var p int
	fmt.Sscan(port, &p)
	cfg := smarthostConfig("")
	cfg.Mode, cfg.Port, cfg.MaxWorkers, cfg.ConnsPerDest = "mx", p, 10, 2
	d, _, sp := startDelivererRes(t, cfg, res)

	put := func(prefix string, n int, rcpt string) {
		for i := range n {
			id := fmt.Sprintf("%s%03d", prefix, i)
			env := &Envelope{ID: id, From: "a@b.test", Received: time.Now(), NextAttempt: time.Now(),
				Rcpts: []RcptState{{Addr: rcpt, Status: StatusPending}}}
			msg := []byte("Subject: " + id + "\r\n\r\nbody of " + id + "\r\n")
			if err := d.Put(AreaQueue, env, msg); err != nil {
				t.Fatal(err)
			}
			d.EnqueueFresh(env, msg)
		}
	}
	put("S", 30, "bob@slow.test")
	time.Sleep(50 * time.Millisecond) // the slow backlog takes the workers first
	put("F", 5, "ann@fast.test")
	fast.wait(t, 5)
	slow.mu.Lock()
	before := slow.total
	slow.mu.Unlock()
	if before > 10 {
		t.Errorf("the fast destination got its 5 messages only after the slow one got %d of 30", before)
	}
	start := time.Now()
	slow.wait(t, 30) // 30 x 150 ms over 2 sessions: about 2.3 s, far below busyWait
	if took := time.Since(start); took > busyWait/2 {
		t.Errorf("the slow backlog took %s: turned-away messages waited for busyWait instead of a free session", took)
	}
	drained(t, sp)
	slow.mu.Lock()
	defer slow.mu.Unlock()
	for id, n := range slow.got {
		if n != 1 {
			t.Errorf("%s received %d times", id, n)
		}
	}
	if slow.accepted != 2 { // opportunistic TLS with no STARTTLS offered: the EHLO's connection carries the mail
		t.Errorf("%d connections to the slow destination (messages on each: %v), want 2", slow.accepted, slow.perConn)
	}
	if slow.maxActive > 2 {
		t.Errorf("%d sessions at once to the slow destination, want at most 2 (connections %d, messages per connection %v)", slow.maxActive, slow.conns, slow.perConn)
	}
}

// TestOpportunisticTLS: to an MX that offers STARTTLS the relay says EHLO
// with its own name, upgrades that same connection, and says EHLO again;
// to one that does not, the connection that said EHLO carries the mail in
// cleartext (TestSlowDestinationDoesNotBlockOthers counts its
// connections).
func TestOpportunisticTLS(t *testing.T) {
	type seen struct {
		tls  bool
		helo string
	}
	var mu sync.Mutex
	var got []seen
	k := newSink(t, func(k *sink) {
		k.onMail = func(c *smtp.Conn, _, _ int) error {
			_, ok := c.TLSConnectionState()
			mu.Lock()
			got = append(got, seen{ok, c.Hostname()})
			mu.Unlock()
			return nil
		}
	})
	k.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{selfSignedCert(t, "mx.tls.test")}}
	_, port, _ := net.SplitHostPort(k.addr)
	res := dnstest.Serve(t, map[string][]dns.RR{"tls.test.": {dnstest.RR(t, "tls.test. 60 IN A 127.0.0.1")}}, nil)
	var p int
	fmt.Sscan(port, &p)
	cfg := smarthostConfig("")
	cfg.Mode, cfg.Port, cfg.ConnsPerDest = "mx", p, 1
	d, _, _ := startDelivererRes(t, cfg, res)
	submit(t, d, 3, "ann@tls.test")
	k.wait(t, 3)
	k.mu.Lock()
	conns := k.accepted
	k.mu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	for _, s := range got {
		if !s.tls || s.helo != "relay.test" {
			t.Errorf("a message went with TLS %v after EHLO %q, want TLS after EHLO relay.test", s.tls, s.helo)
		}
	}
	if conns != 1 {
		t.Errorf("%d connections for 3 messages, want 1 (upgraded, then reused)", conns)
	}
}

// selfSignedCert makes a certificate for host, valid for an hour.
func selfSignedCert(t *testing.T, host string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestLocalSweepsStaleTemporaryFiles: the temporary files a killed relay
// left in a folder go before this process first delivers there; the
// folder's mail stays.
func TestLocalSweepsStaleTemporaryFiles(t *testing.T) {
	dir := t.TempDir()
	folder := filepath.Join(dir, "bob@example.org")
	if err := os.MkdirAll(folder, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"OLD.eml.tmp": "half a mess", "KEPT.eml": "Subject: kept\r\n\r\nkept\r\n"} {
		if err := os.WriteFile(filepath.Join(folder, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := smarthostConfig("")
	cfg.Mode, cfg.LocalDir = "local", dir
	d, _, sp := startDeliverer(t, cfg)
	ids := submit(t, d, 3, "bob@example.org")
	drained(t, sp)
	names, _ := filepath.Glob(filepath.Join(folder, "*"))
	want := map[string]bool{"KEPT.eml": true}
	for _, id := range ids {
		want[id+".eml"] = true
	}
	if len(names) != len(want) {
		t.Errorf("folder holds %v, want %v", names, want)
	}
	for _, n := range names {
		if !want[filepath.Base(n)] {
			t.Errorf("%s is still there", filepath.Base(n))
		}
	}
}
