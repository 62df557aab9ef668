package server

import (
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// loginServer is the server side of AUTH LOGIN, which go-sasl does not
// have: "Username:" and "Password:" challenges (base64 on the wire,
// handled by go-smtp), then the same check as PLAIN.
type loginServer struct {
	step     int
	username string
	check    func(username, password string) error
}

var errLoginMalformed = errors.New("malformed AUTH LOGIN exchange")

func (s *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch s.step {
	case 0:
		s.step = 1
		if len(response) > 0 { // initial response: RFC 4954 allows the user name
			s.username = string(response)
			s.step = 2
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 1:
		s.username = string(response)
		s.step = 2
		return []byte("Password:"), false, nil
	case 2:
		s.step = 3
		return nil, true, s.check(s.username, string(response))
	}
	return nil, true, errLoginMalformed
}

func newLoginServer(check func(username, password string) error) sasl.Server {
	return &loginServer{check: check}
}

// login is one AUTH PLAIN or LOGIN check of name and password from ip,
// throttled (authThrottle), against the live config.
func (s *Server) login(ip netip.Addr, name, password string) (*User, error) {
	th := s.throttle.Load()
	if th.refused(ip) {
		return nil, errAuthThrottled
	}
	cfg := s.cfg.Load()
	// A recent success with these very credentials (the auth cache) needs
	// neither bcrypt nor a delay: only the right password hits it, so it
	// is no way to guess. It comes after the refusal all the same, or an
	// address refused for guessing could go on guessing and learn from a
	// 235 which guess was right.
	if u := cfg.users[name]; u != nil && cfg.authCache.hit(name, credMAC(name, password), time.Now()) {
		th.forgive(ip, name)
		return u, nil
	}
	at, err := th.begin(ip, name)
	if err != nil {
		s.log.Warn("auth refused", "client_ip", ip.String(), "user", name, "reason", err.Error())
		return nil, err
	}
	at.wait()
	u, ok := s.cfg.Load().authenticate(name, password)
	at.end(ok)
	if !ok {
		s.log.Warn("auth failed", "client_ip", ip.String(), "user", name)
		return nil, smtp.ErrAuthFailed
	}
	return u, nil
}

var errAuthBusy = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many authentications in progress from your address; try again later"}

const (
	// authChecksPerIP is how many password checks (bcrypt, tens of
	// milliseconds of a core each) one address may have running at once;
	// more wait their turn, for at most authSlotWait.
	authChecksPerIP = 2
	authSlotWait    = 10 * time.Second
	// authMaxEntries bounds each table (addresses, names).
	authMaxEntries = 100000
	// authNameMax is how much of a user name keys its record: attackers
	// choose the names, and a name longer than that is no real user's.
	authNameMax = 256
)

// authThrottle limits password guessing, two ways:
//
//   - Per client address (an IPv6 client's /64, which one host usually
//     holds whole): after slowAfter failures within window each attempt
//     waits (unit per failure beyond, capped), and after refuseAfter AUTH
//     answers 454 4.7.0 until window has passed since the last failure.
//     An attempt counts from the moment its check starts: a check in
//     flight counts as a failure until it succeeds, and at most
//     authChecksPerIP run at once, so parallel connections get no more
//     than refuseAfter guesses checked between them.
//   - Per user name, known or not (so that the delay does not tell which
//     names exist): failures from any address add a delay that starts at
//     unit and doubles with each failure, capped at maxDelay, and never a
//     refusal: someone guessing a user's password must not be able to lock
//     the real user out; the most it costs the user is maxDelay a login.
//
// The delay is served before the check whatever its outcome, so that a
// client cannot tell a failure by its time and hang up early.
type authThrottle struct {
	mu          sync.Mutex
	slowAfter   int
	refuseAfter int
	window      time.Duration
	unit        time.Duration
	maxDelay    time.Duration
	slotWait    time.Duration
	maxEntries  int
	now         func() time.Time
	sleep       func(time.Duration)
	addrs       map[netip.Addr]*addrAuth
	names       map[string]*nameAuth
	nextPrune   time.Time
}

// addrAuth is one client address's record.
type addrAuth struct {
	fails    map[string]int // failures within the window, by user name
	total    int            // the sum of fails
	checking int            // attempts holding a slot: checks in flight
	waiting  int            // attempts waiting for a slot
	last     time.Time      // of the last failure
	slots    chan struct{}
}

// nameAuth is one user name's record, over all addresses.
type nameAuth struct {
	fails    int
	checking int
	last     time.Time
}

func newAuthThrottle(l Limits) *authThrottle {
	t := &authThrottle{unit: time.Second, maxDelay: 5 * time.Second, slotWait: authSlotWait, maxEntries: authMaxEntries,
		now: time.Now, sleep: time.Sleep, addrs: map[netip.Addr]*addrAuth{}, names: map[string]*nameAuth{}}
	t.setLimits(l)
	return t
}

// setLimits applies a reloaded config's limits. The counts stay: a reload
// must not forgive the guesses made so far.
func (t *authThrottle) setLimits(l Limits) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.slowAfter, t.refuseAfter, t.window = l.AuthSlowAfter, l.AuthRefuseAfter, l.AuthWindow.D()
}

// authKey is the address a client's attempts are counted under.
func authKey(ip netip.Addr) netip.Addr {
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}

func nameKey(name string) string {
	if len(name) > authNameMax {
		return name[:authNameMax]
	}
	return name
}

// refused reports whether ip may not try AUTH now.
func (t *authThrottle) refused(ip netip.Addr) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.addrs[authKey(ip)]
	if a == nil {
		return false
	}
	t.expireAddr(a, t.now())
	return a.total >= t.refuseAfter
}

func (t *authThrottle) expireAddr(a *addrAuth, now time.Time) {
	if a.total > 0 && now.Sub(a.last) > t.window {
		a.fails, a.total = nil, 0
	}
}

func (t *authThrottle) expireName(n *nameAuth, now time.Time) {
	if n.fails > 0 && now.Sub(n.last) > t.window {
		n.fails = 0
	}
}

// addr is ip's record, made if need be; nil when the table is full of
// live records (then the address goes uncounted: only an attacker holding
// more than maxEntries addresses fills it, and per-address limits cannot
// stop that one anyway; the per-name delay still does).
func (t *authThrottle) addr(ip netip.Addr, now time.Time) *addrAuth {
	a := t.addrs[ip]
	if a == nil {
		if len(t.addrs) >= t.maxEntries && !t.prune(now) {
			return nil
		}
		a = &addrAuth{slots: make(chan struct{}, authChecksPerIP)}
		t.addrs[ip] = a
	}
	t.expireAddr(a, now)
	return a
}

func (t *authThrottle) name(name string, now time.Time) *nameAuth {
	n := t.names[name]
	if n == nil {
		if len(t.names) >= t.maxEntries && !t.prune(now) {
			return nil
		}
		n = &nameAuth{}
		t.names[name] = n
	}
	t.expireName(n, now)
	return n
}

// prune drops the records that hold nothing any more, at most once a
// second (a full table of live records would make every attempt walk it),
// and reports whether both tables have room.
func (t *authThrottle) prune(now time.Time) bool {
	if now.Before(t.nextPrune) {
		return len(t.addrs) < t.maxEntries && len(t.names) < t.maxEntries
	}
	t.nextPrune = now.Add(time.Second)
	for k, a := range t.addrs {
		t.expireAddr(a, now)
		if a.total == 0 && a.checking == 0 && a.waiting == 0 {
			delete(t.addrs, k)
		}
	}
	for k, n := range t.names {
		t.expireName(n, now)
		if n.fails == 0 && n.checking == 0 {
			delete(t.names, k)
		}
	}
	return len(t.addrs) < t.maxEntries && len(t.names) < t.maxEntries
}

// authAttempt is one password check, from begin to end.
type authAttempt struct {
	t     *authThrottle
	ip    netip.Addr
	a     *addrAuth // nil: uncounted (a full table)
	n     *nameAuth
	name  string
	delay time.Duration
	sleep func(time.Duration)
}

// begin reserves a check of name's password from ip: it waits for one of
// the address's slots, then counts the attempt as a failure until end says
// otherwise. The error is the 454 to answer instead.
func (t *authThrottle) begin(ip netip.Addr, name string) (*authAttempt, error) {
	ip, name = authKey(ip), nameKey(name)
	t.mu.Lock()
	defer t.mu.Unlock()
	a := t.addr(ip, t.now())
	if a != nil {
		if a.total >= t.refuseAfter {
			return nil, errAuthThrottled
		}
		a.waiting++
		wait := t.slotWait
		t.mu.Unlock()
		got := true
		select {
		case a.slots <- struct{}{}:
		default:
			timer := time.NewTimer(wait)
			select {
			case a.slots <- struct{}{}:
			case <-timer.C:
				got = false
			}
			timer.Stop()
		}
		t.mu.Lock()
		a.waiting-- // the record stayed: records with waiters are not dropped
		if !got {
			t.dropIdle(ip, a, name, nil)
			return nil, errAuthBusy
		}
		t.expireAddr(a, t.now())
		if a.total+a.checking >= t.refuseAfter {
			<-a.slots
			return nil, errAuthThrottled
		}
		a.checking++
	}
	at := &authAttempt{t: t, ip: ip, a: a, name: name, sleep: t.sleep}
	if a != nil && a.total >= t.slowAfter {
		at.delay = min(time.Duration(a.total-t.slowAfter+1)*t.unit, t.maxDelay)
	}
	if n := t.name(name, t.now()); n != nil {
		// Checks in flight count here too, so that parallel guesses
		// from many addresses each get a longer delay than the last.
		if k := n.fails + n.checking; k >= t.slowAfter {
			at.delay = max(at.delay, min(t.unit<<min(k-t.slowAfter, 20), t.maxDelay))
		}
		n.checking++
		at.n = n
	}
	return at, nil
}

// wait serves the attempt's delay.
func (at *authAttempt) wait() {
	if at.delay > 0 {
		at.sleep(at.delay)
	}
}

// end settles the attempt: a failure is counted against the address and
// the name; a success releases the reservation.
func (at *authAttempt) end(ok bool) {
	t := at.t
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if a := at.a; a != nil {
		a.checking--
		<-a.slots
		if ok {
			t.forgiveAddr(a, at.name)
		} else {
			t.expireAddr(a, now)
			if a.fails == nil {
				a.fails = map[string]int{}
			}
			a.fails[at.name]++
			a.total++
			a.last = now
		}
	}
	// A success leaves the name's failures as they are: they were guesses
	// from anywhere, which the real user logging in makes no less so, and
	// forgetting them would let a guesser resume at full speed each time
	// the user logs in. The user pays at most maxDelay meanwhile.
	if n := at.n; n != nil {
		n.checking--
		if !ok {
			t.expireName(n, now)
			n.fails++
			n.last = now
		}
	}
	t.dropIdle(at.ip, at.a, at.name, at.n)
}

// dropIdle removes the records of an address and a name that hold
// nothing any more, so that the tables hold only addresses and names with
// failures in the window (and attempts under way).
func (t *authThrottle) dropIdle(ip netip.Addr, a *addrAuth, name string, n *nameAuth) {
	if a != nil && a.total == 0 && a.checking == 0 && a.waiting == 0 && t.addrs[ip] == a {
		delete(t.addrs, ip)
	}
	if n != nil && n.fails == 0 && n.checking == 0 && t.names[name] == n {
		delete(t.names, name)
	}
}

// forgive is a success of name from ip outside begin and end (the auth
// cache).
func (t *authThrottle) forgive(ip netip.Addr, name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if a := t.addrs[authKey(ip)]; a != nil {
		t.forgiveAddr(a, nameKey(name))
	}
}

// forgiveAddr forgets the address's failures against name, and only those:
// they were most likely the user's own typing, and whoever just proved to
// know name's password gains nothing by guessing it. The failures against
// other names stay, or an attacker who owns one account could log into it
// between guesses at the others and never reach refuseAfter.
func (t *authThrottle) forgiveAddr(a *addrAuth, name string) {
	a.total -= a.fails[name]
	delete(a.fails, name)
}
