package queue

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// These tests deliver over loopback to a real go-smtp server (sink) that
// counts its connections, the sessions open at once, the messages each
// connection carried, and whether commands arrived pipelined.

type sink struct {
	addr string
	srv  *smtp.Server
	// noPipelining hides PIPELINING from the EHLO reply.
	noPipelining bool
	// onMail, if set, answers MAIL of message n (from 0) of connection
	// conn (from 0); it may close c.
	onMail func(c *smtp.Conn, conn, n int) error
	// dataDelay holds each message this long before its 250.
	dataDelay time.Duration
	// listen is the address to listen on (127.0.0.1:0 if empty).
	listen string

	mu        sync.Mutex
	conns     int // SMTP sessions (a STARTTLS starts a new one)
	accepted  int // TCP connections
	active    int
	maxActive int
	perConn   []int
	got       map[string]int // message id -> times received
	total     int
	pipelined int // reads that held more than one command
	quits     int
	closed    int // connections ended
	arrived   chan struct{}
}

func newSink(t testing.TB, setup func(*sink)) *sink {
	t.Helper()
	k := &sink{got: map[string]int{}, arrived: make(chan struct{}, 1)}
	if setup != nil {
		setup(k)
	}
	k.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		k.mu.Lock()
		n := k.conns
		k.conns++
		k.perConn = append(k.perConn, 0)
		k.mu.Unlock()
		return &sinkSession{k: k, c: c, conn: n}, nil
	}))
	k.srv.Domain = "sink.test"
	k.srv.AllowInsecureAuth = true
	if k.listen == "" {
		k.listen = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", k.listen)
	if err != nil {
		t.Fatal(err)
	}
	k.addr = l.Addr().String()
	go k.srv.Serve(sinkListener{l, k})
	t.Cleanup(func() { k.srv.Close() })
	return k
}

// wait returns once the sink has received n messages.
func (k *sink) wait(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		k.mu.Lock()
		got := k.total
		k.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-k.arrived:
		case <-deadline:
			t.Fatalf("the sink got %d messages, want %d", got, n)
		}
	}
}

type sinkListener struct {
	net.Listener
	k *sink
}

func (l sinkListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.k.mu.Lock()
	l.k.accepted++
	l.k.active++
	l.k.maxActive = max(l.k.maxActive, l.k.active)
	l.k.mu.Unlock()
	return &sinkConn{Conn: c, k: l.k}, nil
}

// sinkConn counts pipelined reads and hides PIPELINING when asked.
type sinkConn struct {
	net.Conn
	k    *sink
	once sync.Once
}

func (c *sinkConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	lines := bytes.Count(b[:n], []byte("\r\n"))
	if lines > 1 && bytes.HasPrefix(b[:n], []byte("MAIL FROM:")) {
		c.k.mu.Lock()
		c.k.pipelined++
		c.k.mu.Unlock()
	}
	if bytes.HasPrefix(b[:n], []byte("QUIT")) {
		c.k.mu.Lock()
		c.k.quits++
		c.k.mu.Unlock()
		c.end() // the client is done with the session
	}
	return n, err
}

// end counts the session as over, once.
func (c *sinkConn) end() {
	c.once.Do(func() {
		c.k.mu.Lock()
		c.k.active--
		c.k.closed++
		c.k.mu.Unlock()
	})
}

func (c *sinkConn) Write(b []byte) (int, error) {
	if c.k.noPipelining && bytes.Contains(b, []byte("250-PIPELINING\r\n")) {
		if _, err := c.Conn.Write(bytes.Replace(b, []byte("250-PIPELINING\r\n"), nil, 1)); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return c.Conn.Write(b)
}

func (c *sinkConn) Close() error {
	c.end()
	return c.Conn.Close()
}

type sinkSession struct {
	k    *sink
	c    *smtp.Conn
	conn int
	n    int
}

func (s *sinkSession) Reset()        {}
func (s *sinkSession) Logout() error { return nil }
func (s *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.k.onMail != nil {
		return s.k.onMail(s.c, s.conn, s.n)
	}
	return nil
}
func (s *sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	time.Sleep(s.k.dataDelay)
	id, _, _ := strings.Cut(strings.TrimPrefix(string(b), "Subject: "), "\r\n")
	s.n++
	s.k.mu.Lock()
	s.k.got[id]++
	s.k.total++
	s.k.perConn[s.conn]++
	s.k.mu.Unlock()
	select {
	case s.k.arrived <- struct{}{}:
	default:
	}
	return nil
}

// testRelay is the relay around a deliverer under test: a fixed
// configuration, and a record of every outcome.
type testRelay struct {
	cfg     *DeliveryConfig
	ids     atomic.Int64
	mu      sync.Mutex
	out     map[string][]string // message id -> statuses, attempt by attempt
	checkOK func(env *Envelope, r *RcptState)
}

func (r *testRelay) DeliveryConfig() *DeliveryConfig { return r.cfg }
func (r *testRelay) NewID(time.Time) string          { return fmt.Sprintf("DSN%d", r.ids.Add(1)) }
func (r *testRelay) Undeliverable(*Envelope)         {}
func (r *testRelay) Attempted(env *Envelope, out []Outcome) {
	r.mu.Lock()
	defer r.mu.Unlock()
	// One entry per attempt: the status all its recipients share, else
	// "mixed".
	status, detail := "", ""
	for _, o := range out {
		if status != "" && status != o.Rcpt.Status {
			status = "mixed"
		} else if status == "" {
			status, detail = o.Rcpt.Status, o.Result.Detail
		}
		if r.checkOK != nil && o.Rcpt.Status == StatusDelivered {
			r.checkOK(env, o.Rcpt)
		}
	}
	r.out[env.ID] = append(r.out[env.ID], status+" "+detail)
}

func smarthostConfig(addr string) *DeliveryConfig {
	return &DeliveryConfig{Hostname: "relay.test", Mode: "smarthost", Smarthost: Smarthost{Addr: addr, TLS: "none"},
		Retry: []time.Duration{time.Minute}, MaxAge: time.Hour, DelayNotice: time.Hour, RescanInterval: time.Hour,
		MaxWorkers: 100, ConnsPerDest: 20, IdleTimeout: 5 * time.Second, MessagesPerConn: 1000}
}

// startDeliverer runs a deliverer on a new spool until the test ends.
func startDeliverer(t *testing.T, cfg *DeliveryConfig) (*Deliverer, *testRelay, *Spool) {
	t.Helper()
	return startDelivererRes(t, cfg, nil)
}

// startDelivererRes is startDeliverer with res for MX and address lookups.
func startDelivererRes(t *testing.T, cfg *DeliveryConfig, res *net.Resolver) (*Deliverer, *testRelay, *Spool) {
	t.Helper()
	sp, err := OpenSpool(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rel := &testRelay{cfg: cfg, out: map[string][]string{}}
	d := NewDeliverer(DeliverOptions{Spool: sp, Relay: rel, Resolver: res, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	d.Start(context.Background())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d.Stop(ctx)
	})
	return d, rel, sp
}

// submit spools and queues n messages, as sessions do after their 250.
func submit(t *testing.T, d *Deliverer, n int, rcpts ...string) []string {
	t.Helper()
	var ids []string
	for i := range n {
		id := fmt.Sprintf("M%04d", i)
		env := &Envelope{ID: id, From: "a@b.test", Received: time.Now(), NextAttempt: time.Now()}
		for _, r := range rcpts {
			env.Rcpts = append(env.Rcpts, RcptState{Addr: r, Status: StatusPending})
		}
		msg := []byte("Subject: " + id + "\r\n\r\nbody of " + id + "\r\n")
		if err := d.Put(AreaQueue, env, msg); err != nil {
			t.Fatal(err)
		}
		d.EnqueueFresh(env, msg)
		ids = append(ids, id)
	}
	return ids
}

// drained waits until the queue area is empty.
func drained(t *testing.T, sp *Spool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; {
		left, err := sp.List(AreaQueue)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages still queued", len(left))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// once checks that the sink got each id exactly once and that each went
// out on its first attempt.
func once(t *testing.T, k *sink, rel *testRelay, ids []string) {
	t.Helper()
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, id := range ids {
		if k.got[id] != 1 {
			t.Errorf("%s received %d times, want once", id, k.got[id])
		}
	}
	rel.mu.Lock()
	defer rel.mu.Unlock()
	for _, id := range ids {
		if o := rel.out[id]; len(o) != 1 || !strings.HasPrefix(o[0], StatusDelivered) {
			t.Errorf("%s: attempts %q, want one, delivered", id, o)
		}
	}
}

// TestSessionsAreReused: 100 messages that arrive together for one
// smarthost go out on at most ConnsPerDest connections, several each.
func TestSessionsAreReused(t *testing.T) {
	k := newSink(t, nil)
	cfg := smarthostConfig(k.addr)
	cfg.ConnsPerDest = 4
	d, rel, sp := startDeliverer(t, cfg)
	ids := submit(t, d, 100, "bob@example.org")
	k.wait(t, 100)
	drained(t, sp)
	once(t, k, rel, ids)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.conns > 4 || k.maxActive > 4 {
		t.Errorf("%d connections, %d at once; want at most 4", k.conns, k.maxActive)
	}
	t.Logf("%d connections, messages on each: %v", k.conns, k.perConn)
}

// TestMessagesPerConnection: a session is closed after MessagesPerConn
// messages and the rest go out on new ones.
func TestMessagesPerConnection(t *testing.T) {
	k := newSink(t, nil)
	cfg := smarthostConfig(k.addr)
	cfg.ConnsPerDest, cfg.MessagesPerConn = 1, 10
	d, rel, sp := startDeliverer(t, cfg)
	ids := submit(t, d, 35, "bob@example.org")
	k.wait(t, 35)
	drained(t, sp)
	once(t, k, rel, ids)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.conns != 4 || k.maxActive != 1 {
		t.Errorf("%d connections (%d at once), messages on each %v; want 4 (one at a time) of at most 10", k.conns, k.maxActive, k.perConn)
	}
	for _, n := range k.perConn {
		if n > 10 {
			t.Errorf("a connection carried %d messages: %v", n, k.perConn)
		}
	}
}

// TestBrokenSessionRetriedOnce: a next hop that drops the connection at
// MAIL, or answers 421, gets the message again at once on a new
// connection; every message arrives once and on its first attempt.
func TestBrokenSessionRetriedOnce(t *testing.T) {
	for _, how := range []string{"drop", "421"} {
		t.Run(how, func(t *testing.T) {
			k := newSink(t, func(k *sink) {
				// Each connection takes three messages, then breaks.
				k.onMail = func(c *smtp.Conn, _, n int) error {
					if n < 3 {
						return nil
					}
					if how == "drop" {
						c.Conn().Close()
						return io.EOF
					}
					return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "closing"}
				}
			})
			cfg := smarthostConfig(k.addr)
			cfg.ConnsPerDest = 2
			d, rel, sp := startDeliverer(t, cfg)
			ids := submit(t, d, 30, "bob@example.org")
			k.wait(t, 30)
			drained(t, sp)
			once(t, k, rel, ids)
			k.mu.Lock()
			defer k.mu.Unlock()
			if k.conns < 10 {
				t.Errorf("%d connections for 30 messages at 3 each", k.conns)
			}
		})
	}
}

// TestBrokenTwiceDefers: a next hop that breaks every session leaves the
// message queued after one retry, as a temporary failure.
func TestBrokenTwiceDefers(t *testing.T) {
	k := newSink(t, func(k *sink) {
		k.onMail = func(*smtp.Conn, int, int) error {
			return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "closing"}
		}
	})
	d, rel, sp := startDeliverer(t, smarthostConfig(k.addr))
	submit(t, d, 1, "bob@example.org")
	for deadline := time.Now().Add(10 * time.Second); ; {
		rel.mu.Lock()
		o := rel.out["M0000"]
		rel.mu.Unlock()
		if len(o) > 0 {
			if !strings.HasPrefix(o[0], StatusPending) {
				t.Errorf("outcome %q, want pending", o)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no outcome")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if env, err := sp.Envelope(AreaQueue, "M0000"); err != nil || env.Attempts != 1 {
		t.Errorf("envelope %+v %v: want the message queued after one attempt", env, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.conns != 2 {
		t.Errorf("%d connections, want 2 (the first and one retry)", k.conns)
	}
}

// TestPipelining: MAIL, RCPT and DATA go out in one write to a next hop
// that offers PIPELINING, one by one to one that does not; both get
// every message once.
func TestPipelining(t *testing.T) {
	for _, offer := range []bool{true, false} {
		t.Run(fmt.Sprintf("offered=%v", offer), func(t *testing.T) {
			k := newSink(t, func(k *sink) { k.noPipelining = !offer })
			cfg := smarthostConfig(k.addr)
			cfg.ConnsPerDest = 1
			d, rel, sp := startDeliverer(t, cfg)
			ids := submit(t, d, 20, "bob@example.org", "carol@example.org")
			k.wait(t, 20)
			drained(t, sp)
			once(t, k, rel, ids)
			k.mu.Lock()
			defer k.mu.Unlock()
			if offer && k.pipelined == 0 {
				t.Error("PIPELINING offered, no command group seen")
			}
			if !offer && k.pipelined != 0 {
				t.Errorf("PIPELINING not offered, %d command groups seen", k.pipelined)
			}
		})
	}
}

// TestPerDestinationLimit: a slow next hop never has more than
// ConnsPerDest sessions from the relay, and gets them in parallel.
func TestPerDestinationLimit(t *testing.T) {
	k := newSink(t, func(k *sink) { k.dataDelay = 30 * time.Millisecond })
	cfg := smarthostConfig(k.addr)
	cfg.ConnsPerDest = 3
	d, rel, sp := startDeliverer(t, cfg)
	ids := submit(t, d, 40, "bob@example.org")
	k.wait(t, 40)
	drained(t, sp)
	once(t, k, rel, ids)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.maxActive != 3 {
		t.Errorf("%d sessions at once, want 3", k.maxActive)
	}
}

// TestIdleSessionsClosed: a pooled session with nothing to carry is
// closed (QUIT) after the idle timeout.
func TestIdleSessionsClosed(t *testing.T) {
	k := newSink(t, nil)
	cfg := smarthostConfig(k.addr)
	cfg.IdleTimeout = 200 * time.Millisecond
	d, _, sp := startDeliverer(t, cfg)
	submit(t, d, 1, "bob@example.org")
	k.wait(t, 1)
	drained(t, sp)
	for deadline := time.Now().Add(5 * time.Second); ; {
		k.mu.Lock()
		active, quits := k.active, k.quits
		k.mu.Unlock()
		if active == 0 && quits == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions open, %d QUITs, after the idle timeout", active, quits)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRetryNow: a message deferred for an hour is tried at once when
// asked (sluice queue retry).
func TestRetryNow(t *testing.T) {
	var refuse atomic.Bool
	refuse.Store(true)
	k := newSink(t, func(k *sink) {
		k.onMail = func(*smtp.Conn, int, int) error {
			if refuse.Load() {
				return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "later"}
			}
			return nil
		}
	})
	d, rel, sp := startDeliverer(t, smarthostConfig(k.addr))
	submit(t, d, 1, "bob@example.org")
	for deadline := time.Now().Add(10 * time.Second); ; {
		rel.mu.Lock()
		n := len(rel.out["M0000"])
		rel.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no first attempt")
		}
		time.Sleep(10 * time.Millisecond)
	}
	refuse.Store(false)
	d.RetryNow("M0000")
	k.wait(t, 1)
	drained(t, sp)
}

// TestLocalDelivery: local delivery writes complete files only, and a
// recipient is reported delivered (and the message leaves the spool)
// only once its file is in place; a folder it cannot write keeps the
// message queued; delivering the same message again replaces its file.
// Every way of writing is tried, whatever the file system here: the
// ordered journal's commit (wait for the data, one commit) and the
// fdatasync of each file, each with unnamed files linked into place and
// with named temporary files renamed.
func TestLocalDelivery(t *testing.T) {
	for _, ordered := range []bool{true, false} {
		for _, named := range []bool{false, true} {
			t.Run(fmt.Sprintf("ordered=%v,named=%v", ordered, named), func(t *testing.T) { testLocalDelivery(t, ordered, named) })
		}
	}
}

func testLocalDelivery(t *testing.T, ordered, named bool) {
	dir := t.TempDir()
	cfg := smarthostConfig("")
	cfg.Mode, cfg.LocalDir = "local", dir
	sp, err := OpenSpool(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rel := &testRelay{cfg: cfg, out: map[string][]string{}}
	var early atomic.Int32
	rel.checkOK = func(env *Envelope, r *RcptState) {
		b, err := os.ReadFile(filepath.Join(dir, r.Addr, env.ID+".eml"))
		if err != nil || !bytes.HasSuffix(b, []byte("body of "+env.ID+"\r\n")) {
			early.Add(1)
		}
	}
	d := NewDeliverer(DeliverOptions{Spool: sp, Relay: rel, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	d.local.ordered = func(string) bool { return ordered }
	d.local.named = named
	// A file where the folder of broken@example.org would go.
	if err := os.WriteFile(filepath.Join(dir, "broken@example.org"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	d.Start(context.Background())
	defer d.Stop(context.Background())
	ids := submit(t, d, 50, "bob@example.org", "carol@example.org")
	drained(t, sp)
	for _, id := range ids {
		for _, r := range []string{"bob@example.org", "carol@example.org"} {
			b, err := os.ReadFile(filepath.Join(dir, r, id+".eml"))
			want := "Return-Path: <a@b.test>\r\nDelivered-To: " + r + "\r\nSubject: " + id + "\r\n\r\nbody of " + id + "\r\n"
			if err != nil || string(b) != want {
				t.Fatalf("%s for %s: %q %v", id, r, b, err)
			}
		}
	}
	if n := early.Load(); n != 0 {
		t.Errorf("%d recipients reported delivered before their file was complete", n)
	}
	again := &Envelope{ID: ids[0], From: "again@b.test"}
	if r := d.local.deliver(dir, again, []byte("Subject: again\r\n\r\nsecond\r\n"), "bob@example.org"); !r.OK {
		t.Fatalf("delivering %s again: %+v", ids[0], r)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "bob@example.org", ids[0]+".eml")); err != nil || !bytes.HasPrefix(b, []byte("Return-Path: <again@b.test>")) {
		t.Errorf("%s delivered again: %q %v", ids[0], b, err)
	}
	tmps, _ := filepath.Glob(filepath.Join(dir, "*", "*.tmp"))
	if len(tmps) != 0 {
		t.Errorf("temporary files left: %v", tmps)
	}
	env := &Envelope{ID: "BROKEN", From: "a@b.test", Received: time.Now(), NextAttempt: time.Now(),
		Rcpts: []RcptState{{Addr: "broken@example.org", Status: StatusPending}}}
	msg := []byte("Subject: BROKEN\r\n\r\nbody\r\n")
	if err := d.Put(AreaQueue, env, msg); err != nil {
		t.Fatal(err)
	}
	d.EnqueueFresh(env, msg)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if e, err := sp.Envelope(AreaQueue, "BROKEN"); err == nil && e.Attempts == 1 {
			if e.Rcpts[0].Status != StatusPending || e.Rcpts[0].Code != 451 {
				t.Errorf("recipient whose folder cannot be made: %+v", e.Rcpts[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the undeliverable local message left the queue or was never tried")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newBenchSink(b *testing.B) string { return newSink(b, nil).addr }

// TestDelete: a deleted message leaves the spool and is not tried again;
// one in flight is not deleted (busy), and its attempt goes on.
func TestDelete(t *testing.T) {
	var mails atomic.Int32
	release := make(chan struct{})
	k := newSink(t, func(k *sink) {
		k.onMail = func(*smtp.Conn, int, int) error {
			if mails.Add(1) == 2 {
				<-release // hold the second attempt in flight
			}
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "later"}
		}
	})
	d, rel, sp := startDeliverer(t, smarthostConfig(k.addr))
	submit(t, d, 2, "bob@example.org")
	for deadline := time.Now().Add(10 * time.Second); mails.Load() < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no attempts")
		}
	}
	// One message is deferred (queued for a minute), the other in flight.
	var deferred, inFlight string
	for deadline := time.Now().Add(10 * time.Second); deferred == ""; time.Sleep(10 * time.Millisecond) {
		rel.mu.Lock()
		for _, id := range []string{"M0000", "M0001"} {
			if len(rel.out[id]) == 1 {
				deferred = id
			}
		}
		rel.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("no deferral")
		}
	}
	inFlight = map[string]string{"M0000": "M0001", "M0001": "M0000"}[deferred]
	discard := func(id string) func() error {
		return func() error { return sp.Discard(AreaQueue, id) }
	}
	if busy, err := d.WhileIdle(deferred, discard(deferred)); busy || err != nil {
		t.Fatalf("delete of the deferred message: busy %v, %v", busy, err)
	}
	if busy, err := d.WhileIdle(inFlight, discard(inFlight)); !busy || err != nil {
		t.Fatalf("delete of the message in flight: busy %v, %v; want busy", busy, err)
	}
	close(release)
	if busy := d.RetryIDs([]string{deferred}); len(busy) != 0 {
		t.Errorf("retry of a deleted message said busy: %v", busy)
	}
	time.Sleep(300 * time.Millisecond)
	if left, _ := sp.List(AreaQueue); len(left) != 1 || left[0] != inFlight {
		t.Errorf("left in the queue after delete: %v, want only %s", left, inFlight)
	}
	if n := mails.Load(); n != 2 {
		t.Errorf("%d attempts, want 2 (none of the deleted message)", n)
	}
}
