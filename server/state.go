package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluicemail/sluice/builtins"
	"github.com/sluicemail/sluice/engine"
	"github.com/sluicemail/sluice/queue"
	"github.com/sluicemail/sluice/store"
)

// StoreConfig chooses where counters and lists live.
type StoreConfig struct {
	// Kind is "embedded" (default: a Pebble database in Path) or "redis"
	// (several relays sharing one state).
	Kind  string      `yaml:"kind"`
	Path  string      `yaml:"path"` // default state_dir/store
	Redis RedisConfig `yaml:"redis"`
	// OnFailure is what a rule that needs state gets when the store does
	// not answer: "tempfail" (default: the message is refused with 451
	// 4.3.0 and the client retries; a count is never read as zero) or
	// "allow" (counters read as 0 and lists as empty, logged).
	OnFailure string `yaml:"on_failure"`
}

// RedisConfig names the Redis server(s).
type RedisConfig struct {
	Addrs    []string `yaml:"addrs"`
	Username string   `yaml:"username"`
	Password string   `yaml:"password"`
	DB       int      `yaml:"db"`
	Timeout  Duration `yaml:"timeout"`
}

func (c *Config) finishStore() error {
	st := &c.Store
	switch st.Kind {
	case "":
		st.Kind = "embedded"
	case "embedded", "redis":
	default:
		return fmt.Errorf("store: kind %q: want embedded or redis", st.Kind)
	}
	if st.Path == "" {
		st.Path = filepath.Join(c.StateDir, "store")
	}
	if st.Kind == "redis" && len(st.Redis.Addrs) == 0 {
		return errors.New("store: kind redis needs redis.addrs")
	}
	switch st.OnFailure {
	case "":
		st.OnFailure = "tempfail"
	case "tempfail", "allow":
	default:
		return fmt.Errorf("store: on_failure %q: want tempfail or allow", st.OnFailure)
	}
	return nil
}

// OpenStore opens the store the config names.
func OpenStore(c *Config) (store.Store, error) {
	if c.Store.Kind == "redis" {
		r := c.Store.Redis
		return store.OpenRedis(store.RedisOptions{Addrs: r.Addrs, Username: r.Username, Password: r.Password, DB: r.DB, Timeout: r.Timeout.D()}), nil
	}
	return store.OpenEmbedded(c.Store.Path)
}

// senderKey names whose sending is counted: the SMTP user, or the client
// address without AUTH.
func senderKey(user, ip string) string {
	if user != "" {
		return "user:" + user
	}
	return "ip:" + ip
}

func counterKey(in *builtins.Input) string { return "sent:" + senderKey(in.SMTPUser, in.ClientIP) }

var sentWindows = []time.Duration{time.Hour, 24 * time.Hour}

// storeTimeout bounds every store call the relay makes, so a store that
// hangs costs a message a 451, not the session.
const storeTimeout = 2 * time.Second

func storeCtx(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, storeTimeout)
}

// degraded applies on_failure to a read that failed: under "allow" it logs
// and reports true, and the caller reads zero or absent; under "tempfail"
// the error stands and the rule that needed the state fails the message
// with 451 4.3.0.
func (s *Server) degraded(err error, what string, kv ...any) bool {
	s.metrics.StoreError("read")
	if s.cfg.Load().Store.OnFailure != "allow" {
		return false
	}
	s.log.Warn("store unavailable: "+what+" (on_failure: allow)", append(kv, "err", err.Error())...)
	return true
}

// counts is Store.Count for the facts: bounded in time, under the failure
// policy (zero counts when degraded).
func (s *Server) counts(parent context.Context, n int, keys []string, windows []time.Duration) ([][]int, error) {
	ctx, cancel := storeCtx(parent)
	defer cancel()
	got, err := s.store.Count(ctx, s.opts.Now(), n, keys, windows)
	if err != nil {
		if !s.degraded(err, "counters read as 0") {
			return nil, err
		}
		got = make([][]int, len(keys))
		for i := range got {
			got[i] = make([]int, len(windows))
		}
	}
	return got, nil
}

// sentCounts reads hourly_sent and daily_sent with one store call per
// message, shared by both facts.
func (s *Server) sentCounts(m *builtins.Message) ([]int, error) {
	in := m.Input()
	ci, _ := in.Session.(*connInfo)
	if ci != nil && ci.countsFor == ci.txn.ID() {
		return ci.counts, nil
	}
	got, err := s.counts(m.Context(), 0, []string{counterKey(in)}, sentWindows)
	if err != nil {
		return nil, err
	}
	if ci != nil {
		ci.countsFor, ci.counts = ci.txn.ID(), got[0]
	}
	return got[0], nil
}

// attempts counts this MAIL FROM and returns the attempts of the last hour,
// refused ones included: what tells sustained abuse (a client that keeps
// sending into a 421) from a burst.
func (s *Server) attempts(m *builtins.Message) (int, error) {
	in := m.Input()
	got, err := s.counts(m.Context(), 1, []string{"attempt:" + senderKey(in.SMTPUser, in.ClientIP)}, []time.Duration{time.Hour})
	if err != nil {
		return 0, err
	}
	return got[0][0], nil
}

// countSent records an accepted message: for its sender, and under every
// count() key the rules asked about (those of refused recipients left
// out), in one store call.
func (s *Server) countSent(ci *connInfo, accepted []string) error {
	keys := []string{counterKey(ci.in)}
	ok := map[string]bool{"": true}
	for _, r := range accepted {
		ok[r] = true
	}
	for k, rcpt := range ci.pending {
		if ok[rcpt] {
			keys = append(keys, k)
		}
	}
	clear(ci.pending)
	ctx, cancel := storeCtx(context.Background())
	defer cancel()
	if _, err := s.store.Count(ctx, s.opts.Now(), 1, keys, nil); err != nil {
		s.metrics.StoreError("write")
		return fmt.Errorf("counting %v: %w", keys, err)
	}
	return nil
}

// Count answers count(counter, key, window) for the session's message and
// remembers the key, to count the message under it once accepted.
func (ci *connInfo) Count(ctx context.Context, counter, key string, window time.Duration) (int, error) {
	k := "count:" + counter + ":" + store.NormalizeKey(key)
	return ci.read(ctx, k, window)
}

func (ci *connInfo) read(ctx context.Context, k string, window time.Duration) (int, error) {
	if ci.pending == nil {
		ci.pending = map[string]string{}
	}
	rcpt := ""
	if ci.txn != nil {
		rcpt = ci.txn.Message().Rcpt()
	}
	ci.pending[k] = rcpt
	got, err := ci.s.counts(ctx, 0, []string{k}, []time.Duration{window})
	if err != nil {
		return 0, err
	}
	return got[0][0], nil
}

// reputation reads counters of the sender's history in one store call.
func (s *Server) reputation(m *builtins.Message, names ...string) ([]int, error) {
	in := m.Input()
	uk := senderKey(in.SMTPUser, in.ClientIP)
	keys := make([]string, len(names))
	for i, n := range names {
		keys[i] = n + ":" + uk
	}
	got, err := s.counts(m.Context(), 0, keys, []time.Duration{24 * time.Hour})
	if err != nil {
		return nil, err
	}
	out := make([]int, len(names))
	for i := range got {
		out[i] = got[i][0]
	}
	return out, nil
}

// plugReputation gives the abuse facts their computation.
func (s *Server) plugReputation() error {
	set := func(name string, f func(m *builtins.Message) (any, error)) error { return s.reg.SetCompute(name, f) }
	return errors.Join(
		set("distinct_senders", func(m *builtins.Message) (any, error) {
			in := m.Input()
			ctx, cancel := storeCtx(m.Context())
			defer cancel()
			n, err := s.store.Distinct(ctx, s.opts.Now(), "senders:"+senderKey(in.SMTPUser, in.ClientIP), in.MailFrom, time.Hour)
			if err != nil && s.degraded(err, "distinct senders read as 0") {
				return 0, nil
			}
			return n, err
		}),
		set("repeated_messages", func(m *builtins.Message) (any, error) {
			fp, err := m.ValueOf("fingerprint")
			if err != nil {
				return nil, err
			}
			in := m.Input()
			ci, _ := in.Session.(*connInfo)
			if ci == nil {
				return 0, nil
			}
			return ci.read(m.Context(), "fp:"+senderKey(in.SMTPUser, in.ClientIP)+":"+fp.(string), time.Hour)
		}),
		set("unknown_recipients", func(m *builtins.Message) (any, error) {
			c, err := s.reputation(m, "unknown_rcpt")
			if err != nil {
				return nil, err
			}
			return c[0], nil
		}),
		set("bounce_rate", func(m *builtins.Message) (any, error) {
			c, err := s.reputation(m, "delivered", "bounced")
			if err != nil {
				return nil, err
			}
			if c[0]+c[1] == 0 {
				return 0.0, nil
			}
			return float64(c[1]) / float64(c[0]+c[1]), nil
		}),
		set("complaint_rate", func(m *builtins.Message) (any, error) {
			c, err := s.reputation(m, "delivered", "complaints")
			if err != nil {
				return nil, err
			}
			return float64(c[1]) / float64(max(c[0], 1)), nil
		}),
	)
}

// deliveryCounters are the sender's counters a recipient's delivery result
// adds to, for its bounce rate and unknown-recipient count.
func deliveryCounters(env *queue.Envelope, res queue.Result) []string {
	if env.Bounce || (!res.OK && !res.Perm) {
		return nil
	}
	uk := senderKey(env.User, env.ClientIP)
	if res.OK {
		return []string{"delivered:" + uk}
	}
	if strings.HasPrefix(res.Enhanced, "5.1.") {
		return []string{"bounced:" + uk, "unknown_rcpt:" + uk}
	}
	return []string{"bounced:" + uk}
}

// countDeliveries adds one to each key (a key may repeat: one per
// recipient), in one store call per attempt.
func (s *Server) countDeliveries(id string, keys []string) {
	if len(keys) == 0 {
		return
	}
	ctx, cancel := storeCtx(context.Background())
	defer cancel()
	if _, err := s.store.Count(ctx, s.opts.Now(), 1, keys, nil); err != nil {
		s.metrics.StoreError("write")
		s.log.Error("store: delivery results not counted", "id", id, "err", err.Error())
	}
}

// storeLists answers in_list for the dynamic lists of a session: the
// system-wide list NAME, and the list NAME:ACCOUNT of the SMTP user's
// account (seed 004's "account's Unsubscribe list").
type storeLists struct {
	s  *Server
	ci *connInfo
}

// accountList is the name of an account's own list.
func accountList(name, account string) string { return name + ":" + account }

func (l storeLists) InList(ctx context.Context, name, value string) (bool, error) {
	if value == "" {
		return false, nil
	}
	ctx, cancel := storeCtx(ctx)
	defer cancel()
	e, err := l.s.store.ListGet(ctx, name, value, l.s.opts.Now())
	if err == nil && e == nil && l.ci != nil && l.ci.in.SMTPUser != "" {
		if u := l.s.cfg.Load().users[l.ci.in.SMTPUser]; u != nil {
			e, err = l.s.store.ListGet(ctx, accountList(name, u.account.Name), value, l.s.opts.Now())
		}
	}
	if err != nil {
		if l.s.degraded(err, "list "+name+" read as empty") {
			return false, nil
		}
		return false, err
	}
	return e != nil, nil
}

// softBounceWindow and softBounceLimit: a recipient that fails temporarily
// this many times within the window goes on the bounce list (seed 004).
const (
	softBounceWindow = 24 * time.Hour
	softBounceLimit  = 3
)

// recordBounce feeds delivery results to the bounce list: a permanent
// failure from the remote side at once, temporary ones after three.
func (s *Server) recordBounce(env *queue.Envelope, r *queue.RcptState, res queue.Result) {
	remote := res.Remote != "" && res.Remote != "local"
	if res.OK || res.Code == 0 || env.Bounce || (!remote && !res.Perm) {
		return // delivered, or a failure (network, DNS, local disk) that says nothing of the address
	}
	ctx, cancel := storeCtx(context.Background())
	defer cancel()
	now := s.opts.Now()
	reason := fmt.Sprintf("%d %s %s", res.Code, res.Enhanced, res.Detail)
	if !res.Perm {
		got, err := s.store.Count(ctx, now, 1, []string{"softbounce:" + r.Addr}, []time.Duration{softBounceWindow})
		if err != nil || got[0][0] < softBounceLimit {
			return
		}
		reason = fmt.Sprintf("%d soft bounces within %s; last: %s", got[0][0], softBounceWindow, reason)
	} else if res.Enhanced != "" && res.Enhanced[2] != '1' {
		return // 5.x.y other than address errors (5.1.x): policy or content, not a dead address
	}
	err := s.store.ListAdd(ctx, store.Entry{List: "bounces", Key: r.Addr, Reason: reason, Source: "delivery of " + env.ID, Added: now})
	if err != nil {
		s.log.Error("store: bounce list", "rcpt", r.Addr, "err", err.Error())
		return
	}
	s.log.Info("bounce list: added", "rcpt", r.Addr, "reason", reason)
}

// applyLists carries out the list actions of the rules that fired (e.g.
// `list blocked_users smtp_user for 7d`), whatever the reply was.
func (s *Server) applyLists(id string, adds []engine.ListAdd) {
	if len(adds) == 0 {
		return
	}
	ctx, cancel := storeCtx(context.Background())
	defer cancel()
	now := s.opts.Now()
	for _, a := range adds {
		e := store.Entry{List: a.List, Key: a.Key, Reason: a.Reason, Source: "rule " + a.Rule + " (decision " + id + ")", Added: now}
		if a.TTL > 0 {
			e.Expires = now.Add(a.TTL)
		}
		if err := s.store.ListAdd(ctx, e); err != nil {
			s.log.Error("store: list action", "list", a.List, "key", a.Key, "rule", a.Rule, "err", err.Error())
			continue
		}
		s.log.Info("list: added", "list", a.List, "key", a.Key, "rule", a.Rule, "id", id, "expires", e.Expires)
	}
}
