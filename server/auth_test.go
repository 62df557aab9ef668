package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"
)

// dialFrom connects to the relay's plain listener from the loopback
// address src (any of 127.0.0.0/8), so that one test plays several
// clients.
func (r *relay) dialFrom(t *testing.T, src string) *smtp.Client {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	conn, err := d.Dial("tcp", r.addrs["plain"])
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClient(conn)
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	return c
}

func authCode(err error) int {
	if err == nil {
		return 235
	}
	code, _, _ := smtpCode(err)
	return code
}

// tuneThrottle shortens the throttle's delays; the function it returns
// lists the delays served so far.
func tuneThrottle(th *authThrottle, unit, maxDelay time.Duration) func() []time.Duration {
	var mu sync.Mutex
	var slept []time.Duration
	th.mu.Lock()
	defer th.mu.Unlock()
	th.unit, th.maxDelay = unit, maxDelay
	th.sleep = func(d time.Duration) {
		mu.Lock()
		slept = append(slept, d)
		mu.Unlock()
		time.Sleep(d)
	}
	return func() []time.Duration {
		mu.Lock()
		defer mu.Unlock()
		return append([]time.Duration(nil), slept...)
	}
}

// authConfig is testConfig with AUTH on the plain listener (loopback
// clients, allow_insecure_auth) and room for many connections from one
// address.
func authConfig(t *testing.T, slowAfter, refuseAfter int) *Config {
	cfg := testConfig(t, newSink(t))
	cfg.AllowInsecureAuth = true
	cfg.Limits.AuthSlowAfter, cfg.Limits.AuthRefuseAfter = slowAfter, refuseAfter
	cfg.Limits.MaxConnectionsPerIP = 100
	return cfg
}

// 40 wrong passwords sent at once from one address: exactly
// auth_refuse_after of them are checked, the rest answer 454 4.7.0.
func TestAuthParallelGuessesRefused(t *testing.T) {
	const refuseAfter, clients = 10, 40
	r := startRelay(t, authConfig(t, 100, refuseAfter), testRules)
	cs := make([]*smtp.Client, clients)
	for i := range cs {
		cs[i] = r.dialFrom(t, "127.0.0.1")
	}
	start := make(chan struct{})
	codes := make(chan int, clients)
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() {
			<-start
			codes <- authCode(c.Auth(sasl.NewPlainClient("", "ops", "guess")))
		})
	}
	close(start)
	wg.Wait()
	close(codes)
	n := map[int]int{}
	for c := range codes {
		n[c]++
	}
	if n[535] != refuseAfter || n[454] != clients-refuseAfter {
		t.Errorf("answers %v, want %d × 535 and %d × 454", n, refuseAfter, clients-refuseAfter)
	}
	if err := r.dialFrom(t, "127.0.0.1").Auth(plainAuth("ops")); authCode(err) != 454 {
		t.Errorf("the right password from the refused address: %v, want 454", err)
	}
	if err := r.dialFrom(t, "127.0.0.2").Auth(plainAuth("ops")); err != nil {
		t.Errorf("the user from another address: %v", err)
	}
}

// An attacker who owns one account (ops) logs into it between guesses at
// another (billing): the guesses at billing still add up to the limit. A
// user's own typos are forgiven by its success.
func TestAuthSuccessKeepsOtherFailures(t *testing.T) {
	r := startRelay(t, authConfig(t, 100, 5), testRules)
	c := r.dialFrom(t, "127.0.0.1")
	for i := range 4 {
		if err := c.Auth(sasl.NewPlainClient("", "billing", fmt.Sprint("guess", i))); authCode(err) != 535 {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	login(t, r.dialFrom(t, "127.0.0.1"), "ops")
	c = r.dialFrom(t, "127.0.0.1")
	if err := c.Auth(sasl.NewPlainClient("", "billing", "guess4")); authCode(err) != 535 {
		t.Fatalf("guess 4: %v", err)
	}
	if err := c.Auth(sasl.NewPlainClient("", "billing", "guess5")); authCode(err) != 454 {
		t.Errorf("guess 5, after the attacker's own success: %v, want 454", err)
	}

	// ops mistypes 3 times, then logs in: those 3 are forgotten, so 4
	// later failures (of anyone's) from the address stay under the limit.
	c = r.dialFrom(t, "127.0.0.3")
	for range 3 {
		c.Auth(sasl.NewPlainClient("", "ops", "typo"))
	}
	login(t, c, "ops")
	c = r.dialFrom(t, "127.0.0.3")
	for i := range 4 {
		if err := c.Auth(sasl.NewPlainClient("", "billing", "x")); authCode(err) != 535 {
			t.Errorf("failure %d after the typos were forgiven: %v, want 535", i+1, err)
		}
	}
}

// Guesses at one user from many addresses slow that user's AUTH down
// (doubling, capped) but never refuse it: the real user still logs in.
func TestAuthUserDelayNoLockout(t *testing.T) {
	const unit, maxDelay = 20 * time.Millisecond, 160 * time.Millisecond
	r := startRelay(t, authConfig(t, 2, 3), testRules)
	slept := tuneThrottle(r.srv.throttle.Load(), unit, maxDelay)
	for i := range 6 {
		c := r.dialFrom(t, fmt.Sprintf("127.0.0.%d", 10+i))
		for j := range 2 { // under the address's own limits
			if err := c.Auth(sasl.NewPlainClient("", "billing", fmt.Sprint("guess", i, j))); authCode(err) != 535 {
				t.Fatalf("guess %d.%d: %v", i, j, err)
			}
		}
	}
	// 12 failures against billing: 0 and 1 cost nothing, then 20ms,
	// 40ms, 80ms and 160ms (the cap) for the rest.
	want := []time.Duration{20, 40, 80, 160, 160, 160, 160, 160, 160, 160}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if got := slept(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("delays %v, want %v", got, want)
	}
	start := time.Now()
	if err := r.dialFrom(t, "127.0.0.2").Auth(plainAuth("billing")); err != nil {
		t.Fatalf("the real user is locked out: %v", err)
	}
	if d := time.Since(start); d < maxDelay {
		t.Errorf("the real user's AUTH took %v, want at least the capped delay %v", d, maxDelay)
	}
	// Another user is not slowed down by the guesses at billing.
	n := len(slept())
	login(t, r.dialFrom(t, "127.0.0.3"), "ops")
	if got := slept(); len(got) != n {
		t.Errorf("ops was delayed: %v", got[n:])
	}
}

// writeAuthConfig writes a config file for the reload tests; users maps a
// user of account acme to its password hash.
func writeAuthConfig(t *testing.T, path string, cfg *Config, disabled bool, users map[string]string) {
	t.Helper()
	s := fmt.Sprintf(`hostname: relay.test
allow_insecure_auth: true
state_dir: %s
rules_dir: %s
limits: {auth_slow_after: 100, auth_refuse_after: 3}
delivery: {mode: smarthost, smarthost: {addr: "%s", tls: none}}
accounts:
  - name: acme
    disabled: %v
    domains: [acme.test, acme-mail.test]
    users:
`, cfg.StateDir, cfg.RulesDir, cfg.Delivery.Smarthost.Addr, disabled)
	for name, hash := range users {
		s += fmt.Sprintf("      - {name: %s, password_hash: %q, sender_domains: account}\n", name, hash)
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startReloadable is startRelay with a config file that ReloadConfig
// reads, as `sluice serve --config` has it.
func startReloadable(t *testing.T, users map[string]string) (r *relay, reload func(disabled bool, users map[string]string)) {
	t.Helper()
	cfg := authConfig(t, 100, 3)
	r = startRelay(t, cfg, testRules)
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	r.srv.cfgPath = path // read by ReloadConfig only, on this goroutine
	reload = func(disabled bool, users map[string]string) {
		t.Helper()
		writeAuthConfig(t, path, cfg, disabled, users)
		if err := r.srv.ReloadConfig(); err != nil {
			t.Fatal(err)
		}
	}
	reload(false, users)
	return r, reload
}

// A config reload keeps the failures counted so far.
func TestAuthReloadKeepsFailures(t *testing.T) {
	users := map[string]string{"ops": testHash}
	r, reload := startReloadable(t, users)
	c := r.dialFrom(t, "127.0.0.5")
	for range 3 {
		c.Auth(sasl.NewPlainClient("", "ops", "guess"))
	}
	reload(false, map[string]string{"ops": testHash, "billing": testHash})
	if err := c.Auth(sasl.NewPlainClient("", "ops", "guess")); authCode(err) != 454 {
		t.Errorf("a guesser after a reload: %v, want 454 (the reload forgave its failures)", err)
	}
}

// A reload that disables an account, removes a user or changes a
// password takes effect at the next MAIL of sessions that authenticated
// before it.
func TestAuthConfigReloadOnOpenSession(t *testing.T) {
	users := map[string]string{"ops": testHash, "billing": testHash}
	r, reload := startReloadable(t, users)
	ops, billing := r.dialFrom(t, "127.0.0.1"), r.dialFrom(t, "127.0.0.1")
	login(t, ops, "ops")
	login(t, billing, "billing")
	msg := message("app@acme.test", "bob@example.org", "hello")
	if _, err := send(ops, "app@acme.test", []string{"bob@example.org"}, msg); err != nil {
		t.Fatalf("before the reload: %v", err)
	}
	reload(true, users)
	_, err := send(ops, "app@acme.test", []string{"bob@example.org"}, msg)
	if code, enh, _ := smtpCode(err); code != 550 || enh != "5.7.1" {
		t.Errorf("MAIL of a session whose account a reload disabled: %v, want 550 5.7.1", err)
	}

	newHash, err := bcrypt.GenerateFromPassword([]byte("new password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	reload(false, map[string]string{"billing": string(newHash)})
	for name, c := range map[string]*smtp.Client{"removed user": ops, "user whose password changed": billing} {
		_, err := send(c, "app@acme.test", []string{"bob@example.org"}, msg)
		if code, enh, _ := smtpCode(err); code != 530 || enh != "5.7.0" {
			t.Errorf("MAIL of a %s: %v, want 530 5.7.0", name, err)
		}
	}
	c := r.dialFrom(t, "127.0.0.2")
	if err := c.Auth(sasl.NewPlainClient("", "billing", "new password")); err != nil {
		t.Fatalf("AUTH with the new password: %v", err)
	}
	if _, err := send(c, "app@acme.test", []string{"bob@example.org"}, msg); err != nil {
		t.Errorf("a new session with the new password: %v", err)
	}
}

// Every failed check does bcrypt work of the config's highest cost,
// whatever the name: 2^cost rounds in all, in one compare or several.
func TestAuthEqualWork(t *testing.T) {
	hash6, err := bcrypt.GenerateFromPassword([]byte(testPassword), 6)
	if err != nil {
		t.Fatal(err)
	}
	c := &Config{Accounts: []Account{{Name: "a", Users: []User{
		{Name: "old", PasswordHash: testHash}, // cost 4
		{Name: "new", PasswordHash: string(hash6)},
		{Name: "broken", PasswordHash: "$2a$06$short"},
	}}}}
	if err := c.finish(); err != nil {
		t.Fatal(err)
	}
	var costs []int
	c.pw.compare = func(hash, pw []byte) error {
		k, err := bcrypt.Cost(hash)
		if err != nil {
			t.Errorf("compared against a hash that does not parse: %q", hash)
		}
		costs = append(costs, k)
		return bcrypt.CompareHashAndPassword(hash, pw)
	}
	work := func() (w int) {
		for _, k := range costs {
			w += 1 << k
		}
		return w
	}
	for _, name := range []string{"nobody", "old", "new", "broken"} {
		costs = nil
		if _, ok := c.authenticate(name, "wrong"); ok {
			t.Fatalf("%s: a wrong password passed", name)
		}
		if work() != 1<<6 {
			t.Errorf("%s, wrong password: compared at costs %v (work %d), want work %d", name, costs, work(), 1<<6)
		}
	}
	for _, name := range []string{"old", "new"} {
		costs = nil
		if _, ok := c.authenticate(name, testPassword); !ok {
			t.Errorf("%s: the right password failed (costs %v)", name, costs)
		}
	}
}

// A dummy hash costs a full bcrypt of its cost and matches no password.
func TestDummyHash(t *testing.T) {
	for _, k := range []int{bcrypt.MinCost, 5, bcrypt.DefaultCost, bcrypt.MaxCost} {
		if got, err := bcrypt.Cost(dummyHash(k)); err != nil || got != k {
			t.Errorf("dummyHash(%d) has cost %d, %v", k, got, err)
		}
	}
	for _, pw := range []string{"", "x", testPassword} {
		if err := bcrypt.CompareHashAndPassword(dummyHash(bcrypt.MinCost), []byte(pw)); !errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			t.Errorf("dummy hash against %q: %v, want a mismatch (after the full computation)", pw, err)
		}
	}
}

// The throttle's arithmetic on a fake clock: per-address delay and
// refusal, the window, IPv6 /64s, per-name delays, bounded tables.
func TestAuthThrottleWindow(t *testing.T) {
	th := newAuthThrottle(Limits{AuthSlowAfter: 2, AuthRefuseAfter: 4, AuthWindow: Duration(time.Minute)})
	now := time.Unix(1_800_000_000, 0)
	th.now = func() time.Time { return now }
	fail := func(ip, name string) (time.Duration, error) {
		at, err := th.begin(mustAddr(ip), name)
		if err != nil {
			return 0, err
		}
		at.end(false)
		return at.delay, nil
	}
	// Each failure against a new name: only the address's count matters.
	for i, want := range []time.Duration{0, 0, time.Second, 2 * time.Second} {
		if d, err := fail("192.0.2.9", fmt.Sprint("user", i)); d != want || err != nil {
			t.Errorf("after %d failures: delay %v %v, want %v", i, d, err, want)
		}
	}
	if _, err := fail("192.0.2.9", "user9"); err != errAuthThrottled || !th.refused(mustAddr("192.0.2.9")) {
		t.Errorf("after 4 failures: %v, want refused", err)
	}
	now = now.Add(2 * time.Minute)
	if th.refused(mustAddr("192.0.2.9")) {
		t.Error("the window passed but the address is still refused")
	}
	if d, err := fail("192.0.2.9", "user10"); d != 0 || err != nil {
		t.Errorf("after the window: %v %v", d, err)
	}

	// One IPv6 client's /64 is one address.
	for i := range 4 {
		fail(fmt.Sprintf("2001:db8::%x", i+1), fmt.Sprint("v", i))
	}
	if !th.refused(mustAddr("2001:db8::ffff:1")) || th.refused(mustAddr("2001:db8:0:1::1")) {
		t.Error("IPv6 failures not counted per /64")
	}

	// A name's failures from many addresses double its delay, up to 5s.
	var got []time.Duration
	for i := range 8 {
		d, err := fail(fmt.Sprintf("198.51.100.%d", i), "alice")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, d)
	}
	if want := "[0s 0s 1s 2s 4s 5s 5s 5s]"; fmt.Sprint(got) != want {
		t.Errorf("delays for alice %v, want %s", got, want)
	}
	// A check in flight counts for the next attempt at the same name.
	at, _ := th.begin(mustAddr("198.51.100.100"), "bob")
	at2, _ := th.begin(mustAddr("198.51.100.101"), "bob")
	at3, _ := th.begin(mustAddr("198.51.100.102"), "bob")
	if at3.delay != time.Second {
		t.Errorf("third parallel attempt at bob: delay %v, want 1s", at3.delay)
	}
	at.end(true)
	at2.end(true)
	at3.end(true)

	// Tables stay bounded: past maxEntries live records, new addresses and
	// names go uncounted rather than grow them.
	small := newAuthThrottle(Limits{AuthSlowAfter: 2, AuthRefuseAfter: 4, AuthWindow: Duration(time.Minute)})
	small.maxEntries = 10
	for i := range 50 {
		at, err := small.begin(mustAddr(fmt.Sprintf("203.0.113.%d", i)), fmt.Sprint("n", i))
		if err != nil {
			t.Fatal(err)
		}
		at.end(false)
	}
	if len(small.addrs) > 10 || len(small.names) > 10 {
		t.Errorf("tables grew to %d addresses, %d names", len(small.addrs), len(small.names))
	}
}
