// Command smtpload measures a running relay from outside, over loopback:
// throughput and the latency of each transaction's final 250 with C
// concurrent clients sending messages of a given size, or the resident
// memory of the relay holding N idle sessions.
//
//	smtpload -addr 127.0.0.1:2525 -c 50 -size 10240 -duration 10s -users 100
//	smtpload -addr 127.0.0.1:2525 -idle 1000 -pid PID
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:2525", "relay address")
	conc := flag.Int("c", 50, "concurrent clients")
	size := flag.Int("size", 10240, "message size in bytes")
	dur := flag.Duration("duration", 10*time.Second, "how long to send")
	users := flag.Int("users", 0, "AUTH as bench-01..bench-N (password: bench), round-robin per connection; 0: no AUTH")
	perConn := flag.Int("per-conn", 100, "messages per connection (0: no limit)")
	idle := flag.Int("idle", 0, "instead of sending, hold this many idle sessions and report the relay's RSS")
	pid := flag.Int("pid", 0, "the relay's process id, for -idle")
	flag.Parse()
	if *idle > 0 {
		os.Exit(idleTest(*addr, *idle, *pid))
	}
	os.Exit(load(*addr, *conc, *size, *dur, *users, *perConn))
}

func body(size int) []byte {
	var b strings.Builder
	b.WriteString("From: app@bench.test\r\nTo: customer@example.org\r\nSubject: Your order confirmation\r\n")
	b.WriteString("Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench@bench.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	line := "Thank you for your order. Your items will be shipped within two business days.\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return []byte(b.String()[:size-2] + "\r\n")
}

func load(addr string, conc, size int, dur time.Duration, users, perConn int) int {
	msg := body(size)
	var sent, failed atomic.Int64
	var userSeq atomic.Int64
	lat := make([][]time.Duration, conc)
	errs := sync.Map{}
	connect := func() (*smtp.Client, error) {
		c, err := smtp.Dial(addr)
		if err != nil {
			return nil, err
		}
		if err := c.Hello("load.bench.test"); err != nil {
			c.Close()
			return nil, err
		}
		if users > 0 {
			u := fmt.Sprintf("bench-%02d", userSeq.Add(1)%int64(users)+1)
			if err := c.Auth(sasl.NewPlainClient("", u, "bench")); err != nil {
				c.Close()
				return nil, fmt.Errorf("AUTH: %w", err)
			}
		}
		return c, nil
	}
	// Every client connects and authenticates before the clock starts:
	// the figure is message throughput, not connection set-up (AUTH's
	// bcrypt is deliberately slow).
	clients := make([]*smtp.Client, conc)
	for i := range clients {
		c, err := connect()
		if err != nil {
			fmt.Println("connect:", err)
			return 1
		}
		clients[i] = c
	}
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(dur)
	for i := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[i]
			for time.Now().Before(deadline) {
				if c == nil {
					var err error
					if c, err = connect(); err != nil {
						failed.Add(1)
						errs.Store(err.Error(), true)
						time.Sleep(10 * time.Millisecond)
						continue
					}
				}
				for n := 0; (perConn == 0 || n < perConn) && time.Now().Before(deadline); n++ {
					t0 := time.Now()
					if err := transaction(c, msg); err != nil {
						failed.Add(1)
						errs.Store(err.Error(), true)
						break
					}
					lat[i] = append(lat[i], time.Since(t0))
					sent.Add(1)
				}
				c.Quit()
				c.Close()
				c = nil
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	pct := func(p float64) time.Duration {
		if len(all) == 0 {
			return 0
		}
		return all[min(len(all)-1, int(float64(len(all))*p))]
	}
	fmt.Printf("clients %d, message %d bytes, %s: %d messages accepted, %d failed\n", conc, size, elapsed.Round(time.Millisecond), sent.Load(), failed.Load())
	fmt.Printf("throughput %.0f messages/s; latency of the final 250: p50 %v, p99 %v, max %v\n",
		float64(sent.Load())/elapsed.Seconds(), pct(0.50).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond), pct(1).Round(10*time.Microsecond))
	errs.Range(func(k, _ any) bool {
		fmt.Println("error:", k)
		return true
	})
	if failed.Load() > 0 {
		return 1
	}
	return 0
}

func transaction(c *smtp.Client, msg []byte) error {
	if err := c.Mail("app@bench.test", nil); err != nil {
		return err
	}
	if err := c.Rcpt("customer@example.org", nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	return w.Close()
}

func idleTest(addr string, n, pid int) int {
	before := rss(pid)
	conns := make([]net.Conn, 0, n)
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			fmt.Printf("connection %d: %v\n", i, err)
			return 1
		}
		r := bufio.NewReader(c)
		if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "220") {
			fmt.Printf("connection %d greeting %q %v\n", i, l, err)
			return 1
		}
		fmt.Fprintf(c, "EHLO idle%d.bench.test\r\n", i)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				fmt.Printf("connection %d EHLO: %v\n", i, err)
				return 1
			}
			if strings.HasPrefix(l, "250 ") {
				break
			}
		}
		conns = append(conns, c)
	}
	time.Sleep(2 * time.Second) // let the relay settle
	after := rss(pid)
	fmt.Printf("%d idle sessions (after EHLO): relay RSS %.1f MB (%.1f MB before, %.1f KB per session)\n",
		n, float64(after)/1024, float64(before)/1024, float64(after-before)/float64(n))
	for _, c := range conns {
		c.Close()
	}
	return 0
}

// rss reads VmRSS of pid in KB.
func rss(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			var kb int
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
			return kb
		}
	}
	return 0
}
