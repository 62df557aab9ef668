package queue

import (
	"strings"
	"sync"
	"time"

	"github.com/sluicemail/sluice/builtins"
)

// Recipient verification, as Postfix's reject_unverified_recipient: the
// relay asks whether the next hop takes an address (EHLO, MAIL FROM:<>,
// RCPT TO, QUIT) before it answers RCPT. Answers are cached: an accepted
// address for verifyPositiveTTL, a refused one for verifyNegativeTTL; a
// next hop that does not answer, or answers 4xx, is not cached.
type verifyCache struct {
	mu sync.Mutex
	m  map[string]verifyEntry
}

type verifyEntry struct {
	res   Result
	until time.Time
}

const (
	verifyPositiveTTL = 24 * time.Hour
	verifyNegativeTTL = time.Hour
	verifyMaxEntries  = 100_000
)

func (v *verifyCache) get(addr string, now time.Time) (Result, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.m[addr]
	if !ok || now.After(e.until) {
		return Result{}, false
	}
	return e.res, true
}

func (v *verifyCache) put(addr string, res Result, until time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil || len(v.m) >= verifyMaxEntries {
		v.m = map[string]verifyEntry{} // start over rather than grow without bound
	}
	v.m[addr] = verifyEntry{res, until}
}

// Verify asks the next hop whether it takes rcpt, within seconds, from
// the cache when it answered lately. A probe runs on a connection of its
// own, never a pooled one: its short timeouts are not delivery's.
func (d *Deliverer) Verify(rcpt string) (res Result, cached bool) {
	addr := strings.ToLower(rcpt)
	now := d.now()
	if res, ok := d.verified.get(addr, now); ok {
		return res, true
	}
	cfg := d.relay.DeliveryConfig()
	out := map[string]Result{}
	rcpts := []string{rcpt}
	switch cfg.Mode {
	case "smarthost":
		sh := cfg.Smarthost
		d.probe(cfg, route{addr: sh.Addr, tls: sh.TLS, insecure: sh.InsecureSkipVerify, user: sh.Username, pass: sh.Password}, rcpt, out)
	case "mx":
		d.routeMX(cfg, builtins.Domain(rcpt), rcpts, out, func(rt route, o map[string]Result) { d.probe(cfg, rt, rcpt, o) })
	default:
		return Result{OK: true, Code: 250, Remote: "local"}, false
	}
	res = out[rcpt]
	switch {
	case res.OK:
		d.verified.put(addr, res, now.Add(verifyPositiveTTL))
	case res.Perm:
		d.verified.put(addr, res, now.Add(verifyNegativeTTL))
	}
	return res, false
}

// probe asks rt about rcpt with the null sender and no DATA.
func (d *Deliverer) probe(cfg *DeliveryConfig, rt route, rcpt string, out map[string]Result) {
	c, res := d.dial(cfg, rt, probeTimeout)
	if c == nil {
		out[rcpt] = res
		return
	}
	defer c.Close()
	if err := c.Mail("", nil); err != nil {
		r := smtpResult(err, "MAIL FROM")
		r.Remote = rt.addr
		out[rcpt] = r
		return
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		r := smtpResult(err, "RCPT TO")
		r.Remote = rt.addr
		out[rcpt] = r
		return
	}
	out[rcpt] = Result{OK: true, Code: 250, Enhanced: "2.1.5", Detail: "recipient accepted", Remote: rt.addr}
	c.Quit()
}
