package server

import (
	"bufio"
	"bytes"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"
)

var replyLine = regexp.MustCompile(`^[2-5][0-9][0-9][ -]`)

// FuzzSession feeds random command and data streams to a relay (go-smtp
// with sluice's backend, over loopback) and holds it to what a hostile
// client must never get: a panic (go-smtp answers one with "Internal server
// error"), a malformed reply, a relay that stops serving, or a message
// delivered with a bare CR or LF.
func FuzzSession(f *testing.F) {
	for _, s := range []string{
		"EHLO a.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<box@local.test>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n",
		"EHLO a.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<box@local.test>\r\nBDAT 5\r\nab\r\ncBDAT 0 LAST\r\n",
		"EHLO a.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<box@local.test>\r\nBDAT 100\r\nshort",
		"EHLO a.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<box@local.test>\r\nBDAT 4\r\nab\r\nRSET\r\nMAIL FROM:<a@b.test>\r\n",
		"EHLO a.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<box@local.test>\r\nDATA\r\na\rb\n.\r\r\n.\r\nMAIL FROM:<x@y.test>\r\n",
		"HELO x\r\nMAIL FROM:<\"q u\"@b.test> SMTPUTF8\r\nRCPT TO:<\"a@b\"@local.test>\r\nRCPT TO:<a%b@local.test>\r\nRCPT TO:<v@f.test\x00@local.test>\r\n",
		"EHLO a.test\r\nAUTH PLAIN AGJpbGxpbmcAeA==\r\nAUTH LOGIN\r\n*\r\nNOOP\r\nVRFY x\r\n",
		"EHLO a.test\r\nSTARTTLS\r\n\x16\x03\x01\x00\x05hello",
		"EHLO a.test\r\nMAIL FROM:<a@b.test> SIZE=999999999999\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster@local.test> NOTIFY=NEVER\r\nDATA\r\n" + strings.Repeat("x", 3000) + "\r\n.\r\n",
	} {
		f.Add([]byte(s))
	}
	k := newSink(f)
	cfg := testConfig(f, k)
	cfg.Limits.CommandTimeout = Duration(time.Second)
	cfg.Limits.DataTimeout = Duration(time.Second)
	cfg.Limits.MaxMessageBytes = 64 << 10
	cfg.Limits.MaxConnectionsPerIP = 1000
	r := startRelayWith(f, cfg, noLimitRules, Options{Log: slog.New(slog.DiscardHandler)})
	addr := r.addrs["plain"]
	seen := 0
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 128<<10 {
			in = in[:128<<10]
		}
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			conn.Write(in)
			conn.(*net.TCPConn).CloseWrite()
		}()
		sc := bufio.NewScanner(conn)
		sc.Buffer(make([]byte, 4096), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if strings.Contains(line, "Internal server error") {
				t.Fatalf("the relay panicked on %q", in)
			}
			if !replyLine.MatchString(line) {
				t.Fatalf("malformed reply %q to %q", line, in)
			}
		}
		// The relay still serves.
		c := dialRaw(t, addr)
		c.must("EHLO alive.test", 250)
		c.must("QUIT", 221)
		for _, m := range k.messages()[seen:] {
			rest := bytes.ReplaceAll(m.Data, []byte("\r\n"), nil)
			if bytes.IndexByte(rest, '\r') >= 0 || bytes.IndexByte(rest, '\n') >= 0 {
				t.Fatalf("a bare CR or LF was delivered: %q", m.Data)
			}
			seen++
		}
	})
}
