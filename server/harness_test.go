package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"
)

// sink is a real SMTP server on 127.0.0.1 that records what it is sent:
// the next hop of a relay under test.
type sink struct {
	mu   sync.Mutex
	msgs []sinkMsg
	// answer, if set, decides the reply to each RCPT (nil: accept).
	rcptAnswer func(to string) error
	// dataAnswer, if set, decides the reply at end of DATA.
	dataAnswer func(n int) error
	datas      int
	addr       string
	// authUser/authPass, when set, are required (AUTH PLAIN) before MAIL.
	authUser, authPass string
	authed             []string // users that authenticated
	srv                *smtp.Server
	got                chan struct{}
}

type sinkMsg struct {
	From  string
	Rcpts []string
	Data  []byte
}

func newSink(t testing.TB) *sink {
	t.Helper()
	k := &sink{got: make(chan struct{}, 1)}
	k.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &sinkSession{k: k}, nil }))
	k.srv.Domain = "sink.test"
	k.srv.AllowInsecureAuth = true
	k.srv.ErrorLog = slogPrinter{slog.New(slog.DiscardHandler)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	k.addr = ln.Addr().String()
	go k.srv.Serve(ln)
	t.Cleanup(func() { k.srv.Close() })
	return k
}

func (k *sink) messages() []sinkMsg {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]sinkMsg(nil), k.msgs...)
}

// wait waits until the sink holds n messages.
func (k *sink) wait(t *testing.T, n int, within time.Duration) []sinkMsg {
	t.Helper()
	deadline := time.After(within)
	for {
		if m := k.messages(); len(m) >= n {
			return m
		}
		select {
		case <-k.got:
		case <-deadline:
			t.Fatalf("sink got %d messages, want %d", len(k.messages()), n)
		}
	}
}

type sinkSession struct {
	k     *sink
	from  string
	rcpts []string
	user  string
}

func (s *sinkSession) AuthMechanisms() []string {
	if s.k.authUser == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (s *sinkSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != s.k.authUser || pass != s.k.authPass {
			return smtp.ErrAuthFailed
		}
		s.user = user
		s.k.mu.Lock()
		s.k.authed = append(s.k.authed, user)
		s.k.mu.Unlock()
		return nil
	}), nil
}

func (s *sinkSession) Reset()        { s.from, s.rcpts = "", nil }
func (s *sinkSession) Logout() error { return nil }
func (s *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.k.authUser != "" && s.user == "" {
		return smtp.ErrAuthRequired
	}
	s.from = from
	return nil
}
func (s *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.k.rcptAnswer != nil {
		if err := s.k.rcptAnswer(to); err != nil {
			return err
		}
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}
func (s *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.k.mu.Lock()
	s.k.datas++
	n := s.k.datas
	s.k.mu.Unlock()
	if s.k.dataAnswer != nil {
		if err := s.k.dataAnswer(n); err != nil {
			return err
		}
	}
	s.k.mu.Lock()
	s.k.msgs = append(s.k.msgs, sinkMsg{From: s.from, Rcpts: append([]string(nil), s.rcpts...), Data: b})
	s.k.mu.Unlock()
	select {
	case s.k.got <- struct{}{}:
	default: // a wake-up is pending already
	}
	return nil
}

// relay is a running Server under test.
type relay struct {
	srv   *Server
	addrs map[string]string // mode -> address
	dir   string
	cfg   *Config
}

const testPassword = "correct horse battery staple"

// testHash is a real bcrypt hash at the lowest cost, to keep tests quick.
var testHash = func() string {
	h, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	if err != nil {
		panic(err)
	}
	return string(h)
}()

// testConfig is a relay on 127.0.0.1 with one listener per mode, delivery
// to the sink through it as a smarthost, and two accounts.
func testConfig(t testing.TB, k *sink) *Config {
	dir := t.TempDir()
	c := &Config{
		Hostname: "relay.test",
		Listen: []Listener{
			{Addr: "127.0.0.1:0", Mode: "plain"},
			{Addr: "127.0.0.1:0", Mode: "submission"},
			{Addr: "127.0.0.1:0", Mode: "tls"},
		},
		StateDir: dir,
		// Refusals past the soft error limit wait this long (1 s by
		// default): tests that refuse a lot keep to their time.
		Limits:        Limits{ErrorSleep: Duration(time.Millisecond)},
		RulesDir:      filepath.Join(dir, "rules.d"),
		RelayNetworks: []string{},
		LocalDomains:  []string{"local.test"},
		Delivery: Delivery{Mode: "smarthost", Smarthost: Smarthost{Addr: k.addr, TLS: "none"},
			Retry: []Duration{Duration(200 * time.Millisecond)}},
		Accounts: []Account{
			{Name: "acme", Domains: []string{"acme.test", "acme-mail.test"}, Users: []User{
				{Name: "billing", PasswordHash: testHash, Domains: []string{"acme.test"}, SenderDomains: "assigned"},
				{Name: "ops", PasswordHash: testHash, SenderDomains: "account"},
			}},
			{Name: "frozen", Disabled: true, Domains: []string{"frozen.test"}, Users: []User{
				{Name: "frozen-app", PasswordHash: testHash},
			}},
		},
	}
	return c
}

const testRules = `
thresholds: {reject: 13, hold: 8, tag: 5}
lists:
  role_locals: [noreply, no-reply]
rules:
  - acl: 'authenticated and not domain_allowed => block 550 5.7.1 "[ACL] Blocked"'
  - hourly-limit: 'hourly_sent >= 3 => block 421 4.7.1 "Rate limit: 3 messages per hour"'
  - role: 'in_list("role_locals", local_part(rcpt)) => block 550 5.1.1 "These can''t receive email, so we block them."'
  - review: 'subject contains "[review]" => hold "held for review"'
  - caps: 'subject_caps => +7'
  - spammy: 'lower(subject) contains "viagra" => +8'
  - tagme: 'subject contains "[tag]" => +5'
`

func startRelay(t testing.TB, cfg *Config, rules string) *relay {
	t.Helper()
	return startRelayWith(t, cfg, rules, Options{})
}

func startRelayWith(t testing.TB, cfg *Config, rules string, opts Options) *relay {
	t.Helper()
	if err := os.MkdirAll(cfg.RulesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.RulesDir, "rules.yaml"), []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cfg.finish(); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(testWriter{t}, nil))
	if opts.Log == nil {
		opts.Log = log
	}
	opts.Resolver = noPTR{}
	srv, err := New(cfg, "", opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ls, err := srv.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		sctx, c2 := context.WithTimeout(context.Background(), 5*time.Second)
		defer c2()
		srv.Shutdown(sctx)
	})
	r := &relay{srv: srv, addrs: map[string]string{}, dir: cfg.StateDir, cfg: cfg}
	for _, l := range ls {
		r.addrs[l.Mode] = l.Addr.String()
	}
	return r
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// noPTR answers every PTR lookup with "no such name", without a network.
type noPTR struct{}

func (noPTR) LookupAddr(context.Context, string) ([]string, error) {
	return nil, &net.DNSError{Err: "no such host", IsNotFound: true}
}

var clientTLS = &tls.Config{InsecureSkipVerify: true} // the relay's self-signed certificate

// dial connects a go-smtp client to the relay's listener of mode, with
// STARTTLS on submission and TLS on tls.
func (r *relay) dial(t *testing.T, mode string) *smtp.Client {
	t.Helper()
	var c *smtp.Client
	var err error
	switch mode {
	case "submission":
		c, err = smtp.DialStartTLS(r.addrs[mode], clientTLS)
	case "tls":
		c, err = smtp.DialTLS(r.addrs[mode], clientTLS)
	default:
		c, err = smtp.Dial(r.addrs[mode])
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	return c
}

func login(t *testing.T, c *smtp.Client, user string) {
	t.Helper()
	if err := c.Auth(sasl.NewPlainClient("", user, testPassword)); err != nil {
		t.Fatalf("AUTH as %s: %v", user, err)
	}
}

func message(from, to, subject string) string {
	return "From: " + from + "\r\nTo: " + to + "\r\nSubject: " + subject + "\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <" + strings.ReplaceAll(subject, " ", ".") + "@test>\r\n\r\nHello.\r\n"
}

// send runs one transaction and returns the error of the first command
// that failed (an *smtp.SMTPError for a refusal), or the final reply text.
func send(c *smtp.Client, from string, rcpts []string, data string) (string, error) {
	if err := c.Mail(from, nil); err != nil {
		return "", err
	}
	var rerr error
	n := 0
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			if rerr == nil {
				rerr = err
			}
			continue
		}
		n++
	}
	if n == 0 {
		c.Reset()
		return "", rerr
	}
	w, err := c.Data()
	if err != nil {
		return "", err
	}
	io.Copy(w, bytes.NewReader([]byte(data)))
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	text := resp.StatusText
	if i := strings.IndexByte(text, ' '); i > 0 && strings.Count(text[:i], ".") == 2 {
		text = text[i+1:] // the enhanced code
	}
	return text, rerr
}

func smtpCode(err error) (int, string, string) {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code, fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2]), se.Message
	}
	return 0, "", ""
}

// quietLog drops the relay's log: tests under load would drown in it.
func quietLog(*testing.T) *slog.Logger { return slog.New(slog.DiscardHandler) }

func plainAuth(user string) sasl.Client { return sasl.NewPlainClient("", user, testPassword) }

// dialOK is dial for goroutines: nil instead of failing the test.
func (r *relay) dialOK(mode string) *smtp.Client {
	var c *smtp.Client
	var err error
	switch mode {
	case "submission":
		c, err = smtp.DialStartTLS(r.addrs[mode], clientTLS)
	default:
		c, err = smtp.Dial(r.addrs[mode])
	}
	if err != nil {
		return nil
	}
	if err := c.Hello("client.test"); err != nil {
		c.Close()
		return nil
	}
	return c
}
