package server

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadConfigDefaults(t *testing.T) {
	c, err := LoadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen[0].Addr != "127.0.0.1:2525" || c.Delivery.Mode != "local" || c.Delivery.LocalDir != filepath.Join("sluice-state", "mail") || c.RulesDir != "rules.d" {
		t.Errorf("embedded default: %+v", c)
	}
	if !c.mayRelayFrom(mustAddr("127.0.0.1")) || !c.mayRelayFrom(mustAddr("::1")) || c.mayRelayFrom(mustAddr("192.0.2.1")) {
		t.Error("the default relays for loopback only")
	}
	if c.Delivery.MaxAge.D() != 5*24*time.Hour || len(c.Delivery.Retry) != len(DefaultRetry) {
		t.Errorf("retry defaults: %v %v", c.Delivery.MaxAge.D(), c.Delivery.Retry)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	tests := map[string]string{
		"listen: [{addr: ':25', mode: smtp}]\n": `mode "smtp": want plain, submission or tls`,
		"acounts: []\n":                         "field acounts not found",
		"accounts: [{name: a, users: [{name: u, password_hash: hunter2}]}]\n": "must be a bcrypt hash",
		"delivery: {mode: smarthost}\n":                                       "needs smarthost.addr",
		"relay_networks: [10.0.0.0/33]\n":                                     "not an address or CIDR",
		"delivery: {max_age: soon}\n":                                         "want e.g. 30s, 5m, 4h, 5d",
		"accounts: [{name: a, domains: [a.test], users: [{name: u, password_hash: $2a$x, domains: [b.test]}]}]\n": "domain b.test is not a verified domain",
	}
	for src, want := range tests {
		p := filepath.Join(t.TempDir(), "c.yaml")
		os.WriteFile(p, []byte(src), 0o644)
		_, err := LoadConfig(p)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), p+": ") {
			t.Errorf("%q: %v, want %q", src, err, want)
		}
	}
}

func TestSenderDomainModes(t *testing.T) {
	acct := &Account{Name: "a", Domains: []string{"a.test", "b.test"}}
	for _, tt := range []struct {
		mode, domain string
		want         bool
	}{
		{"assigned", "a.test", true},
		{"assigned", "mail.a.test", true},
		{"assigned", "b.test", false},
		{"assigned", "xa.test", false},
		{"account", "b.test", true},
		{"account", "c.test", false},
		{"any", "c.test", true},
		{"any", "", false},
	} {
		u := &User{Name: "u", Domains: []string{"a.test"}, SenderDomains: tt.mode, account: acct}
		if got := u.mayUseDomain(tt.domain); got != tt.want {
			t.Errorf("%s may use %q: %v, want %v", tt.mode, tt.domain, got, tt.want)
		}
	}
}

func TestLoginServer(t *testing.T) {
	var gotUser, gotPass string
	s := newLoginServer(func(u, p string) error { gotUser, gotPass = u, p; return nil })
	ch, done, err := s.Next(nil)
	if string(ch) != "Username:" || done || err != nil {
		t.Fatalf("first challenge %q %v %v", ch, done, err)
	}
	ch, done, _ = s.Next([]byte("alice"))
	if string(ch) != "Password:" || done {
		t.Fatalf("second challenge %q", ch)
	}
	if _, done, err = s.Next([]byte("pw")); !done || err != nil || gotUser != "alice" || gotPass != "pw" {
		t.Errorf("final: %v %v %q %q", done, err, gotUser, gotPass)
	}
	if _, _, err := s.Next([]byte("more")); err == nil {
		t.Error("a fourth step must fail")
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestAuthCache(t *testing.T) {
	c := &Config{Accounts: []Account{{Name: "a", Users: []User{{Name: "u", PasswordHash: testHash}}}}}
	if err := c.finish(); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.authenticate("u", testPassword); !ok {
		t.Fatal("right password refused")
	}
	if _, ok := c.authenticate("u", testPassword); !ok {
		t.Fatal("right password refused from the cache")
	}
	if _, ok := c.authenticate("u", "wrong"); ok {
		t.Fatal("a wrong password passed after a cached success")
	}
	if _, ok := c.authenticate("v", testPassword); ok {
		t.Fatal("an unknown user passed")
	}
	c.authCache.m["u"] = authEntry{mac: credMAC("u", testPassword), at: time.Now().Add(-authCacheTTL)}
	if c.authCache.hit("u", credMAC("u", testPassword), time.Now()) {
		t.Error("an expired entry hit")
	}
}

func TestExampleConfigLoads(t *testing.T) {
	c, err := LoadConfig("../examples/sluice.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Listen) != 3 || c.Delivery.Mode != "mx" || len(c.users) != 3 || !c.users["shop"].account.Disabled {
		t.Errorf("example config read as %+v", c)
	}
	if c.Delivery.InboundBounces != "none" || c.Delivery.RescanInterval.D() != 2*time.Second {
		t.Errorf("example delivery read as %+v", c.Delivery)
	}
	if c.Spool.SegmentBytes != 64<<20 {
		t.Errorf("example spool read as %+v", c.Spool)
	}
}

func TestInboundBouncesValues(t *testing.T) {
	for v, ok := range map[string]bool{"": true, "none": true, "headers": true, "full": false} {
		c := &Config{StateDir: t.TempDir(), Delivery: Delivery{InboundBounces: v}}
		if err := c.finish(); (err == nil) != ok {
			t.Errorf("inbound_bounces %q: %v", v, err)
		}
	}
}

func TestSpoolSegmentBytes(t *testing.T) {
	for v, want := range map[int64]int64{0: 64 << 20, 16 << 10: 16 << 10, 1 << 30: 1 << 30, 4096: -1, -1: -1} {
		c := &Config{StateDir: t.TempDir(), Spool: SpoolConfig{SegmentBytes: v}}
		err := c.finish()
		if want < 0 {
			if err == nil || !strings.Contains(err.Error(), "spool.segment_bytes") {
				t.Errorf("segment_bytes %d: %v", v, err)
			}
		} else if err != nil || c.Spool.SegmentBytes != want {
			t.Errorf("segment_bytes %d: %d, %v", v, c.Spool.SegmentBytes, err)
		}
	}
}

// TestConfigPathsRelativeToFile: a command run from another directory
// must reach the same state, rules and certificates as the relay.
func TestConfigPathsRelativeToFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "etc", "sluice.yaml")
	os.MkdirAll(filepath.Dir(p), 0o755)
	os.WriteFile(p, []byte("state_dir: state\nrules_dir: ../rules.d\ntls: {cert: tls/c.pem, key: /abs/k.pem}\ndelivery: {mode: local, local_dir: mail}\n"), 0o644)
	cwd := t.TempDir()
	t.Chdir(cwd)
	rel, err := filepath.Rel(cwd, p)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{p, rel} {
		c, err := LoadConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		etc := filepath.Join(dir, "etc")
		for _, gw := range [][2]string{
			{c.StateDir, filepath.Join(etc, "state")},
			{c.RulesDir, filepath.Join(dir, "rules.d")},
			{c.TLS.Cert, filepath.Join(etc, "tls", "c.pem")},
			{c.TLS.Key, "/abs/k.pem"},
			{c.Delivery.LocalDir, filepath.Join(etc, "mail")},
			{c.Store.Path, filepath.Join(etc, "state", "store")},
		} {
			if got, want := gw[0], gw[1]; got != want {
				t.Errorf("%s: got %s, want %s", path, got, want)
			}
		}
	}
	os.WriteFile(p, []byte("hostname: relay.test\n"), 0o644)
	c, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != filepath.Join(dir, "etc", "sluice-state") || c.RulesDir != filepath.Join(dir, "etc", "rules.d") {
		t.Errorf("defaults of a config file are next to it: %s %s", c.StateDir, c.RulesDir)
	}
}
