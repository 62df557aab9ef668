package smtp_test

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestConnectionsShareNoInput (sluice patch): a goroutine serves one
// connection after another with the same read buffer; what a client sent
// after QUIT must not reach the next connection, which gets its own
// greeting and its own replies.
func TestConnectionsShareNoInput(t *testing.T) {
	_, s, c, scanner := testServerGreeted(t)
	defer s.Close()
	addr := c.RemoteAddr().String()
	// QUIT, then commands the server must never run: had they reached the
	// next connection, its EHLO would get a reply to MAIL.
	io.WriteString(c, "QUIT\r\nMAIL FROM:<leak@example.org>\r\nRCPT TO:<x@example.org>\r\n")
	scanner.Scan()
	if !strings.HasPrefix(scanner.Text(), "221 ") {
		t.Fatalf("QUIT: %q", scanner.Text())
	}
	c.Close()
	for i := 0; i < 3; i++ {
		c2, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c2.SetDeadline(time.Now().Add(5 * time.Second))
		r := bufio.NewReader(c2)
		greet, _ := r.ReadString('\n')
		if !strings.HasPrefix(greet, "220 ") {
			t.Fatalf("connection %d greeting: %q", i, greet)
		}
		io.WriteString(c2, "NOOP\r\n")
		reply, _ := r.ReadString('\n')
		if !strings.HasPrefix(reply, "250 ") {
			t.Fatalf("connection %d: NOOP answered %q (input of an earlier connection?)", i, reply)
		}
		io.WriteString(c2, "QUIT\r\nNOOP\r\n")
		r.ReadString('\n')
		c2.Close()
	}
}
