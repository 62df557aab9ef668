package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sluicemail/sluice/builtins"
	"github.com/sluicemail/sluice/classify"
	"github.com/sluicemail/sluice/engine"
	"github.com/sluicemail/sluice/mailauth"
	"github.com/sluicemail/sluice/metrics"
	"github.com/sluicemail/sluice/queue"
	"github.com/sluicemail/sluice/store"
	"github.com/sluicemail/sluice/web"
)

// Options are what a caller (the CLI, a test) gives a Server besides its
// config file.
type Options struct {
	Log *slog.Logger
	// Resolver looks up PTR names for rdns (default: the system's).
	Resolver builtins.Resolver
	// MXResolver finds MX and address records for direct delivery
	// (default: net.DefaultResolver). Tests point it at a DNS server on
	// 127.0.0.1.
	MXResolver *net.Resolver
	// Now is the clock (default time.Now).
	Now func() time.Time
	// NoSync turns off fsync in the spool: benchmarks only.
	NoSync bool
	// DNS answers the authentication checks (default: a resolver on the
	// config's dns.servers). Tests point it at a DNS server on 127.0.0.1.
	DNS mailauth.Resolver
	// Metrics receives the relay's metrics (default: a new set, with a
	// registry of its own); they are served at /metrics on
	// web.admin_listen, else on web.listen.
	Metrics *metrics.Metrics
}

// Server is the relay: listeners, sessions, the spool and delivery.
type Server struct {
	cfg      atomic.Pointer[Config]
	cfgPath  string
	reg      *builtins.Registry
	rules    *engine.Reloader
	spool    *queue.Spool
	log      *slog.Logger
	opts     Options
	tls      atomic.Pointer[tls.Config]
	store    store.Store
	ids      *engine.IDSource
	ptr      builtins.Resolver // rdns without Options.Resolver
	unsubKey []byte
	// UnsubscribeAddr is where the unsubscribe endpoint listens, once
	// started (nil when off).
	UnsubscribeAddr net.Addr
	// WebAddr is where web.listen listens, once started (nil when off).
	WebAddr  net.Addr
	web      *web.Server
	throttle atomic.Pointer[authThrottle]
	dns      mailauth.Resolver
	delivery *queue.Deliverer
	metrics  *metrics.Metrics
	// dataBufs are the sessions' DATA buffers, reused across connections.
	dataBufs bufPool
	// cls is the classifier in the store, learner its one door for
	// learning, auto the autolearn queue (classifier.go).
	cls     *classify.Classifier
	learner *classify.Learner
	auto    *classify.Autolearner

	mu       sync.Mutex
	open     map[*trackedConn]bool
	conns    int
	perIP    map[netip.Addr]int
	gates    []*gate
	smtps    []*smtp.Server
	sessions sync.WaitGroup
	closing  atomic.Bool
	// shutdown makes Shutdown run once; a second call gets the first's
	// result (the store and the spool close only once).
	shutdown    sync.Once
	shutdownErr error
}

// New builds a relay from cfg: it loads the rules (which must load), opens
// the spool and recovers it after a crash. Start opens the listeners.
func New(cfg *Config, cfgPath string, opts Options) (*Server, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	s := &Server{cfgPath: cfgPath, log: opts.Log, opts: opts, perIP: map[netip.Addr]int{}, ids: engine.NewIDSource(), open: map[*trackedConn]bool{}, metrics: opts.Metrics}
	s.cfg.Store(cfg)
	s.throttle.Store(newAuthThrottle(cfg.Limits))
	s.reg = builtins.NewRegistry()
	st, err := OpenStore(cfg)
	if err != nil {
		return nil, err
	}
	s.store = st
	if s.cls, err = OpenClassifier(st, opts.Now); err != nil {
		st.Close()
		return nil, fmt.Errorf("classifier: %w", err)
	}
	s.learner = classify.NewLearner(s.cls)
	s.auto = s.newAutolearner(cfg.Classifier.AutolearnQueue)
	if s.dns, err = newDNS(cfg, opts); err != nil {
		return nil, err
	}
	s.dns = s.metrics.WrapResolver(s.dns)
	s.ptr = mailauth.NewSystemPTR()
	s.plugFacts()
	rules, err := engine.NewReloader(cfg.RulesDir, s.reg, engine.Options{IDs: s.ids}, s.log, func(rs *engine.RuleSet) {
		s.log.Info("rules reloaded", "dir", cfg.RulesDir, "rules", len(rs.Rules()), "checksum", rs.Checksum())
		s.metrics.RulesLoaded(s.opts.Now())
	})
	if err != nil {
		return nil, err
	}
	s.rules = rules
	s.metrics.RulesLoaded(opts.Now())
	spool, err := queue.OpenSpool(filepath.Join(cfg.StateDir, "spool"), queue.SegmentBytes(cfg.Spool.SegmentBytes), queue.Logger(s.log))
	if err != nil {
		return nil, err
	}
	spool.NoSync = opts.NoSync
	did, err := spool.Recover()
	for _, d := range did {
		s.log.Warn("spool recovery", "did", d)
	}
	if err != nil {
		return nil, err
	}
	s.spool = spool
	tc, err := loadTLS(cfg)
	if err != nil {
		return nil, err
	}
	s.tls.Store(tc)
	s.delivery = newDeliverer(s)
	s.watchState()
	if cfg.Unsubscribe.Listen != "" {
		if s.unsubKey, err = unsubscribeKey(cfg); err != nil {
			return nil, err
		}
	}
	if err := s.newWeb(cfg); err != nil {
		return nil, err
	}
	return s, nil
}

// plugFacts gives the facts the relay knows their computation.
func (s *Server) plugFacts() {
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	must(s.reg.SetCompute("hourly_sent", func(m *builtins.Message) (any, error) {
		c, err := s.sentCounts(m)
		if err != nil {
			return nil, err
		}
		return c[0], nil
	}))
	must(s.reg.SetCompute("daily_sent", func(m *builtins.Message) (any, error) {
		c, err := s.sentCounts(m)
		if err != nil {
			return nil, err
		}
		return c[1], nil
	}))
	must(s.plugReputation())
	must(s.reg.SetCompute("hourly_attempts", func(m *builtins.Message) (any, error) {
		return s.attempts(m)
	}))
	must(s.reg.SetCompute("domain_allowed", func(m *builtins.Message) (any, error) {
		in := m.Input()
		if !in.Authenticated {
			return true, nil // the check is about what an SMTP user may send
		}
		u := s.cfg.Load().users[in.SMTPUser]
		if u == nil {
			return false, nil
		}
		d, err := m.ValueOf("from_domain")
		if err != nil {
			return nil, err
		}
		return u.mayUseDomain(d.(string)), nil
	}))
}

// Config is the live configuration.
func (s *Server) Config() *Config { return s.cfg.Load() }

// Rules is the rules reloader.
func (s *Server) Rules() *engine.Reloader { return s.rules }

// Spool is the message spool.
func (s *Server) Spool() *queue.Spool { return s.spool }

// Listening describes an open listener.
type Listening struct {
	Addr net.Addr
	Mode string
}

// Start opens every listener and starts delivery; it returns once the
// sockets are open.
func (s *Server) Start(ctx context.Context) ([]Listening, error) {
	cfg := s.cfg.Load()
	var out []Listening
	for _, l := range cfg.Listen {
		// No TCP keep-alive: every command and every read of DATA has
		// its timeout (limits.command_timeout), which ends a dead
		// session sooner, and keep-alive cost four setsockopt calls on
		// each connection.
		lc := net.ListenConfig{KeepAlive: -1}
		ln, err := lc.Listen(ctx, "tcp", l.Addr)
		if err != nil {
			s.closeListeners()
			return nil, fmt.Errorf("listen %s: %w", l.Addr, err)
		}
		g := newGate(s, ln, l.Mode)
		srv := s.newSMTP(l.Mode)
		s.mu.Lock()
		s.gates = append(s.gates, g)
		s.smtps = append(s.smtps, srv)
		s.mu.Unlock()
		var serveOn net.Listener = g
		if l.Mode == "tls" {
			serveOn = tls.NewListener(g, s.tlsConfig())
		}
		go g.run()
		go func() {
			if err := srv.Serve(serveOn); err != nil && !s.closing.Load() {
				s.log.Error("listener stopped", "addr", ln.Addr().String(), "err", err)
			}
		}()
		out = append(out, Listening{Addr: ln.Addr(), Mode: l.Mode})
	}
	webLs, err := s.startWeb(ctx)
	if err != nil {
		s.closeListeners()
		return nil, err
	}
	out = append(out, webLs...)
	if err := s.serveAdmin(ctx); err != nil {
		s.log.Warn("admin socket not available; `sluice list` needs the relay stopped", "err", err.Error())
	}
	s.delivery.Start(ctx)
	s.auto.Start(ctx)
	return out, nil
}

func (s *Server) newSMTP(mode string) *smtp.Server {
	cfg := s.cfg.Load()
	srv := smtp.NewServer(&backend{s: s, mode: mode})
	srv.Domain = cfg.Hostname
	srv.MaxMessageBytes = cfg.Limits.MaxMessageBytes
	srv.MaxRecipients = cfg.Limits.MaxRecipients
	srv.MaxLineLength = cfg.Limits.MaxLineLength
	srv.ReadTimeout = cfg.Limits.CommandTimeout.D()
	srv.WriteTimeout = cfg.Limits.CommandTimeout.D()
	srv.EnableSMTPUTF8 = true
	srv.ErrorLog = slogPrinter{s.log}
	// AUTH without TLS is decided per session (AuthMechanisms): only for
	// loopback clients, and only when the config allows it.
	srv.AllowInsecureAuth = cfg.AllowInsecureAuth
	if mode != "tls" {
		srv.TLSConfig = s.tlsConfig()
	}
	return srv
}

func (s *Server) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c := s.tls.Load()
			return &c.Certificates[0], nil
		},
	}
}

type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Printf(format string, v ...any) { p.log.Warn(fmt.Sprintf(format, v...)) }
func (p slogPrinter) Println(v ...any)               { p.log.Warn(fmt.Sprint(v...)) }

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.gates {
		g.Close()
	}
}

// Shutdown stops accepting connections, lets sessions finish until ctx is
// done, then closes what is left and stops delivery. Everything that got a
// 250 is in the spool; an interrupted DATA never got one. Calling it again
// returns the first call's result.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdown.Do(func() { s.shutdownErr = s.shutDown(ctx) })
	return s.shutdownErr
}

func (s *Server) shutDown(ctx context.Context) error {
	s.closing.Store(true)
	s.closeListeners()
	// Sessions between messages are told to come back later now; those in
	// a transaction finish it (or reach the deadline).
	s.mu.Lock()
	for tc := range s.open {
		if !tc.busy.Load() {
			tc.shutDown()
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.sessions.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = errors.New("sessions still open at the deadline were closed")
	}
	s.mu.Lock()
	smtps := s.smtps
	s.mu.Unlock()
	for _, srv := range smtps {
		srv.Close()
	}
	s.delivery.Stop(ctx)
	s.auto.Shutdown()
	s.store.Close()
	if cerr := s.spool.Close(); err == nil {
		err = cerr
	}
	return err
}

// ReloadConfig reads the config file again and swaps it in if it is valid.
// Listeners are not reopened: addresses need a restart.
func (s *Server) ReloadConfig() error {
	if s.cfgPath == "" {
		return nil
	}
	cfg, err := LoadConfig(s.cfgPath)
	if err != nil {
		s.log.Error("config reload rejected; the live config stays", "err", err.Error())
		return err
	}
	old := s.cfg.Load()
	if string(old.checksum) == string(cfg.checksum) {
		return nil
	}
	tc, err := loadTLS(cfg)
	if err != nil {
		s.log.Error("config reload rejected; the live config stays", "err", err.Error())
		return err
	}
	s.tls.Store(tc)
	s.cfg.Store(cfg)
	s.throttle.Load().setLimits(cfg.Limits) // the failure counts survive a reload
	s.log.Info("config reloaded", "path", s.cfgPath, "users", len(cfg.users))
	return nil
}

// WatchConfig polls the config file and reloads it when it changes.
func (s *Server) WatchConfig(ctx context.Context, every time.Duration) {
	if s.cfgPath == "" {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			b, err := os.ReadFile(s.cfgPath)
			if err == nil && string(b) != string(s.cfg.Load().checksum) {
				s.ReloadConfig()
			}
		}
	}
}

// admit counts a new connection against the limits; it returns a refusal
// text when one is over.
func (s *Server) admit(ip netip.Addr) string {
	cfg := s.cfg.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns >= cfg.Limits.MaxConnections {
		s.metrics.ConnectionRefused("total")
		return "Too many connections, try again later"
	}
	if s.perIP[ip] >= cfg.Limits.MaxConnectionsPerIP {
		s.metrics.ConnectionRefused("per_ip")
		return "Too many connections from your address, try again later"
	}
	s.conns++
	s.perIP[ip]++
	return ""
}

func (s *Server) release(ip netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns--
	if s.perIP[ip]--; s.perIP[ip] <= 0 {
		delete(s.perIP, ip)
	}
}

// gate accepts connections for one listener, applies the connection limits
// and the connect-phase rules in the connection's own goroutine, and hands
// the admitted ones to go-smtp.
type gate struct {
	s     *Server
	ln    net.Listener
	mode  string
	ch    chan net.Conn
	done  chan struct{}
	close sync.Once
}

func newGate(s *Server, ln net.Listener, mode string) *gate {
	return &gate{s: s, ln: ln, mode: mode, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (g *gate) run() {
	for {
		c, err := g.ln.Accept()
		if err != nil {
			select {
			case <-g.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			g.s.log.Error("accept", "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		go g.admit(c)
	}
}

func (g *gate) admit(c net.Conn) {
	ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	ip := ap.Addr().Unmap()
	if why := g.s.admit(ip); why != "" {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "421 4.7.0 %s\r\n", why)
		c.Close()
		return
	}
	tc := &trackedConn{Conn: c, s: g.s, ip: ip, mode: g.mode}
	g.s.sessions.Add(1)
	g.s.metrics.SessionOpened(g.mode)
	g.s.mu.Lock()
	g.s.open[tc] = true
	g.s.mu.Unlock()
	tc.info = g.s.newConnInfo(ip, g.mode)
	if r := tc.info.connect(); r != nil && g.mode != "tls" {
		// Refused before the greeting, as Postfix's smtpd_client_restrictions.
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "%d %s %s\r\n", r.Code, r.Enhanced, g.s.ruleText(r.Text, r.ID))
		tc.Close()
		return
	}
	select {
	case g.ch <- tc:
	case <-g.done:
		tc.Close()
	}
}

func (g *gate) Accept() (net.Conn, error) {
	select {
	case c := <-g.ch:
		return c, nil
	case <-g.done:
		return nil, net.ErrClosed
	}
}

func (g *gate) Close() error {
	g.close.Do(func() {
		close(g.done)
		g.ln.Close()
	})
	return nil
}

func (g *gate) Addr() net.Addr { return g.ln.Addr() }

// trackedConn is an admitted connection; closing it releases its slot.
type trackedConn struct {
	net.Conn
	s    *Server
	ip   netip.Addr
	mode string
	info *connInfo
	once sync.Once
	busy atomic.Bool // inside a mail transaction
	// timedOut is set when a read hits its deadline: the connection is
	// over. Later reads fail at once, so go-smtp cannot wait out a fresh
	// deadline and read on, and the session refuses whatever partial
	// line the timeout cut off (bufio hands it over as a whole line).
	timedOut atomic.Bool
	// closeAfter closes the connection once the next reply is written
	// (a 421 that ends the session).
	closeAfter atomic.Bool
	// goodbye: the session was told the relay is shutting down.
	goodbye sync.Once
}

// shutDown tells the client the relay is going away and ends the session.
func (c *trackedConn) shutDown() {
	c.goodbye.Do(func() {
		c.SetWriteDeadline(time.Now().Add(time.Second))
		fmt.Fprint(c.Conn, "421 4.3.2 Service shutting down, try again later\r\n")
		c.Conn.Close()
	})
}

// Read marks the connection timed out at the first deadline it hits. A
// read between transactions while the relay shuts down ends the session:
// a transaction under way when Shutdown began (or whose end go-smtp had
// not yet reported by Reset) finishes, and the client is then told to
// come back later instead of being waited on for a whole command timeout.
func (c *trackedConn) Read(p []byte) (int, error) {
	if c.timedOut.Load() {
		return 0, os.ErrDeadlineExceeded
	}
	if c.s.closing.Load() && !c.busy.Load() {
		c.shutDown()
		return 0, net.ErrClosed
	}
	n, err := c.Conn.Read(p)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.timedOut.Store(true)
		}
	}
	return n, err
}

// Write closes the connection after a reply that ends the session.
func (c *trackedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if c.closeAfter.Load() {
		c.Conn.Close()
	}
	return n, err
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.info.close()
		c.s.release(c.ip)
		c.s.mu.Lock()
		delete(c.s.open, c)
		c.s.mu.Unlock()
		c.s.metrics.SessionClosed(c.mode)
		c.s.sessions.Done()
	})
	return err
}

// connOf finds the trackedConn under a go-smtp connection (under TLS too).
func connOf(c net.Conn) *trackedConn {
	if t, ok := c.(*tls.Conn); ok {
		c = t.NetConn()
	}
	tc, _ := c.(*trackedConn)
	return tc
}

func replyText(text, id string) string {
	if id == "" {
		return text
	}
	return text + " [" + id + "]"
}

// bufPool reuses the buffers messages are read into, up to maxPooledBuf:
// a rare huge message's buffer is left to the garbage collector rather
// than kept for every later one.
type bufPool struct{ p sync.Pool }

const maxPooledBuf = 4 << 20

func (b *bufPool) get() *bytes.Buffer {
	if v, ok := b.p.Get().(*bytes.Buffer); ok {
		return v
	}
	return new(bytes.Buffer)
}

func (b *bufPool) put(buf *bytes.Buffer) {
	if buf.Cap() <= maxPooledBuf {
		buf.Reset()
		b.p.Put(buf)
	}
}
