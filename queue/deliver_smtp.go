package queue

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// route is a next hop and how to talk to it; sessions are pooled by it.
type route struct {
	addr     string // host:port
	tls      string // starttls (required), implicit, none or opportunistic
	insecure bool
	user     string
	pass     string
}

func (r route) key() string {
	return r.addr + "|" + r.tls + "|" + strconv.FormatBool(r.insecure) + "|" + r.user
}

const (
	probeTimeout   = 10 * time.Second
	connectTimeout = 30 * time.Second
)

// deliverMX sends to the domain's MX hosts in order of preference, or to
// the domain itself when it has no MX (RFC 5321 5.1).
func (d *Deliverer) deliverMX(cfg *DeliveryConfig, domain, from string, rcpts []string, msg []byte, out map[string]Result) {
	d.routeMX(cfg, domain, rcpts, out, func(rt route, o map[string]Result) { d.send(cfg, rt, from, rcpts, msg, o) })
}

// routeMX runs try on each address of domain's next hops in turn until one
// answers, and fills out with the answer (or the last failure).
func (d *Deliverer) routeMX(cfg *DeliveryConfig, domain string, rcpts []string, out map[string]Result, try func(route, map[string]Result)) {
	all := func(r Result) {
		for _, rc := range rcpts {
			out[rc] = r
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mxs, err := d.res.LookupMX(ctx, domain)
	var hosts []string
	var dnsErr *net.DNSError
	switch {
	case err == nil:
		slices.SortStableFunc(mxs, func(a, b *net.MX) int { return int(a.Pref) - int(b.Pref) })
		for _, mx := range mxs {
			hosts = append(hosts, strings.TrimSuffix(mx.Host, "."))
		}
		if len(hosts) == 1 && hosts[0] == "" { // null MX, RFC 7505
			all(Result{Perm: true, Code: 556, Enhanced: "5.1.10", Detail: domain + " accepts no mail (null MX)"})
			return
		}
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		hosts = []string{domain} // no MX: the address records of the domain
	default:
		all(Result{Code: 451, Enhanced: "4.4.3", Detail: "MX lookup for " + domain + ": " + err.Error()})
		return
	}
	last := Result{Code: 451, Enhanced: "4.4.1", Detail: "no MX host reachable for " + domain}
	for _, h := range hosts {
		addrs, err := d.res.LookupHost(ctx, h)
		if err != nil {
			if errors.As(err, &dnsErr) && dnsErr.IsNotFound && len(hosts) == 1 && h == domain {
				all(Result{Perm: true, Code: 550, Enhanced: "5.1.2", Detail: domain + " has no MX and no address"})
				return
			}
			last.Detail = "lookup " + h + ": " + err.Error()
			continue
		}
		for _, a := range addrs {
			o := make(map[string]Result, len(rcpts))
			try(route{addr: net.JoinHostPort(a, strconv.Itoa(cfg.Port)), tls: "opportunistic", insecure: !cfg.VerifyMXTLS}, o)
			if !connectionFailed(o) {
				for k, v := range o {
					out[k] = v
				}
				return
			}
			for _, v := range o {
				last = v
			}
		}
	}
	all(last)
}

func connectionFailed(out map[string]Result) bool {
	for _, r := range out {
		if r.busy || r.Code != 0 && r.Code != 421 { // busy: the host is up, its sessions taken
			return false
		}
	}
	return true
}

// send delivers one message to rcpts over a pooled session to rt and puts
// each recipient's result in out. A session that breaks (a reply of 421,
// the connection closed or timed out) is discarded and the message tried
// once more on a new connection before its failure counts: a session
// taken from the pool may have been closed by the peer while it idled.
func (d *Deliverer) send(cfg *DeliveryConfig, rt route, from string, rcpts []string, msg []byte, out map[string]Result) {
	fail := func(r Result) {
		r.Remote = rt.addr
		for _, rc := range rcpts {
			out[rc] = r
		}
	}
	s, err := d.pool.get(rt.key(), max(cfg.ConnsPerDest, 1), cfg.IdleTimeout)
	if err != nil {
		r := Result{Detail: err.Error()}
		if errors.Is(err, errBusy) {
			r.busy, r.busyKey = true, rt.key()
		}
		fail(r)
		return
	}
	for try := 0; ; try++ {
		if s.c == nil {
			c, res := d.dial(cfg, rt, connectTimeout)
			if c == nil {
				d.pool.put(s, false, 0)
				fail(res)
				return
			}
			s.c = c
		}
		o := make(map[string]Result, len(rcpts))
		broken := transact(s.c, rt.addr, from, rcpts, msg, o)
		var rf errResetFailed
		if broken == nil || errors.As(broken, &rf) {
			s.sent++
			d.pool.put(s, broken == nil, cfg.MessagesPerConn)
			for k, v := range o {
				out[k] = v
			}
			return
		}
		s.c.Close()
		s.c, s.sent = nil, 0
		if try == 0 {
			d.log.Info("delivery: session to next hop broken, trying a new one", "remote", rt.addr, "err", broken.Error())
			continue
		}
		d.pool.put(s, false, 0)
		fail(smtpResult(broken, "session"))
		return
	}
}

// transact runs one mail transaction on c and fills out; its error says
// the session broke (the connection failed or the peer said 421), and
// out is then to be ignored. After a transaction that did not end with
// the reply to the message, the session is RSET for the next one.
func transact(c *smtp.Client, addr, from string, rcpts []string, msg []byte, out map[string]Result) error {
	reply := func(err error, stage string) (Result, error) {
		r := smtpResult(err, stage)
		r.Remote = addr
		if r.Code == 0 || r.Code == 421 {
			return r, err
		}
		return r, nil
	}
	tr, err := c.Transaction(from, rcpts)
	if err != nil {
		return err
	}
	if tr.Mail != nil {
		r, broken := reply(tr.Mail, "MAIL FROM")
		if broken != nil {
			return broken
		}
		for _, rc := range rcpts {
			out[rc] = r
		}
		return reset(c)
	}
	var accepted []string
	for i, rc := range rcpts {
		if tr.Rcpts[i] != nil {
			r, broken := reply(tr.Rcpts[i], "RCPT TO")
			if broken != nil {
				return broken
			}
			out[rc] = r
			continue
		}
		accepted = append(accepted, rc)
	}
	if tr.Data == nil {
		if tr.DataErr != nil && len(accepted) > 0 {
			r, broken := reply(tr.DataErr, "DATA")
			if broken != nil {
				return broken
			}
			for _, rc := range accepted {
				out[rc] = r
			}
		}
		return reset(c)
	}
	if _, err := tr.Data.Write(msg); err != nil {
		return err
	}
	resp, err := tr.Data.CloseWithResponse()
	if err != nil {
		r, broken := reply(err, "end of DATA")
		if broken != nil {
			return broken
		}
		for _, rc := range accepted {
			out[rc] = r
		}
		return nil
	}
	for _, rc := range accepted {
		out[rc] = Result{OK: true, Code: 250, Enhanced: "2.0.0", Detail: resp.StatusText, Remote: addr}
	}
	return nil
}

// reset ends an aborted transaction so the session can carry the next.
// Its failure breaks the session only: the transaction's results stand.
func reset(c *smtp.Client) error {
	if err := c.Reset(); err != nil {
		return errResetFailed{err}
	}
	return nil
}

type errResetFailed struct{ error }

// dial opens a session to rt: connect, TLS as rt says, EHLO, AUTH.
func (d *Deliverer) dial(cfg *DeliveryConfig, rt route, timeout time.Duration) (*smtp.Client, Result) {
	failed := func(r Result) (*smtp.Client, Result) {
		r.Remote = rt.addr
		return nil, r
	}
	host, _, _ := net.SplitHostPort(rt.addr)
	tc := &tls.Config{ServerName: host, InsecureSkipVerify: rt.insecure, MinVersion: tls.VersionTLS12}
	connect := func() (net.Conn, error) {
		return (&net.Dialer{Timeout: timeout}).Dial("tcp", rt.addr)
	}
	conn, err := connect()
	if err != nil {
		return failed(Result{Detail: "connect: " + err.Error()})
	}
	newClient := func(conn net.Conn) *smtp.Client {
		c := smtp.NewClient(conn)
		c.CommandTimeout = 2 * time.Minute
		if timeout < connectTimeout {
			c.CommandTimeout = timeout
		}
		c.SubmissionTimeout = 10 * time.Minute
		return c
	}
	var c *smtp.Client
	if rt.tls == "implicit" {
		c = newClient(tls.Client(conn, tc))
	} else {
		c = newClient(conn)
	}
	if err := c.Hello(cfg.Hostname); err != nil {
		c.Close()
		return failed(smtpResult(err, "EHLO"))
	}
	// STARTTLS on the connection that said EHLO, then EHLO again (the
	// handshake runs with it). Opportunistic TLS (RFC 7435) stays in
	// cleartext on the same connection when STARTTLS is not offered, and
	// on a new one when it is refused or its handshake fails.
	switch offered, _ := c.Extension("STARTTLS"); {
	case rt.tls == "starttls" && !offered:
		c.Close()
		return failed(Result{Detail: "STARTTLS: not offered"})
	case rt.tls == "starttls" || rt.tls == "opportunistic" && offered:
		err := c.StartTLS(tc)
		if err == nil {
			err = c.Hello(cfg.Hostname)
		}
		if err == nil {
			break
		}
		c.Close()
		if rt.tls == "starttls" {
			return failed(smtpResult(err, "STARTTLS"))
		}
		if conn, err = connect(); err != nil {
			return failed(Result{Detail: "connect: " + err.Error()})
		}
		c = newClient(conn)
		if err := c.Hello(cfg.Hostname); err != nil {
			c.Close()
			return failed(smtpResult(err, "EHLO"))
		}
	}
	if rt.user != "" {
		if err := c.Auth(sasl.NewPlainClient("", rt.user, rt.pass)); err != nil {
			c.Close()
			r := smtpResult(err, "AUTH")
			r.Perm = false // a credentials problem is the operator's to fix: keep the mail
			return failed(r)
		}
	}
	return c, Result{}
}

// smtpResult turns a client error into a result: an SMTP reply keeps its
// code (5xx permanent), anything else is a temporary network failure.
func smtpResult(err error, stage string) Result {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		enh := ""
		if se.EnhancedCode != smtp.NoEnhancedCode && se.EnhancedCode != (smtp.EnhancedCode{}) {
			enh = fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
		}
		return Result{Code: se.Code, Enhanced: enh, Detail: stage + ": " + se.Message, Perm: se.Code >= 500}
	}
	return Result{Detail: stage + ": " + err.Error()}
}

// pool keeps open SMTP sessions to next hops for reuse, as Postfix's
// connection cache does: at most limit sessions per route, open or
// opening; a caller past the limit waits for one to come back, so
// messages that arrive together for one destination go out one after
// another on its sessions. An idle session is closed after the idle
// timeout, and a session after MessagesPerConn messages.
type pool struct {
	now func() time.Time
	// wake queues a parked message now; called without mu held.
	wake   func(id string)
	mu     sync.Mutex
	dests  map[string]*dest
	closed bool
}

type dest struct {
	open    int // sessions handed out or idle (a slot each)
	waiting int // attempts waiting in get for a slot
	idle    []*session
	free    *sync.Cond
	// parked are messages turned away with errBusy, in order: each slot
	// given back with no attempt waiting for it wakes the first.
	parked   []string
	isParked map[string]bool
}

// errBusy is get's answer to an attempt when the destination's sessions
// are all in use and as many attempts already wait for them: a worker
// that waited too would be one fewer for every other destination (a slow
// next hop holding the whole worker pool: head-of-line blocking). The
// message is parked (park) and its attempt does not count (see
// Deliverer.attempt).
var errBusy = errors.New("every session to the next hop is busy")

// session is one slot of a route's limit, with its connection (nil when
// it is to be dialled).
type session struct {
	key       string
	c         *smtp.Client
	sent      int
	idleSince time.Time
}

func newPool(now func() time.Time) *pool {
	return &pool{now: now, dests: map[string]*dest{}}
}

// get returns a session slot for key: an idle session (newest first), or
// a new slot with no connection while fewer than limit are open, else it
// waits for one.
func (p *pool) get(key string, limit int, idle time.Duration) (*session, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.dests[key]
	if d == nil {
		d = &dest{free: sync.NewCond(&p.mu)}
		p.dests[key] = d
	}
	for {
		for len(d.idle) > 0 {
			s := d.idle[len(d.idle)-1]
			d.idle = d.idle[:len(d.idle)-1]
			if idle > 0 && p.now().Sub(s.idleSince) >= idle {
				go s.c.Close() // the peer may have closed it already
				d.open--
				continue
			}
			return s, nil
		}
		if d.open < limit {
			d.open++
			return &session{key: key}, nil
		}
		if p.closed {
			return nil, errors.New("delivery stopping")
		}
		if d.waiting >= limit {
			return nil, errBusy
		}
		d.waiting++
		d.free.Wait()
		d.waiting--
	}
}

// park notes that message id was turned away from key with errBusy.
func (p *pool) park(key, id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.dests[key]
	if d == nil || d.isParked[id] {
		return
	}
	if d.isParked == nil {
		d.isParked = map[string]bool{}
	}
	d.parked = append(d.parked, id)
	d.isParked[id] = true
}

// unpark takes the first parked message of d when no attempt waits for
// the slot just given back; p.mu is held.
func (d *dest) unpark() string {
	if d.waiting > 0 || len(d.parked) == 0 {
		return ""
	}
	id := d.parked[0]
	d.parked = d.parked[1:]
	delete(d.isParked, id)
	return id
}

// put gives a slot back: its session is kept for reuse when reuse is true
// and it has carried fewer than perConn messages (0: no limit), else
// closed (QUIT).
func (p *pool) put(s *session, reuse bool, perConn int) {
	p.mu.Lock()
	d := p.dests[s.key]
	if reuse && s.c != nil && !p.closed && (perConn <= 0 || s.sent < perConn) {
		s.idleSince = p.now()
		d.idle = append(d.idle, s)
		d.free.Signal()
		id := d.unpark()
		p.mu.Unlock()
		p.wakeUp(id)
		return
	}
	p.mu.Unlock()
	// The slot is free once the session has ended, not before: the cap
	// counts sessions the next hop sees.
	if s.c != nil {
		quit(s.c)
	}
	p.mu.Lock()
	d.open--
	d.free.Signal()
	id := d.unpark()
	p.mu.Unlock()
	p.wakeUp(id)
}

func (p *pool) wakeUp(id string) {
	if id != "" && p.wake != nil {
		p.wake(id)
	}
}

func quit(c *smtp.Client) {
	c.CommandTimeout = 5 * time.Second
	if c.Quit() != nil {
		c.Close()
	}
}

// reap closes idle sessions past the idle timeout until stop closes.
func (p *pool) reap(stop <-chan struct{}, cfg func() *DeliveryConfig) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		idle := cfg().IdleTimeout
		if idle <= 0 {
			idle = 5 * time.Second
		}
		var old []*session
		p.mu.Lock()
		now := p.now()
		for _, d := range p.dests {
			keep := d.idle[:0]
			for _, s := range d.idle {
				if now.Sub(s.idleSince) >= idle {
					old = append(old, s)
					continue
				}
				keep = append(keep, s)
			}
			clear(d.idle[len(keep):])
			d.idle = keep
		}
		p.mu.Unlock()
		for _, s := range old {
			quit(s.c)
		}
		p.mu.Lock()
		for _, s := range old {
			d := p.dests[s.key]
			d.open--
			d.free.Signal()
		}
		p.mu.Unlock()
	}
}

// closeAll closes the idle sessions and keeps none from now on.
func (p *pool) closeAll() {
	var old []*session
	p.mu.Lock()
	p.closed = true
	for _, d := range p.dests {
		old = append(old, d.idle...)
		d.open -= len(d.idle)
		d.idle = nil
		d.free.Broadcast()
	}
	p.mu.Unlock()
	for _, s := range old {
		quit(s.c)
	}
}
