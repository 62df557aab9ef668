package server

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/bcrypt"

	"github.com/sluicemail/sluice/mailauth"
	"github.com/sluicemail/sluice/queue"
)

// Config is the relay's configuration file. Every field has a default, so
// an empty file (or none) is the embedded default of SPEC 5: 127.0.0.1 only,
// relaying for loopback clients, state and delivered mail under ./sluice-state.
type Config struct {
	// Hostname is the name in the greeting, Received headers and bounces.
	Hostname string `yaml:"hostname"`
	// Listen holds the listeners. Mode is "plain" (inbound port 25 style,
	// STARTTLS offered), "submission" (STARTTLS, AUTH required to relay) or
	// "tls" (implicit TLS, as on port 465).
	Listen []Listener `yaml:"listen"`
	TLS    TLSConfig  `yaml:"tls"`
	// AllowInsecureAuth offers AUTH without TLS, but only to loopback
	// clients: for local development.
	AllowInsecureAuth bool `yaml:"allow_insecure_auth"`

	StateDir string `yaml:"state_dir"`
	RulesDir string `yaml:"rules_dir"`

	// RelayNetworks may relay without AUTH (Postfix's mynetworks).
	RelayNetworks []string `yaml:"relay_networks"`
	// LocalDomains are the domains this relay takes mail for from anyone.
	LocalDomains []string `yaml:"local_domains"`

	Limits   Limits      `yaml:"limits"`
	Delivery Delivery    `yaml:"delivery"`
	Store    StoreConfig `yaml:"store"`
	Spool    SpoolConfig `yaml:"spool"`
	// Unsubscribe is the RFC 8058 one-click unsubscribe endpoint.
	Unsubscribe UnsubscribeConfig `yaml:"unsubscribe"`
	// Web is the HTTP side: report pages, review requests (SPEC 8).
	Web      WebConfig `yaml:"web"`
	Accounts []Account `yaml:"accounts"`
	// DNS is the resolver of the authentication checks (SPEC 6).
	DNS DNSConfig `yaml:"dns"`
	// OutboundIPs are the addresses the relay sends from, for
	// spf_authorizes_relay.
	OutboundIPs []string `yaml:"outbound_ips"`
	// DKIMSign are the keys outbound mail is signed with, by From domain.
	DKIMSign []DKIMSignConfig `yaml:"dkim_sign"`
	// Classifier is how the relay trains its classifier on its own
	// verdicts (autolearn, off by default).
	Classifier ClassifierConfig `yaml:"classifier"`

	// derived
	outboundIPs []netip.Addr
	signer      *mailauth.Signer
	authCache   authCache
	pw          passwordWork
	relayNets   []netip.Prefix
	users       map[string]*User
	path        string
	checksum    []byte
	// base is the directory of the config file: relative paths in the
	// file (and the defaults derived from them) are relative to it, so a
	// command run from anywhere acts on the same state as the relay.
	base string
}

// WebConfig is the HTTP listener of report pages and review requests
// (SPEC 8); the one-click unsubscribe links are served on it too.
type WebConfig struct {
	// Listen is the public HTTP address (put a TLS proxy in front of it).
	Listen string `yaml:"listen"`
	// AdminListen, when set, serves /metrics and the console, which
	// Listen then does not.
	AdminListen string `yaml:"admin_listen"`
	// PublicURL is the base senders reach Listen by; when set, refusals
	// by a rule or threshold carry a signed link to their report.
	PublicURL string `yaml:"public_url"`
	// LinkKey signs the links; relays sharing a store may leave it empty
	// (a key kept in the store) or must set the same.
	LinkKey string `yaml:"link_key"`
	// ReportDays is how long a link works after the decision (default 30,
	// as long as decision records are kept).
	ReportDays int `yaml:"report_days"`
	// PublicFacts are the facts a report page shows of a rule's evidence
	// (default: web.DefaultPublicFacts, none naming addresses or lists).
	PublicFacts []string `yaml:"public_facts"`
	// Admins may log in to the console; without any the console is off.
	Admins []WebAdmin `yaml:"admins"`
	// TrustedProxies are the addresses (CIDR or IP) of TLS proxies whose
	// X-Forwarded-Proto: https marks the session cookie Secure and whose
	// X-Forwarded-For names the client that login throttling counts.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// AllowList is the list a review's "allow" adds the sender to
	// (default "allow").
	AllowList string `yaml:"allow_list"`

	trustedProxies []netip.Prefix
}

// WebAdmin is an operator of the console; PasswordHash is a bcrypt hash
// (`sluice passwd`).
type WebAdmin struct {
	Name         string `yaml:"name"`
	PasswordHash string `yaml:"password_hash"`
}

func (w *WebConfig) finish() error {
	seen := map[string]bool{}
	for _, a := range w.Admins {
		if a.Name == "" || seen[a.Name] {
			return fmt.Errorf("web.admins: name %q empty or repeated", a.Name)
		}
		seen[a.Name] = true
		if _, err := bcrypt.Cost([]byte(a.PasswordHash)); err != nil {
			return fmt.Errorf("web.admins %s: password_hash is not a bcrypt hash (sluice passwd makes one)", a.Name)
		}
	}
	if len(w.Admins) > 0 && w.Listen == "" && w.AdminListen == "" {
		return errors.New("web.admins: the console needs web.listen or web.admin_listen")
	}
	if w.AllowList == "" {
		w.AllowList = "allow"
	}
	w.trustedProxies = nil
	for _, p := range w.TrustedProxies {
		pf, err := netip.ParsePrefix(p)
		if err != nil {
			a, err2 := netip.ParseAddr(p)
			if err2 != nil {
				return fmt.Errorf("web.trusted_proxies %q: want an address or CIDR prefix", p)
			}
			pf = netip.PrefixFrom(a, a.BitLen())
		}
		w.trustedProxies = append(w.trustedProxies, pf)
	}
	if w.PublicURL != "" && w.Listen == "" {
		return errors.New("web: public_url needs listen, the address report pages are served on")
	}
	if w.PublicURL != "" && !strings.HasPrefix(w.PublicURL, "https://") && !strings.HasPrefix(w.PublicURL, "http://") {
		return fmt.Errorf("web.public_url %q: want an http:// or https:// URL", w.PublicURL)
	}
	w.PublicURL = strings.TrimSuffix(w.PublicURL, "/")
	if w.ReportDays < 0 {
		return errors.New("web.report_days: want a number of days")
	}
	setDefault(&w.ReportDays, 30)
	return nil
}

// DNSConfig is the resolver for checks.
type DNSConfig struct {
	Servers []string `yaml:"servers"` // host:port; default: the system's (/etc/resolv.conf)
	Timeout Duration `yaml:"timeout"` // per lookup, default 2s
}

// DKIMSignConfig is one signing key.
type DKIMSignConfig struct {
	Domain   string `yaml:"domain"`
	Selector string `yaml:"selector"`
	Key      string `yaml:"key"` // PEM file: RSA (>= 1024 bits) or Ed25519
}

// Listener is one listening socket.
type Listener struct {
	Addr string `yaml:"addr"`
	Mode string `yaml:"mode"` // plain, submission, tls
}

// TLSConfig names a certificate; without one the relay makes a self-signed
// certificate in its state directory, so STARTTLS works out of the box.
type TLSConfig struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Limits bound what one client may take of the relay.
type Limits struct {
	MaxMessageBytes     int64    `yaml:"max_message_bytes"`
	MaxRecipients       int      `yaml:"max_recipients"`
	MaxLineLength       int      `yaml:"max_line_length"`
	CommandTimeout      Duration `yaml:"command_timeout"`
	DataTimeout         Duration `yaml:"data_timeout"`
	MaxConnections      int      `yaml:"max_connections"`
	MaxConnectionsPerIP int      `yaml:"max_connections_per_ip"`
	// After AuthSlowAfter failures from one IP within AuthWindow, each
	// AUTH answer is delayed; after AuthRefuseAfter, AUTH is refused for
	// the rest of the window. After AuthSlowAfter failures against one
	// user name (from any IP), its AUTH answers are delayed too, never
	// refused (authThrottle).
	AuthSlowAfter   int      `yaml:"auth_slow_after"`
	AuthRefuseAfter int      `yaml:"auth_refuse_after"`
	AuthWindow      Duration `yaml:"auth_window"`
	// A client that has made SoftErrorLimit refused commands since its
	// last accepted message waits ErrorSleep before each further reply; at
	// HardErrorLimit it is told 421 and disconnected (Postfix's
	// smtpd_soft_error_limit, smtpd_hard_error_limit,
	// smtpd_error_sleep_time), so a flood of refused RCPTs costs the
	// client time and the relay a bounded number of log lines and records.
	SoftErrorLimit int      `yaml:"soft_error_limit"`
	HardErrorLimit int      `yaml:"hard_error_limit"`
	ErrorSleep     Duration `yaml:"error_sleep"`
	// ShutdownGrace is how long SIGTERM lets sessions finish.
	ShutdownGrace Duration `yaml:"shutdown_grace"`
}

// Delivery says where accepted mail goes.
type Delivery struct {
	// Mode is "local" (write into LocalDir), "smarthost" or "mx".
	Mode      string    `yaml:"mode"`
	LocalDir  string    `yaml:"local_dir"`
	Smarthost Smarthost `yaml:"smarthost"`
	// Retry is the wait before each new attempt after a temporary failure;
	// the last entry repeats until MaxAge. Each wait is jittered by ±10%.
	Retry  []Duration `yaml:"retry"`
	MaxAge Duration   `yaml:"max_age"`
	// DelayNotice is the age at which the sender is told, once, that the
	// message is still queued.
	DelayNotice Duration `yaml:"delay_notice"`
	// Workers caps the delivery attempts in flight (default 100): they
	// are started for due messages and end with them, so an idle queue
	// holds none.
	Workers int `yaml:"workers"`
	// ConnectionsPerDestination caps the SMTP sessions open to one next
	// hop (the smarthost, or one MX address); default 20. Messages past
	// it wait for a session and reuse it.
	ConnectionsPerDestination int `yaml:"connections_per_destination"`
	// ConnectionIdleTimeout closes a session to a next hop that carried
	// no message for this long (default 5s).
	ConnectionIdleTimeout Duration `yaml:"connection_idle_timeout"`
	// MessagesPerConnection closes a session after this many messages
	// (default 1000), so that a long burst is spread again over the next
	// hop's addresses and a slow leak on either side ends.
	MessagesPerConnection int `yaml:"messages_per_connection"`
	// InboundBounces is what the sender of inbound mail (from a client
	// that may not relay) gets when delivery fails: "none" (default: the
	// address may be forged, and a bounce to it is backscatter; the
	// failure is logged and kept in the decision record) or "headers" (an
	// RFC 3464 report with the headers only, as outbound mail gets).
	InboundBounces string `yaml:"inbound_bounces"`
	// VerifyRecipients probes an inbound message's local recipients at the
	// next hop before RCPT is answered, and refuses those it refuses
	// permanently (see verify.go).
	VerifyRecipients bool `yaml:"verify_recipients"`
	// RescanInterval is how often the queue directory is read for
	// messages another process put there (`sluice hold release`); what
	// this relay spools itself is queued at once.
	RescanInterval Duration `yaml:"rescan_interval"`
	// Port is the port of MX hosts (25; tests point it elsewhere).
	Port int `yaml:"port"`
	// VerifyMXTLS checks MX hosts' certificates on STARTTLS. Off by
	// default: opportunistic TLS (RFC 7435) encrypts without verifying,
	// as MTAs do without DANE or MTA-STS.
	VerifyMXTLS bool `yaml:"verify_mx_tls"`
}

// SpoolConfig tunes the spool's segment files (queue package doc).
type SpoolConfig struct {
	// SegmentBytes is how big a segment grows before the next begins:
	// default 64 MiB, at least 16 KiB. Smaller gives the disk of
	// delivered mail back sooner, at a file made and deleted more often.
	SegmentBytes int64 `yaml:"segment_bytes"`
}

// Smarthost is the next hop when Delivery.Mode is smarthost.
type Smarthost struct {
	Addr     string `yaml:"addr"`
	TLS      string `yaml:"tls"` // starttls (default), implicit, none
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// InsecureSkipVerify accepts any certificate (tests, private CAs).
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Account groups SMTP users and the domains it has verified.
type Account struct {
	Name     string `yaml:"name"`
	Disabled bool   `yaml:"disabled"`
	// DisabledText is the refusal for a disabled account's users.
	DisabledText string   `yaml:"disabled_text"`
	Domains      []string `yaml:"domains"`
	Users        []User   `yaml:"users"`
}

// User is an SMTP user. PasswordHash is a bcrypt hash (`sluice passwd`).
// SenderDomains is the permission mode of seed 001: "assigned" (only
// Domains), "account" (any verified domain of the account) or "any".
type User struct {
	Name          string   `yaml:"name"`
	PasswordHash  string   `yaml:"password_hash"`
	Domains       []string `yaml:"domains"`
	SenderDomains string   `yaml:"sender_domains"`
	Disabled      bool     `yaml:"disabled"`

	account *Account
}

// Duration is a time.Duration written as "90s", "5m", "4h", "5d".
type Duration time.Duration

// UnmarshalYAML reads Go durations, plus a "d" suffix for days.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	s := strings.TrimSpace(n.Value)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var f float64
		if _, err := fmt.Sscanf(days, "%g", &f); err != nil {
			return fmt.Errorf("line %d: duration %q: %v", n.Line, s, err)
		}
		*d = Duration(f * float64(24*time.Hour))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: duration %q: want e.g. 30s, 5m, 4h, 5d", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// D is the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// DefaultRetry is the documented retry table: waits after the first,
// second... temporary failure; the last repeats until max_age (5 days).
var DefaultRetry = []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour, 4 * time.Hour}

// LoadConfig reads path; "" gives the embedded default.
func LoadConfig(path string) (*Config, error) {
	c := &Config{}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) { // io.EOF: an empty file
			return nil, fmt.Errorf("%s: %v", path, strings.TrimPrefix(err.Error(), "yaml: "))
		}
		c.path, c.checksum = path, b
		dir, err := filepath.Abs(filepath.Dir(path))
		if err != nil {
			return nil, err
		}
		c.base = dir
	}
	if err := c.finish(); err != nil {
		if path == "" {
			return nil, err
		}
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return c, nil
}

func (c *Config) finish() error {
	if c.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		c.Hostname = h
	}
	if len(c.Listen) == 0 {
		c.Listen = []Listener{{Addr: "127.0.0.1:2525", Mode: "plain"}}
	}
	for i, l := range c.Listen {
		switch l.Mode {
		case "":
			c.Listen[i].Mode = "plain"
		case "plain", "submission", "tls":
		default:
			return fmt.Errorf("listen %s: mode %q: want plain, submission or tls", l.Addr, l.Mode)
		}
	}
	if c.StateDir == "" {
		c.StateDir = "sluice-state"
	}
	if err := c.finishAuth(); err != nil {
		return err
	}
	if c.RulesDir == "" {
		c.RulesDir = "rules.d"
	}
	for _, p := range []*string{&c.StateDir, &c.RulesDir, &c.TLS.Cert, &c.TLS.Key, &c.Delivery.LocalDir, &c.Store.Path} {
		*p = c.resolve(*p)
	}
	if c.RelayNetworks == nil {
		c.RelayNetworks = []string{"127.0.0.0/8", "::1/128"}
	}
	for _, n := range c.RelayNetworks {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			a, aerr := netip.ParseAddr(n)
			if aerr != nil {
				return fmt.Errorf("relay_networks: %q is not an address or CIDR", n)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		c.relayNets = append(c.relayNets, p.Masked())
	}
	for i, d := range c.LocalDomains {
		c.LocalDomains[i] = strings.ToLower(strings.TrimSuffix(d, "."))
	}
	l := &c.Limits
	setDefault(&l.MaxMessageBytes, 25<<20)
	setDefault(&l.MaxRecipients, 100)
	setDefault(&l.MaxLineLength, 2000)
	setDefault(&l.CommandTimeout, Duration(5*time.Minute))
	setDefault(&l.DataTimeout, Duration(10*time.Minute))
	setDefault(&l.MaxConnections, 1000)
	setDefault(&l.MaxConnectionsPerIP, 50)
	setDefault(&l.AuthSlowAfter, 3)
	setDefault(&l.AuthRefuseAfter, 10)
	setDefault(&l.AuthWindow, Duration(15*time.Minute))
	setDefault(&l.SoftErrorLimit, 10)
	setDefault(&l.HardErrorLimit, 20)
	setDefault(&l.ErrorSleep, Duration(time.Second))
	setDefault(&l.ShutdownGrace, Duration(30*time.Second))
	d := &c.Delivery
	if d.Mode == "" {
		d.Mode = "local"
	}
	switch d.Mode {
	case "local":
		if d.LocalDir == "" {
			d.LocalDir = filepath.Join(c.StateDir, "mail")
		}
	case "smarthost":
		if d.Smarthost.Addr == "" {
			return errors.New("delivery: mode smarthost needs smarthost.addr")
		}
		switch d.Smarthost.TLS {
		case "":
			d.Smarthost.TLS = "starttls"
		case "starttls", "implicit", "none":
		default:
			return fmt.Errorf("delivery.smarthost.tls %q: want starttls, implicit or none", d.Smarthost.TLS)
		}
	case "mx":
	default:
		return fmt.Errorf("delivery: mode %q: want local, smarthost or mx", d.Mode)
	}
	if len(d.Retry) == 0 {
		for _, r := range DefaultRetry {
			d.Retry = append(d.Retry, Duration(r))
		}
	}
	setDefault(&d.MaxAge, Duration(5*24*time.Hour))
	setDefault(&d.DelayNotice, Duration(4*time.Hour))
	if d.Workers < 0 || d.ConnectionsPerDestination < 0 || d.MessagesPerConnection < 0 || d.ConnectionIdleTimeout < 0 {
		return errors.New("delivery: workers, connections_per_destination, messages_per_connection and connection_idle_timeout cannot be negative")
	}
	setDefault(&d.Workers, 100)
	setDefault(&d.ConnectionsPerDestination, 20)
	setDefault(&d.ConnectionIdleTimeout, Duration(5*time.Second))
	setDefault(&d.MessagesPerConnection, 1000)
	setDefault(&d.RescanInterval, Duration(2*time.Second))
	switch d.InboundBounces {
	case "":
		d.InboundBounces = "none"
	case "none", "headers":
	default:
		return fmt.Errorf("delivery.inbound_bounces %q: want none or headers", d.InboundBounces)
	}
	setDefault(&d.Port, 25)
	setDefault(&c.Spool.SegmentBytes, queue.DefaultSegmentBytes)
	if c.Spool.SegmentBytes < queue.MinSegmentBytes {
		return fmt.Errorf("spool.segment_bytes %d: want at least %d (default %d)", c.Spool.SegmentBytes, queue.MinSegmentBytes, queue.DefaultSegmentBytes)
	}

	if err := c.finishStore(); err != nil {
		return err
	}
	if err := c.finishUnsubscribe(); err != nil {
		return err
	}
	if err := c.Web.finish(); err != nil {
		return err
	}
	if err := c.Classifier.finish(); err != nil {
		return err
	}
	c.users = map[string]*User{}
	for ai := range c.Accounts {
		a := &c.Accounts[ai]
		if a.Name == "" {
			return fmt.Errorf("accounts[%d]: an account needs a name", ai)
		}
		for i, dom := range a.Domains {
			a.Domains[i] = strings.ToLower(dom)
		}
		for ui := range a.Users {
			u := &a.Users[ui]
			u.account = a
			if u.Name == "" {
				return fmt.Errorf("account %s: users[%d] needs a name", a.Name, ui)
			}
			if _, dup := c.users[u.Name]; dup {
				return fmt.Errorf("account %s: user %s is defined twice", a.Name, u.Name)
			}
			if !strings.HasPrefix(u.PasswordHash, "$2") {
				return fmt.Errorf("account %s: user %s: password_hash must be a bcrypt hash (make one with `sluice passwd`); plain passwords are not accepted", a.Name, u.Name)
			}
			switch u.SenderDomains {
			case "":
				u.SenderDomains = "account"
			case "assigned", "account", "any":
			default:
				return fmt.Errorf("account %s: user %s: sender_domains %q: want assigned, account or any", a.Name, u.Name, u.SenderDomains)
			}
			for i, dom := range u.Domains {
				u.Domains[i] = strings.ToLower(dom)
				if !slices.Contains(a.Domains, u.Domains[i]) {
					return fmt.Errorf("account %s: user %s: domain %s is not a verified domain of the account", a.Name, u.Name, dom)
				}
			}
			c.users[u.Name] = u
		}
	}
	return nil
}

// CheckFiles checks what the config names outside itself and the relay
// would fail on at start: the TLS certificate and key.
func (c *Config) CheckFiles() error {
	if c.TLS.Cert == "" && c.TLS.Key == "" {
		return nil
	}
	if c.TLS.Cert == "" || c.TLS.Key == "" {
		return errors.New("tls: give both cert and key, or neither (a self-signed certificate in state_dir)")
	}
	if _, err := tls.LoadX509KeyPair(c.TLS.Cert, c.TLS.Key); err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	return nil
}

// resolve makes a path of the config file relative to the file's
// directory; the embedded default's paths stay relative to the working
// directory.
func (c *Config) resolve(p string) string {
	if p == "" || c.base == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.base, p)
}

func setDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

// mayRelayFrom reports whether addr is in relay_networks.
func (c *Config) mayRelayFrom(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range c.relayNets {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

func (c *Config) isLocalDomain(d string) bool {
	return slices.Contains(c.LocalDomains, strings.ToLower(strings.TrimSuffix(d, ".")))
}

// authCache remembers recent successful logins as an HMAC of the
// credentials under a per-process random key, as Dovecot's auth cache does:
// bcrypt is deliberately slow (tens of milliseconds), and applications that
// open a connection per message would otherwise spend a core on it. The
// cache belongs to one Config, so a reload (a changed password) empties it.
type authCache struct {
	mu sync.Mutex
	m  map[string]authEntry
}

type authEntry struct {
	mac [32]byte
	at  time.Time
}

const authCacheTTL = 10 * time.Minute

var authCacheKey = func() []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		panic(err)
	}
	return k
}()

func credMAC(name, password string) [32]byte {
	h := hmac.New(sha256.New, authCacheKey)
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write([]byte(password))
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

func (a *authCache) hit(name string, mac [32]byte, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.m[name]
	return ok && now.Sub(e.at) < authCacheTTL && hmac.Equal(e.mac[:], mac[:])
}

func (a *authCache) put(name string, mac [32]byte, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil || len(a.m) > 100000 {
		a.m = map[string]authEntry{}
	}
	a.m[name] = authEntry{mac: mac, at: now}
}

// authenticate checks a user's password against its bcrypt hash.
func (c *Config) authenticate(name, password string) (*User, bool) {
	u := c.users[name]
	mac := credMAC(name, password)
	if u != nil && c.authCache.hit(name, mac, time.Now()) {
		return u, true
	}
	if !c.checkPassword(u, password) { // the same work for any name: authguard.go
		return nil, false
	}
	c.authCache.put(name, mac, time.Now())
	return u, true
}

// disabled reports whether u may not send, and the text to refuse with.
func (u *User) disabled() (bool, string) {
	if u.Disabled || u.account.Disabled {
		t := u.account.DisabledText
		if t == "" {
			t = "This account cannot currently send emails."
		}
		return true, t
	}
	return false, ""
}

// mayUseDomain is domain_allowed: whether u may send with a From header in
// domain d under its permission mode. Subdomains of an allowed domain are
// allowed.
func (u *User) mayUseDomain(d string) bool {
	d = strings.ToLower(strings.TrimSuffix(d, "."))
	if d == "" {
		return false
	}
	var allowed []string
	switch u.SenderDomains {
	case "any":
		return true
	case "assigned":
		allowed = u.Domains
	default:
		allowed = u.account.Domains
	}
	for _, a := range allowed {
		if d == a || strings.HasSuffix(d, "."+a) {
			return true
		}
	}
	return false
}

// HashPassword makes the bcrypt hash for a config file.
func HashPassword(pw string) (string, error) {
	b, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	return string(b), err
}
