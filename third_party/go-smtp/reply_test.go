package smtp_test

import (
	"bufio"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/emersion/go-smtp"
)

// writeCounter counts the writes to the connections it accepts.
type writeCounter struct {
	net.Listener
	writes atomic.Int32
}

func (l *writeCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countedConn{c, &l.writes}, nil
}

type countedConn struct {
	net.Conn
	writes *atomic.Int32
}

func (c *countedConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// A reply of many lines (EHLO's) leaves in one write, not one per line.
func TestMultilineReplyOneWrite(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wl := &writeCounter{Listener: l}
	s := smtp.NewServer(new(backend))
	s.Domain = "localhost"
	s.AllowInsecureAuth = true
	go s.Serve(wl)
	defer s.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := bufio.NewScanner(c)
	sc.Scan() // greeting
	io.WriteString(c, "EHLO localhost\r\n")
	lines := 0
	for sc.Scan() {
		lines++
		if strings.HasPrefix(sc.Text(), "250 ") {
			break
		}
	}
	if lines < 3 {
		t.Fatalf("EHLO reply of %d lines; want several", lines)
	}
	if n := wl.writes.Load(); n != 2 {
		t.Errorf("greeting and a %d-line EHLO reply took %d writes, want 2", lines, n)
	}
}
