package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicemail/sluice/queue"
)

// rawClient speaks SMTP byte for byte, for what a well-behaved client
// library will not send.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawClient{t: t, conn: conn, br: bufio.NewReader(conn)}
	if code, text := c.reply(); code != 220 {
		t.Fatalf("greeting: %d %s", code, text)
	}
	return c
}

// reply reads one (possibly multi-line) reply; code 0 when the connection
// ends first.
func (c *rawClient) reply() (int, string) {
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var text []string
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			return 0, strings.Join(append(text, line), "\n")
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 4 {
			return 0, line
		}
		text = append(text, line[4:])
		if line[3] != '-' {
			var code int
			fmt.Sscanf(line[:3], "%d", &code)
			return code, strings.Join(text, "\n")
		}
	}
}

func (c *rawClient) send(s string) {
	c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c.conn, s)
}

// cmd sends one command line and reads its reply.
func (c *rawClient) cmd(line string) (int, string) {
	c.send(line + "\r\n")
	return c.reply()
}

func (c *rawClient) must(line string, want int) string {
	c.t.Helper()
	code, text := c.cmd(line)
	if code != want {
		c.t.Fatalf("%q: got %d %s, want %d", line, code, text, want)
	}
	return text
}

// closed reports whether the server has closed the connection (reading
// gives EOF or a reset within d).
func (c *rawClient) closed(d time.Duration) bool {
	c.conn.SetReadDeadline(time.Now().Add(d))
	for {
		_, err := c.br.ReadByte()
		if err == nil {
			continue // the rest of a reply
		}
		var ne net.Error
		return !(errors.As(err, &ne) && ne.Timeout())
	}
}

// noLimitRules has no rate limit, for tests that send many messages.
const noLimitRules = `
rules:
  - caps: 'subject_caps => +7'
`

var queuedAs = regexp.MustCompile(`queued as (\S+)`)

// TestBDATAbortsShareNothing aborts BDAT transfers in the three ways (the
// socket closed mid-chunk, the size limit exceeded then QUIT, RSET) while
// other sessions send whole messages: under -race, a transaction reset by
// an aborted transfer's goroutine while another session has it shows up
// here, and every message that got a 250 must arrive intact.
func TestBDATAbortsShareNothing(t *testing.T) {
	k := newSink(t)
	cfg := testConfig(t, k)
	cfg.Limits.MaxMessageBytes = 4000
	r := startRelay(t, cfg, noLimitRules)
	addr := r.addrs["plain"]
	const rounds = 15
	var wg sync.WaitGroup
	var mu sync.Mutex
	sent := map[string]string{} // queue id -> subject
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				c := dialRaw(t, addr)
				c.must("EHLO abort.test", 250)
				c.must("MAIL FROM:<a@sender.test>", 250)
				c.must("RCPT TO:<box@local.test>", 250)
				switch (g + i) % 4 {
				case 0: // the socket closed mid-chunk
					c.send("BDAT 1000\r\nSubject: cut\r\n\r\npart")
					c.conn.Close()
					continue
				case 1: // over the size limit, then QUIT
					c.send("BDAT 3000\r\n" + strings.Repeat("x", 2998) + "\r\n")
					if code, _ := c.reply(); code != 250 {
						t.Errorf("first chunk: %d", code)
					}
					c.send("BDAT 3000\r\n" + strings.Repeat("y", 2998) + "\r\n")
					if code, _ := c.reply(); code != 552 {
						t.Errorf("chunk over the limit: %d", code)
					}
					c.must("QUIT", 221)
					continue
				case 2: // RSET mid-transfer, then a whole message by BDAT
					part := "Subject: dropped\r\n\r\nx"
					c.send(fmt.Sprintf("BDAT %d\r\n%s", len(part), part))
					if code, _ := c.reply(); code != 250 {
						t.Errorf("chunk: %d", code)
					}
					c.must("RSET", 250)
					c.must("MAIL FROM:<a@sender.test>", 250)
					c.must("RCPT TO:<box@local.test>", 250)
				}
				subj := fmt.Sprintf("kept %d-%d", g, i)
				body := "Subject: " + subj + "\r\nMessage-ID: <" + strings.ReplaceAll(subj, " ", ".") + "@t>\r\n\r\nwhole\r\n"
				c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(body), body))
				code, text := c.reply()
				if code != 250 {
					t.Errorf("%s: %d %s", subj, code, text)
					continue
				}
				m := queuedAs.FindStringSubmatch(text)
				if m == nil {
					t.Errorf("no queue id in %q", text)
					continue
				}
				mu.Lock()
				if prev, dup := sent[m[1]]; dup {
					t.Errorf("queue id %s given to %q and %q", m[1], prev, subj)
				}
				sent[m[1]] = subj
				mu.Unlock()
				c.must("QUIT", 221)
			}
		}(g)
	}
	wg.Wait()
	msgs := k.wait(t, len(sent), 20*time.Second)
	time.Sleep(300 * time.Millisecond) // anything extra would arrive now
	msgs = k.messages()
	if len(msgs) != len(sent) {
		t.Errorf("sink got %d messages, %d were accepted", len(msgs), len(sent))
	}
	for _, m := range msgs {
		if !bytes.Contains(m.Data, []byte("Subject: kept ")) || !bytes.HasSuffix(m.Data, []byte("\r\nwhole\r\n")) {
			t.Errorf("a message not sent whole arrived: %q", m.Data)
		}
	}
}

// TestDataTimeoutEndsTheSession: a client that stalls in DATA past
// data_timeout is cut off with 421, and what it sends afterwards (a body
// holding MAIL, RCPT and DATA) is never read as commands.
func TestDataTimeoutEndsTheSession(t *testing.T) {
	k := newSink(t)
	cfg := testConfig(t, k)
	cfg.Limits.CommandTimeout = Duration(2 * time.Second)
	cfg.Limits.DataTimeout = Duration(400 * time.Millisecond)
	r := startRelay(t, cfg, testRules)
	c := dialRaw(t, r.addrs["plain"])
	c.must("EHLO slow.test", 250)
	c.must("MAIL FROM:<a@sender.test>", 250)
	c.must("RCPT TO:<box@local.test>", 250)
	c.must("DATA", 354)
	c.send("Subject: first\r\n\r\nhalf a body")
	code, text := c.reply()
	if code != 421 || !strings.HasPrefix(text, "4.4.2") {
		t.Errorf("stall in DATA: %d %s, want 421 4.4.2", code, text)
	}
	c.send("\r\n.\r\nMAIL FROM:<smuggler@sender.test>\r\nRCPT TO:<box@local.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n")
	if !c.closed(2 * time.Second) {
		t.Error("the session went on after a DATA timeout")
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(k.messages()); n != 0 {
		t.Errorf("%d messages delivered", n)
	}
	if ids, _ := r.srv.spool.List(queue.AreaQueue); len(ids) != 0 {
		t.Errorf("spooled %v", ids)
	}
}

// TestTimeoutNeverRunsAPartialLine: a command cut off by the command
// timeout is not carried out.
func TestTimeoutNeverRunsAPartialLine(t *testing.T) {
	k := newSink(t)
	cfg := testConfig(t, k)
	cfg.Limits.CommandTimeout = Duration(300 * time.Millisecond)
	r := startRelay(t, cfg, testRules)
	for _, partial := range []string{"MAIL FROM:<partial@x", "MAIL FROM:<partial@sender.test>"} {
		c := dialRaw(t, r.addrs["plain"])
		c.must("EHLO slow.test", 250)
		c.send(partial)
		code, text := c.reply()
		if code == 250 || code != 421 {
			t.Errorf("%q then a timeout: %d %s, want 421", partial, code, text)
		}
		if !c.closed(2 * time.Second) {
			t.Errorf("%q: still open after the timeout", partial)
		}
	}
}

// TestSlowDripIsCutAtTheTimeout: a client sending one byte at a time is cut
// at the configured timeout, in a command, in DATA, in the TLS handshake
// (implicit and STARTTLS), not after many more bytes.
func TestSlowDripIsCutAtTheTimeout(t *testing.T) {
	k := newSink(t)
	cfg := testConfig(t, k)
	cfg.Limits.CommandTimeout = Duration(400 * time.Millisecond)
	cfg.Limits.DataTimeout = Duration(400 * time.Millisecond)
	r := startRelay(t, cfg, testRules)
	// drip sends s a byte every 50 ms and returns how many bytes went out
	// before the relay closed the connection (-1: it never did).
	drip := func(conn net.Conn, s string) int {
		done := make(chan struct{})
		go func() {
			defer close(done)
			io.Copy(io.Discard, conn)
		}()
		for i := 0; i < len(s); i++ {
			select {
			case <-done:
				return i
			case <-time.After(50 * time.Millisecond):
			}
			conn.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := conn.Write([]byte{s[i]}); err != nil {
				return i
			}
		}
		select {
		case <-done:
			return len(s)
		case <-time.After(2 * time.Second):
			return -1
		}
	}
	long := strings.Repeat("z", 200) // 10 s at a byte per 50 ms
	check := func(what string, conn net.Conn, s string) {
		t.Helper()
		n := drip(conn, s)
		// 400 ms of 50 ms drips is 8 bytes (a slow machine sends fewer,
		// never more); one more timeout would be 16.
		if n < 0 || n > 14 {
			t.Errorf("%s: %d of %d bytes went in before the cut (-1: never cut)", what, n, len(s))
		}
	}
	c := dialRaw(t, r.addrs["plain"])
	check("command", c.conn, "EHLO "+long+"\r\n")

	c = dialRaw(t, r.addrs["plain"])
	c.must("EHLO slow.test", 250)
	c.must("MAIL FROM:<a@sender.test>", 250)
	c.must("RCPT TO:<box@local.test>", 250)
	c.must("DATA", 354)
	check("DATA", c.conn, "Subject: drip\r\n\r\n"+long)

	conn, err := net.Dial("tcp", r.addrs["tls"])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	check("implicit TLS handshake", conn, "\x16\x03\x01\x02\x00"+long)

	c = dialRaw(t, r.addrs["submission"])
	c.must("EHLO slow.test", 250)
	c.must("STARTTLS", 220)
	check("STARTTLS handshake", c.conn, "\x16\x03\x01\x02\x00"+long)
}

// TestBareCRAndLFNeverReachTheNextHop: RFC 5321 2.3.8; sluice makes every
// bare CR and bare LF in DATA a CRLF before spooling.
func TestBareCRAndLFNeverReachTheNextHop(t *testing.T) {
	k := newSink(t)
	r := startRelay(t, testConfig(t, k), noLimitRules)
	bodies := []string{
		"a\rb\r\n",
		"a\nb\r\n",
		"line\r.\r\nafter\r\n",
		"line\n.\nMAIL FROM:<x@y.test>\r\n",
		"line\r\n.\rRCPT TO:<z@y.test>\r\n",
		"\r\r\n",
		"ends with CR\r",
		"x\r\n..\r\r\n",
		"mixed\r\n\n\r\r\n",
	}
	for i, b := range bodies {
		// go-smtp's client writes LF as CRLF: the raw socket sends the
		// bytes as they are.
		rc := dialRaw(t, r.addrs["plain"])
		rc.must("EHLO cr.test", 250)
		rc.must("MAIL FROM:<a@sender.test>", 250)
		rc.must("RCPT TO:<box@local.test>", 250)
		rc.must("DATA", 354)
		data := fmt.Sprintf("Subject: bare %d\r\nX-Bare: a\rb\r\n\r\n%s", i, b)
		if !strings.HasSuffix(data, "\r\n") {
			data += "\r\n"
		}
		rc.send(data + ".\r\n")
		if code, text := rc.reply(); code != 250 {
			t.Fatalf("body %d: %d %s", i, code, text)
		}
		rc.must("QUIT", 221)
	}
	msgs := k.wait(t, len(bodies), 10*time.Second)
	for _, m := range msgs {
		rest := bytes.ReplaceAll(m.Data, []byte("\r\n"), nil)
		if bytes.IndexByte(rest, '\r') >= 0 || bytes.IndexByte(rest, '\n') >= 0 {
			t.Errorf("a bare CR or LF reached the next hop: %q", m.Data)
		}
	}
}

// TestLongLinesAreAccepted: a newsletter with a 4,416-byte HTML line (and
// one of 100 KB) is accepted, and goes out in lines of at most 998 octets
// with its text intact.
func TestLongLinesAreAccepted(t *testing.T) {
	k := newSink(t)
	r := startRelay(t, testConfig(t, k), noLimitRules)
	html := "<td>" + strings.Repeat(`<a href="https://click.example/t?u=abc">Offer</a> `, 88) + "</td>"
	if len(html) < 4400 {
		t.Fatalf("line of %d", len(html))
	}
	huge := strings.Repeat("Q", 100<<10)
	for _, line := range []string{html, huge} {
		c := r.dial(t, "plain")
		data := "From: news@sender.test\r\nTo: box@local.test\r\nSubject: long\r\nContent-Type: text/html\r\n\r\n" + line + "\r\n"
		if _, err := send(c, "news@sender.test", []string{"box@local.test"}, data); err != nil {
			t.Fatalf("a %d-byte line: %v", len(line), err)
		}
	}
	msgs := k.wait(t, 2, 10*time.Second)
	for i, m := range msgs {
		for _, l := range bytes.Split(m.Data, []byte("\r\n")) {
			if len(l) > 998 {
				t.Errorf("message %d went out with a line of %d", i, len(l))
			}
		}
		_, body, _ := bytes.Cut(m.Data, []byte("\r\n\r\n"))
		want := []string{html, huge}[i]
		if got := string(bytes.ReplaceAll(body, []byte("\r\n"), nil)); got != want {
			t.Errorf("message %d: body changed beyond line breaks (%d vs %d bytes)", i, len(got), len(want))
		}
	}
}

// TestRefusalFloodIsCut: pipelined refused RCPTs are answered up to the
// hard error limit, then 421 and the connection closes, so a flood costs
// a bounded number of replies, log lines and records.
func TestRefusalFloodIsCut(t *testing.T) {
	k := newSink(t)
	cfg := testConfig(t, k)
	cfg.Limits.SoftErrorLimit = 3
	cfg.Limits.HardErrorLimit = 6
	cfg.Limits.ErrorSleep = Duration(20 * time.Millisecond)
	r := startRelay(t, cfg, testRules)
	c := dialRaw(t, r.addrs["plain"])
	c.must("EHLO flood.test", 250)
	c.must("MAIL FROM:<a@sender.test>", 250)
	var b strings.Builder
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&b, "RCPT TO:<victim%d@foreign.test>\r\n", i)
	}
	go c.send(b.String())
	refused := 0
	for {
		code, text := c.reply()
		if code == 554 {
			refused++
			continue
		}
		if code != 421 || !strings.HasPrefix(text, "4.7.0") {
			t.Errorf("after %d refusals: %d %s, want 421 4.7.0", refused, code, text)
		}
		break
	}
	if refused != 5 {
		t.Errorf("%d refusals answered before the cut, want 5", refused)
	}
	if !c.closed(2 * time.Second) {
		t.Error("connection still open")
	}
	// A client that delivers starts again from zero.
	c = dialRaw(t, r.addrs["plain"])
	c.must("EHLO ok.test", 250)
	c.must("MAIL FROM:<a@sender.test>", 250)
	for i := 0; i < 4; i++ {
		c.must(fmt.Sprintf("RCPT TO:<v%d@foreign.test>", i), 554)
	}
	c.must("RCPT TO:<box@local.test>", 250)
	c.must("DATA", 354)
	c.send("Subject: fine\r\n\r\nbody\r\n.\r\n")
	if code, _ := c.reply(); code != 250 {
		t.Fatalf("end of data: %d", code)
	}
	c.must("MAIL FROM:<a@sender.test>", 250)
	for i := 0; i < 5; i++ {
		c.must(fmt.Sprintf("RCPT TO:<w%d@foreign.test>", i), 554)
	}
}

// TestEnvelopeAddresses: control characters and invalid UTF-8 are refused
// at the command from every client; what is accepted goes out as the
// same bytes on every attempt, quoted local parts still quoted.
func TestEnvelopeAddresses(t *testing.T) {
	k := newSink(t)
	r := startRelay(t, testConfig(t, k), testRules)
	sub := func() *rawClient {
		conn, err := tls.Dial("tcp", r.addrs["tls"], clientTLS)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		c := &rawClient{t: t, conn: conn, br: bufio.NewReader(conn)}
		c.reply()
		c.must("EHLO auth.test", 250)
		c.must("AUTH PLAIN "+plainToken("ops"), 235)
		return c
	}
	plain := func() *rawClient {
		c := dialRaw(t, r.addrs["plain"])
		c.must("EHLO anon.test", 250)
		return c
	}
	for _, client := range []func() *rawClient{plain, sub} {
		c := client()
		for _, from := range []string{"a\x00b@sender.test", "a\rb@sender.test", "caf\xe9@sender.test"} {
			code, text := c.cmd("MAIL FROM:<" + from + "> SMTPUTF8")
			if code != 501 && code != 553 {
				t.Errorf("MAIL FROM %q: %d %s", from, code, text)
			}
		}
		c.must("MAIL FROM:<a@sender.test> SMTPUTF8", 250)
		for _, to := range []string{"victim@foreign.test\x00@local.test", "box\r@local.test", "b\xffox@local.test"} {
			code, text := c.cmd("RCPT TO:<" + to + ">")
			if code != 501 && code != 553 {
				t.Errorf("RCPT TO %q: %d %s", to, code, text)
			}
			if code == 501 && !strings.HasPrefix(text, "5.1.3") {
				t.Errorf("RCPT TO %q: %s, want 5.1.3", to, text)
			}
		}
		c.must("RSET", 250)
	}
	// Sender routing through a local domain, from a client that may not
	// relay, is relay access.
	c := plain()
	c.must("MAIL FROM:<a@sender.test>", 250)
	for _, to := range []string{"user%foreign.test@local.test", "foreign.test!user@local.test", `"user@foreign.test"@local.test`, `"user%foreign.test"@local.test`} {
		if code, text := c.cmd("RCPT TO:<" + to + ">"); code != 554 {
			t.Errorf("RCPT TO %s from a stranger: %d %s", to, code, text)
		}
	}
	// A quoted local part is a mailbox of its own: kept quoted on the
	// wire (the sink's parser would refuse it unquoted), to the sink.
	c.must(`RCPT TO:<"john smith"@local.test>`, 250)
	c.must(`RCPT TO:<"box"@local.test>`, 250) // the same as box@local.test
	c.must("DATA", 354)
	c.send("Subject: quoted\r\n\r\nhi\r\n.\r\n")
	if code, text := c.reply(); code != 250 {
		t.Fatalf("DATA: %d %s", code, text)
	}
	msgs := k.wait(t, 1, 10*time.Second)
	got := strings.Join(msgs[0].Rcpts, ",")
	if got != "john smith@local.test,box@local.test" {
		t.Errorf("sink got RCPTs %q", got)
	}
}

func plainToken(user string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + testPassword))
}

// TestClientCannotPoseAsTheRelay: Authentication-Results naming the
// relay and X-Spam-* fields from the client never reach the next hop
// beside the relay's own (RFC 8601 5).
func TestClientCannotPoseAsTheRelay(t *testing.T) {
	k := newSink(t)
	r := startRelay(t, testConfig(t, k), testRules)
	c := r.dial(t, "plain")
	data := "Authentication-Results: relay.test; spf=pass smtp.mailfrom=bank.test;\r\n\tdkim=pass header.d=bank.test\r\n" +
		"Authentication-Results: mx.upstream.test; spf=fail\r\n" +
		"X-Spam-Flag: NO\r\nX-Spam-Score: -100\r\nX-Spam-Status: No, score=-100\r\n" +
		"From: ceo@bank.test\r\nTo: box@local.test\r\nSubject: trust me\r\n\r\nhi\r\n"
	if _, err := send(c, "ceo@bank.test", []string{"box@local.test"}, data); err != nil {
		t.Fatal(err)
	}
	m := k.wait(t, 1, 10*time.Second)[0]
	head, _, _ := strings.Cut(string(m.Data), "\r\n\r\n")
	if n := strings.Count(head, "Authentication-Results: relay.test;"); n != 1 {
		t.Errorf("%d Authentication-Results for relay.test (want only the relay's own):\n%s", n, head)
	}
	if strings.Contains(head, "spf=pass smtp.mailfrom=bank.test") || strings.Contains(strings.ToLower(head), "x-spam-score: -100") || strings.Contains(head, "X-Spam-Flag: NO") {
		t.Errorf("the client's results reached the next hop:\n%s", head)
	}
	if !strings.Contains(head, "Authentication-Results: mx.upstream.test; spf=fail") {
		t.Errorf("another host's results were removed:\n%s", head)
	}
}

// TestShutdownEndsSessionAfterItsTransaction: a transaction under way when
// Shutdown begins finishes with its 250, and the session then ends with
// 421 instead of holding Shutdown for a whole command timeout (5 min by
// default: a test that shut down just after a message, before go-smtp had
// reset the session, once stalled make test for 300 s).
func TestShutdownEndsSessionAfterItsTransaction(t *testing.T) {
	k := newSink(t)
	cfg := testConfig(t, k)
	r := startRelay(t, cfg, noLimitRules)
	c := dialRaw(t, r.addrs["plain"])
	c.must("EHLO client.test", 250)
	c.must("MAIL FROM:<someone@example.org>", 250)
	c.must("RCPT TO:<box@local.test>", 250)
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() { done <- r.srv.Shutdown(ctx) }()
	for !r.srv.closing.Load() {
		time.Sleep(time.Millisecond)
	}
	c.must("DATA", 354)
	c.send("From: someone@example.org\r\nTo: box@local.test\r\nSubject: last one\r\n\r\nbody\r\n.\r\n")
	if code, text := c.reply(); code != 250 {
		t.Fatalf("end of DATA during shutdown: %d %s, want 250", code, text)
	}
	if code, text := c.cmd("NOOP"); code != 421 && code != 0 {
		t.Errorf("NOOP after the transaction, during shutdown: %d %s, want 421 or the connection closed", code, text)
	}
	if !c.closed(5 * time.Second) {
		t.Error("the session is still open after its transaction, during shutdown")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Shutdown still waits on a session whose transaction ended")
	}
}
