package server

import (
	"fmt"
	"sync"

	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"
)

// passwordWork makes every failed password check cost the same bcrypt
// work, whoever the name is: a known user, an unknown name, or a user
// whose hash has a lower cost than the others' (an old hash, made before
// the cost went up). Otherwise the time of a 535 tells which names exist.
type passwordWork struct {
	once sync.Once
	cost int // the highest cost among the config's hashes
	// compare is bcrypt.CompareHashAndPassword; tests record the calls.
	compare func(hash, password []byte) error
}

// dummySalt and dummyDigest make a bcrypt hash that no password matches:
// the digest was not computed from any password. Comparing against it
// costs what checking a real hash of the same cost does.
const (
	dummySalt   = "meAX0AV6c2i4XVjx36D0eO"
	dummyDigest = "sluicedummysluicedummysluicedum"
)

func dummyHash(cost int) []byte {
	return fmt.Appendf(nil, "$2a$%02d$%s%s", cost, dummySalt, dummyDigest)
}

// checkPassword reports whether password is u's (u nil: an unknown name).
// A failure always costs 2^cost of bcrypt's rounds, cost being the
// config's highest: an unknown name (or a hash that does not parse) is
// compared against a dummy hash of that cost; a user whose hash has a
// lower cost c is compared against it, then against dummy hashes of costs
// c, c+1, ... cost-1, since 2^c + 2^c + 2^(c+1) + ... + 2^(cost-1) =
// 2^cost (up to bcrypt's fixed set-up, a few rounds' worth per compare).
// A success needs no padding: the 235 says as much as its time.
func (c *Config) checkPassword(u *User, password string) bool {
	w := &c.pw
	w.once.Do(func() {
		w.cost = 0
		for _, u := range c.users {
			if k, err := bcrypt.Cost([]byte(u.PasswordHash)); err == nil {
				w.cost = max(w.cost, k)
			}
		}
		if w.cost == 0 {
			w.cost = bcrypt.DefaultCost
		}
	})
	compare := w.compare
	if compare == nil {
		compare = bcrypt.CompareHashAndPassword
	}
	pw := []byte(password)
	if u != nil {
		hash := []byte(u.PasswordHash)
		if k, err := bcrypt.Cost(hash); err == nil && k <= w.cost {
			if compare(hash, pw) == nil {
				return true
			}
			for ; k < w.cost; k++ {
				compare(dummyHash(k), pw)
			}
			return false
		}
	}
	compare(dummyHash(w.cost), pw)
	return false
}

// liveUser is the session's user as the live config has it, looked up
// by name at each MAIL: a reload since AUTH may have disabled its account
// (the caller's 550 applies to what this returns), removed the user, or
// changed its password. The last two answer 530: the session's
// credentials are no longer valid ones, and the client must log in again
// (on a new connection: RFC 4954 4 allows one successful AUTH per session).
func (s *Server) liveUser(ci *connInfo, old *User, from, id string) (*User, error) {
	u := s.cfg.Load().users[old.Name]
	if u != nil && u.PasswordHash == old.PasswordHash {
		return u, nil
	}
	reason := "user removed from the config"
	if u != nil {
		reason = "password changed since AUTH"
	}
	s.log.Info("decision", "id", id, "phase", "mail", "action", "reject", "code", 530, "user", old.Name, "mail_from", from, "reason", reason)
	s.recordDecision(Decision{ID: id, User: old.Name, IP: ci.in.ClientIP, Helo: ci.in.Helo, From: from, Phase: "mail",
		Action: "reject", Code: 530, Enhanced: "5.7.0", Text: "Authentication required (" + reason + ")"})
	return nil, &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: replyText("Authentication required", id)}
}
