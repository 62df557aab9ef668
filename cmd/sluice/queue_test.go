package main

import (
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sluicemail/sluice/queue"
)

// nextHop is a real SMTP server on a fixed loopback port, started and
// stopped by the test: the relay's smarthost, down until it is started.
type nextHop struct {
	addr string
	mu   sync.Mutex
	subj []string // Subject of each message received
	srv  *smtp.Server
}

// freePort returns a loopback address nobody listens on.
func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (h *nextHop) start(t *testing.T) {
	t.Helper()
	h.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &hopSession{h: h}, nil }))
	h.srv.Domain = "hop.test"
	ln, err := net.Listen("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	go h.srv.Serve(ln)
	t.Cleanup(func() { h.srv.Close() })
}

func (h *nextHop) stop() { h.srv.Close() }

func (h *nextHop) received() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.subj...)
}

// waitFor waits until the hop has received exactly want (in any order).
func (h *nextHop) waitFor(t *testing.T, what string, want ...string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got := h.received()
		if sameSet(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the next hop received %q, want %q", what, got, want)
		}
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, s := range a {
		seen[s]++
	}
	for _, s := range b {
		if seen[s]--; seen[s] < 0 {
			return false
		}
	}
	return true
}

type hopSession struct{ h *nextHop }

func (s *hopSession) Reset()                               {}
func (s *hopSession) Logout() error                        { return nil }
func (s *hopSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *hopSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *hopSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m := regexp.MustCompile(`(?m)^Subject: (.*?)\r?$`).FindSubmatch(b)
	s.h.mu.Lock()
	if m != nil {
		s.h.subj = append(s.h.subj, string(m[1]))
	} else {
		s.h.subj = append(s.h.subj, "(no subject)")
	}
	s.h.mu.Unlock()
	return nil
}

// sendTo sends one message to several recipients and returns its id.
func sendTo(t *testing.T, addr, from string, rcpts []string, subject string) {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(from, nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			t.Fatal(err)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "From: "+from+"\r\nTo: "+strings.Join(rcpts, ", ")+"\r\nSubject: "+subject+"\r\n\r\nThe body of "+subject+".\r\n")
	if err := w.Close(); err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
}

// TestQueueCommands runs a relay whose smarthost is down, so that messages
// wait with a last error, and works on its queue with `sluice queue`
// through the running relay and, stopped, directly: list and show say
// what waits and why, retry makes the next attempt now (the retry table
// says an hour), delete removes without a bounce, ALL acts on the whole
// queue, an unknown id exits 1.
func TestQueueCommands(t *testing.T) {
	bin := buildSluice(t)
	etc := t.TempDir()
	os.MkdirAll(filepath.Join(etc, "rules"), 0o755)
	os.WriteFile(filepath.Join(etc, "rules", "rules.yaml"), []byte("rules:\n  - review: 'subject contains \"[review]\" => hold \"held for review\"'\n"), 0o644)
	hop := &nextHop{addr: freePort(t)}
	cfg := filepath.Join(etc, "sluice.yaml")
	os.WriteFile(cfg, []byte("listen: [{addr: '127.0.0.1:0'}]\nstate_dir: state\nrules_dir: rules\n"+
		"delivery: {mode: smarthost, smarthost: {addr: '"+hop.addr+"', tls: none}, retry: [1h], rescan_interval: 1h}\n"), 0o644)
	state := filepath.Join(etc, "state")
	ops := t.TempDir()
	q := func(args ...string) (int, string, string) {
		return sluiceIn(t, bin, ops, []string{"SLUICE_CONFIG=" + cfg}, append([]string{"queue"}, args...)...)
	}
	via := "state: " + state + " (via the running relay)\n"
	direct := "state: " + state + " (no relay running: opened directly)\n"
	queued := func(what string) map[string]*queue.Envelope {
		t.Helper()
		code, out, errs := q("list", "--json")
		var envs []*queue.Envelope
		if err := json.Unmarshal([]byte(out), &envs); code != 0 || err != nil {
			t.Fatalf("%s: queue list --json: exit %d %v\n%s%s", what, code, err, out, errs)
		}
		bySubject := map[string]*queue.Envelope{}
		for _, e := range envs {
			bySubject[e.Rcpts[0].Addr[:strings.Index(e.Rcpts[0].Addr, "@")]] = e
		}
		return bySubject
	}

	relay := startServe(t, bin, t.TempDir(), nil, "--config", cfg)
	for _, s := range []string{"a", "b", "c", "d", "e"} {
		rcpts := []string{s + "@example.org"}
		if s == "a" {
			rcpts = append(rcpts, "a2@example.org")
		}
		sendTo(t, relay.addr, "app@example.com", rcpts, "msg "+s)
	}
	// Each gets its first attempt at once, which fails: the hop is down.
	var envs map[string]*queue.Envelope
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		envs = queued("first attempts")
		n := 0
		for _, e := range envs {
			if e.Attempts == 1 {
				n++
			}
		}
		if n == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("5 messages with one attempt each not seen: %d", n)
		}
	}
	id := func(s string) string { return envs[s].ID }

	code, out, errs := q("list")
	if code != 0 || errs != via {
		t.Fatalf("queue list: exit %d\n%s%s", code, out, errs)
	}
	for _, want := range []string{
		id("a") + "  age ", "bytes  1 attempt  next in ", "from <app@example.com>",
		"    pending   <a@example.org>  ", "    pending   <a2@example.org>  ",
		"connection refused", "5 messages waiting, 6 recipients pending\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("queue list lacks %q:\n%s", want, out)
		}
	}
	if code, out, _ := q("list", "--count"); code != 0 || out != "5\n" {
		t.Errorf("queue list --count: exit %d %q", code, out)
	}

	code, out, _ = q("show", id("b"))
	for _, want := range []string{"id:       " + id("b"), "from:     <app@example.com>", "attempts: 1\n", "next:     in ",
		"to:       <b@example.org> pending", "connection refused", "\nSubject: msg b\r\n"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("queue show lacks %q: exit %d\n%s", want, code, out)
		}
	}
	if strings.Contains(out, "The body of") {
		t.Errorf("queue show without --body printed the body:\n%s", out)
	}
	if code, out, _ := q("show", id("b"), "--body"); code != 0 || !strings.Contains(out, "The body of msg b.") {
		t.Errorf("queue show --body: exit %d\n%s", code, out)
	}

	const nope = "01NOSUCHMESSAGE0000000000X"
	for _, verb := range []string{"show", "retry", "delete"} {
		code, out, errs := q(verb, nope)
		if code != 1 || !strings.Contains(errs, nope+": no such message") {
			t.Errorf("queue %s of an unknown id: exit %d, want 1\n%s%s", verb, code, out, errs)
		}
	}
	// A held message is not in the queue: the error says where it is.
	sendTo(t, relay.addr, "app@example.com", []string{"h@example.org"}, "[review] h")
	_, out, _ = sluiceIn(t, bin, ops, []string{"SLUICE_CONFIG=" + cfg}, "hold", "list")
	held := regexp.MustCompile(`(?m)^([0-9A-Z]{26}) `).FindStringSubmatch(out)
	if held == nil {
		t.Fatalf("hold list: %q", out)
	}
	if code, _, errs := q("retry", held[1]); code != 1 || !strings.Contains(errs, held[1]+": no such message in the queue: it is in the holding area") {
		t.Errorf("queue retry of a held message: exit %d %q", code, errs)
	}
	// An unknown id among known ones: the known one is acted on, exit 1.
	code, out, errs = q("delete", id("a"), nope)
	if code != 1 || out != id("a")+" deleted (no bounce sent)\n" || !strings.Contains(errs, nope+": no such message") {
		t.Errorf("queue delete: exit %d\n%s%s", code, out, errs)
	}
	if code, out, _ := q("list", "--count"); code != 0 || out != "4\n" {
		t.Errorf("after delete: queue list --count: %q", out)
	}

	// The hop is back up: a retry delivers at once, not in an hour.
	hop.start(t)
	code, out, _ = q("retry", id("b"))
	if code != 0 || out != id("b")+": next attempt now\n" {
		t.Errorf("queue retry: exit %d %q", code, out)
	}
	hop.waitFor(t, "retry of b", "msg b")
	for deadline := time.Now().Add(5 * time.Second); len(queued("after retry")) != 3; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("b still queued after its delivery")
		}
	}

	// Stopped: the commands open the spool. A retry is for when the relay starts.
	relay.stop(t)
	code, out, errs = q("list")
	if code != 0 || errs != direct || !strings.Contains(out, "3 messages waiting, 3 recipients pending") || !strings.Contains(out, id("c")) {
		t.Errorf("queue list, relay stopped: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs := q("delete", "--bounce", id("c")); code != 1 || out != "" || !strings.Contains(errs, "--bounce needs the running relay") {
		t.Errorf("queue delete --bounce, relay stopped: exit %d %q %q", code, out, errs)
	}
	code, out, _ = q("retry", id("c"))
	if code != 0 || out != id("c")+": next attempt as soon as the relay runs\n" {
		t.Errorf("queue retry, relay stopped: exit %d %q", code, out)
	}
	if e := queued("direct retry")["c"]; time.Since(e.NextAttempt) > time.Minute || time.Until(e.NextAttempt) > 0 {
		t.Errorf("retry while stopped: next attempt %v", e.NextAttempt)
	}
	if code, out, errs := q("delete", id("d")); code != 0 || out != id("d")+" deleted (no bounce sent)\n" || errs != direct {
		t.Errorf("queue delete, relay stopped: exit %d %q %q", code, out, errs)
	}
	if code, _, errs := q("retry", nope); code != 1 || !strings.Contains(errs, "no such message") {
		t.Errorf("queue retry of an unknown id, relay stopped: exit %d %q", code, errs)
	}

	// Started again: c goes at once, e waits for its hour until retry ALL.
	relay = startServe(t, bin, t.TempDir(), nil, "--config", cfg)
	hop.waitFor(t, "c at start", "msg b", "msg c")
	if code, out, _ := q("list", "--count"); code != 0 || out != "1\n" {
		t.Errorf("after restart: queue list --count: %q", out)
	}
	code, out, errs = q("retry", "ALL")
	if code != 0 || out != id("e")+": next attempt now\n" || errs != via {
		t.Errorf("queue retry ALL: exit %d %q %q", code, out, errs)
	}
	hop.waitFor(t, "retry ALL", "msg b", "msg c", "msg e")

	// delete ALL, with the hop down again so that messages wait.
	hop.stop()
	sendTo(t, relay.addr, "app@example.com", []string{"f@example.org"}, "msg f")
	sendTo(t, relay.addr, "app@example.com", []string{"g@example.org"}, "msg g")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		envs = queued("f and g")
		if len(envs) == 2 && envs["f"].Attempts == 1 && envs["g"].Attempts == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("f and g not attempted: %v", envs)
		}
	}
	// f with a bounce to its sender, which waits too (the hop is down).
	code, out, _ = q("delete", "--bounce", id("f"))
	if code != 0 || out != id("f")+" deleted, its sender sent a bounce\n" {
		t.Errorf("queue delete --bounce: exit %d %q", code, out)
	}
	envs = queued("the bounce")
	if b := envs["app"]; len(envs) != 2 || b == nil || !b.Bounce || b.From != "" {
		t.Fatalf("after delete --bounce, want g and the bounce to app@example.com queued: %v", envs)
	}
	code, out, _ = q("show", id("app"), "--body")
	if code != 0 || !strings.Contains(out, "deleted from the queue by the operator; last error: ") || !strings.Contains(out, "Subject: msg f") {
		t.Errorf("the bounce:\n%s", out)
	}
	// The bounce itself is never bounced.
	if code, out, _ := q("delete", "--bounce", id("app")); code != 0 || !strings.HasPrefix(out, id("app")+" deleted (no bounce: the null sender") {
		t.Errorf("queue delete --bounce of a bounce: exit %d %q", code, out)
	}
	sendTo(t, relay.addr, "app@example.com", []string{"i@example.org"}, "msg i")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if envs = queued("i"); len(envs) == 2 && envs["i"] != nil && envs["i"].Attempts == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("i not attempted: %v", envs)
		}
	}
	code, out, _ = q("delete", "ALL")
	if code != 0 || !sameSet(strings.Split(strings.TrimSpace(out), "\n"), []string{id("g") + " deleted (no bounce sent)", id("i") + " deleted (no bounce sent)"}) {
		t.Errorf("queue delete ALL: exit %d %q", code, out)
	}
	if code, out, _ := q("list"); code != 0 || out != "0 messages waiting, 0 recipients pending\n" {
		t.Errorf("after delete ALL: %q", out)
	}
	if code, out, _ := q("delete", "ALL"); code != 0 || out != "the queue is empty\n" {
		t.Errorf("delete ALL of an empty queue: exit %d %q", code, out)
	}
	relay.stop(t)
	if got := hop.received(); !sameSet(got, []string{"msg b", "msg c", "msg e"}) {
		t.Errorf("the next hop received %q: deleted messages went out, or some twice", got)
	}
}

func TestAge(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"}, {45 * time.Second, "45s"}, {12*time.Minute + 5*time.Second, "12m05s"},
		{3*time.Hour + 5*time.Minute, "3h05m"}, {47 * time.Hour, "47h00m"}, {52 * time.Hour, "2d04h"},
	} {
		if got := age(c.d); got != c.want {
			t.Errorf("age(%v) = %q, want %q", c.d, got, c.want)
		}
	}
}

// TestQueueWithoutState: without a relay state, sluice queue says so,
// exits 1 and creates nothing (SPEC 5).
func TestQueueWithoutState(t *testing.T) {
	bin := buildSluice(t)
	dir := t.TempDir()
	for _, args := range [][]string{{"queue", "list"}, {"queue", "retry", "ALL"}, {"queue", "delete", "01M84V542CRSTKW97K03G6TVAY"}} {
		code, out, errs := sluiceIn(t, bin, dir, nil, args...)
		if code != 1 || out != "" || !strings.Contains(errs, "no relay state at "+filepath.Join(dir, "sluice-state")) {
			t.Errorf("%v: exit %d %q %q", args, code, out, errs)
		}
	}
	if e := entries(t, dir); len(e) != 0 {
		t.Errorf("sluice queue created %v", e)
	}
}
