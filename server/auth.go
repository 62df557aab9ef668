package server

import (
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
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

// authThrottle slows and then refuses AUTH from an address that keeps
// failing: after slowAfter failures within window each answer waits a
// second per failure (capped), after refuseAfter AUTH is refused until the
// window has passed since the last failure.
type authThrottle struct {
	mu          sync.Mutex
	fails       map[netip.Addr]*authFails
	slowAfter   int
	refuseAfter int
	window      time.Duration
	now         func() time.Time
}

type authFails struct {
	n    int
	last time.Time
}

func newAuthThrottle(l Limits) *authThrottle {
	return &authThrottle{fails: map[netip.Addr]*authFails{}, slowAfter: l.AuthSlowAfter, refuseAfter: l.AuthRefuseAfter, window: l.AuthWindow.D(), now: time.Now}
}

// state returns the delay to impose before answering and whether AUTH is
// refused outright.
func (t *authThrottle) state(ip netip.Addr) (time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.fails[ip]
	if f == nil {
		return 0, false
	}
	if t.now().Sub(f.last) > t.window {
		delete(t.fails, ip)
		return 0, false
	}
	if f.n >= t.refuseAfter {
		return 0, true
	}
	if f.n >= t.slowAfter {
		return min(time.Duration(f.n-t.slowAfter+1)*time.Second, 5*time.Second), false
	}
	return 0, false
}

func (t *authThrottle) failed(ip netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	f := t.fails[ip]
	if f == nil || now.Sub(f.last) > t.window {
		f = &authFails{}
		t.fails[ip] = f
	}
	f.n++
	f.last = now
	if len(t.fails) > 100000 { // bound memory under a distributed attack
		for k, v := range t.fails {
			if now.Sub(v.last) > t.window {
				delete(t.fails, k)
			}
		}
	}
}

func (t *authThrottle) succeeded(ip netip.Addr) {
	t.mu.Lock()
	delete(t.fails, ip)
	t.mu.Unlock()
}
