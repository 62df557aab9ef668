// Command smtpsink is a next hop for delivery benchmarks: an SMTP server
// on loopback that accepts every message, counts messages and
// connections, and reports them every -every (and at SIGTERM/SIGINT) as
// "t=SECONDS messages=N connections=N open=N".
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
)

type counts struct{ msgs, conns, open atomic.Int64 }

type session struct{ c *counts }

func (s session) Reset()                               {}
func (s session) Logout() error                        { return nil }
func (s session) Mail(string, *smtp.MailOptions) error { return nil }
func (s session) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s session) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	s.c.msgs.Add(1)
	return nil
}

type listener struct {
	net.Listener
	c *counts
}

func (l listener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err == nil {
		l.c.conns.Add(1)
		l.c.open.Add(1)
		conn = &tracked{Conn: conn, c: l.c}
	}
	return conn, err
}

type tracked struct {
	net.Conn
	c    *counts
	done atomic.Bool
}

func (t *tracked) Close() error {
	if t.done.CompareAndSwap(false, true) {
		t.c.open.Add(-1)
	}
	return t.Conn.Close()
}

func main() {
	addr := flag.String("addr", "127.0.0.1:2526", "listen address")
	every := flag.Duration("every", time.Second, "report interval")
	flag.Parse()
	c := &counts{}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return session{c}, nil }))
	srv.Domain = "sink.bench"
	srv.MaxMessageBytes = 64 << 20
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(listener{l, c})
	start := time.Now()
	report := func() {
		fmt.Printf("t=%.1f messages=%d connections=%d open=%d\n", time.Since(start).Seconds(), c.msgs.Load(), c.conns.Load(), c.open.Load())
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	t := time.NewTicker(*every)
	for {
		select {
		case <-t.C:
			report()
		case <-sig:
			report()
			return
		}
	}
}
