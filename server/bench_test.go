package server

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// BenchmarkRelay sends 10 KB messages through the relay with the default
// rules and fsync on, from 50 concurrent clients on loopback, delivering
// into a local folder. bench/relay.sh measures the same from outside the
// process, with latencies.
func BenchmarkRelay(b *testing.B) { benchRelay(b, false) }

// BenchmarkRelayConnPerMessage is BenchmarkRelay with a new connection
// for each message, as smtp-source (bench/postfix.sh) and many
// applications send: what the relay does per connection counts too.
func BenchmarkRelayConnPerMessage(b *testing.B) { benchRelay(b, true) }

func benchRelay(b *testing.B, connPerMessage bool) {
	dir := b.TempDir()
	cfg := &Config{Hostname: "bench.test", Listen: []Listener{{Addr: "127.0.0.1:0"}}, StateDir: dir,
		RulesDir: "../rules.d", AllowInsecureAuth: true,
		Limits:   Limits{MaxConnectionsPerIP: 1000},
		Delivery: Delivery{Mode: "local"}}
	for i := range 100 {
		cfg.Accounts = append(cfg.Accounts, Account{Name: fmt.Sprint("a", i), Domains: []string{"bench.test"},
			Users: []User{{Name: fmt.Sprint("u", i), PasswordHash: testHash}}})
	}
	if err := cfg.finish(); err != nil {
		b.Fatal(err)
	}
	srv, err := New(cfg, "", Options{Log: quietLog(nil), Resolver: noPTR{}})
	if err != nil {
		b.Fatal(err)
	}
	ls, err := srv.Start(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown(b.Context())
	r := &relay{srv: srv, addrs: map[string]string{"plain": ls[0].Addr.String()}}
	var body strings.Builder
	body.WriteString("From: app@bench.test\r\nTo: c@example.org\r\nSubject: Your order\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <b@bench.test>\r\n\r\n")
	for body.Len() < 10240 {
		body.WriteString("Thank you for your order. Your items will be shipped within two business days.\r\n")
	}
	msg := body.String()
	const clients = 50
	var next sync.Mutex
	n := 0
	take := func() bool {
		next.Lock()
		defer next.Unlock()
		n++
		return n <= b.N
	}
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dial := func() *smtp.Client {
				c := r.dialOK("plain")
				if c == nil || c.Auth(plainAuth(fmt.Sprint("u", i%100))) != nil {
					b.Error("dial or auth failed")
					return nil
				}
				return c
			}
			c := dial()
			if c == nil {
				return
			}
			defer func() { c.Close() }()
			for take() {
				if _, err := send(c, "app@bench.test", []string{"c@example.org"}, msg); err != nil {
					b.Error(err)
					return
				}
				if connPerMessage {
					c.Quit()
					if c = dial(); c == nil {
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
