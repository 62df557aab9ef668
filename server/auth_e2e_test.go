package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicemail/sluice/internal/dnstest"
	"github.com/sluicemail/sluice/mailauth"
)

const authRules = `
rules:
  - spf-fail: 'not outbound and spf == "fail" => +1'
  - dkim-seen: 'not outbound and dkim == "fail" => +1'
  - name: dmarc-reject
    when: not outbound and dmarc == "fail" and dmarc_policy == "reject"
    then: 'block 550 5.7.1 "DMARC policy: reject"'
`

// TestAuthChecksLive: the relay checks SPF and DMARC of inbound mail
// against a real DNS server on 127.0.0.1, reports them in its
// Authentication-Results, refuses what a p=reject domain disowns, and
// DKIM-signs outbound mail so that the signature verifies.
func TestAuthChecksLive(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	rr := func(s string) dns.RR { return dnstest.RR(t, s) }
	zone := map[string][]dns.RR{
		"sender.test.":             {rr(`sender.test. 60 IN TXT "v=spf1 ip4:127.0.0.1 -all"`)},
		"forged.test.":             {rr(`forged.test. 60 IN TXT "v=spf1 ip4:192.0.2.1 -all"`)},
		"_dmarc.forged.test.":      {rr(`_dmarc.forged.test. 60 IN TXT "v=DMARC1; p=reject"`)},
		"s1._domainkey.acme.test.": {rr(`s1._domainkey.acme.test. 60 IN TXT "v=DKIM1; k=ed25519; p=` + base64.StdEncoding.EncodeToString(pub) + `"`)},
	}
	resolver := dnstest.Serve(t, zone, nil)
	k := newSink(t)
	cfg := testConfig(t, k)
	keyPath := filepath.Join(t.TempDir(), "acme.pem")
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.DKIMSign = []DKIMSignConfig{{Domain: "acme.test", Selector: "s1", Key: keyPath}}
	r := startRelayWith(t, cfg, authRules, Options{DNS: resolver})

	c := r.dial(t, "plain")
	if _, err := send(c, "a@sender.test", []string{"box@local.test"}, message("a@sender.test", "box@local.test", "spf pass")); err != nil {
		t.Fatal(err)
	}
	m := k.wait(t, 1, 10*time.Second)[0]
	if !strings.Contains(string(m.Data), "spf=pass smtp.mailfrom=sender.test") {
		t.Errorf("no spf=pass in the relay's Authentication-Results:\n%s", m.Data)
	}

	c = r.dial(t, "plain")
	_, err = send(c, "x@forged.test", []string{"box@local.test"}, message("x@forged.test", "box@local.test", "forged"))
	if code, _, text := smtpCode(err); code != 550 || !strings.Contains(text, "DMARC") {
		t.Errorf("mail disowned by p=reject: %v", err)
	}

	c = r.dial(t, "submission")
	login(t, c, "ops")
	if _, err := send(c, "ops@acme.test", []string{"bob@example.org"}, message("ops@acme.test", "bob@example.org", "signed")); err != nil {
		t.Fatal(err)
	}
	msgs := k.wait(t, 2, 10*time.Second)
	signed := msgs[1].Data
	if !strings.HasPrefix(string(signed), "DKIM-Signature:") {
		t.Fatalf("outbound mail not signed:\n%s", signed)
	}
	got := mailauth.VerifyDKIM(context.Background(), resolver, signed)
	if got.Result != mailauth.Pass || len(got.Domains) != 1 || got.Domains[0] != "acme.test" {
		t.Errorf("the relay's signature: %+v", got)
	}
}

// TestDKIMKeyRotationByReload: a config reload takes a new selector's key
// without a restart, and a reload naming a key that cannot be read keeps
// the live one.
func TestDKIMKeyRotationByReload(t *testing.T) {
	k := newSink(t)
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "rules.d"), 0o755)
	os.WriteFile(filepath.Join(dir, "rules.d", "r.yaml"), []byte("rules:\n  - big: size > 10000000 => +1\n"), 0o644)
	zone := map[string][]dns.RR{}
	key := func(sel string) string {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKCS8PrivateKey(priv)
		p := filepath.Join(dir, sel+".pem")
		os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
		name := sel + "._domainkey.acme.test."
		zone[name] = []dns.RR{dnstest.RR(t, name+` 60 IN TXT "v=DKIM1; k=ed25519; p=`+base64.StdEncoding.EncodeToString(pub)+`"`)}
		return p
	}
	k1, k2 := key("s1"), key("s2")
	resolver := dnstest.Serve(t, zone, nil)
	write := func(sel, keyPath string) string {
		p := filepath.Join(dir, "sluice.yaml")
		os.WriteFile(p, []byte(fmt.Sprintf("listen: [{addr: '127.0.0.1:0', mode: plain}]\nstate_dir: %s\nrules_dir: %s\nrelay_networks: [127.0.0.0/8]\n"+
			"delivery: {mode: smarthost, smarthost: {addr: '%s', tls: none}}\ndkim_sign: [{domain: acme.test, selector: %s, key: '%s'}]\n",
			dir, filepath.Join(dir, "rules.d"), k.addr, sel, keyPath)), 0o644)
		return p
	}
	p := write("s1", k1)
	cfg, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, p, Options{Log: quietLog(t), Resolver: noPTR{}, DNS: resolver})
	if err != nil {
		t.Fatal(err)
	}
	ls, err := srv.Start(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(t.Context())
	r := &relay{srv: srv, addrs: map[string]string{"plain": ls[0].Addr.String()}}
	sendSigned := func(n int, wantSel string) {
		t.Helper()
		c := r.dial(t, "plain")
		subj := fmt.Sprint("rotation ", n)
		if _, err := send(c, "ops@acme.test", []string{"bob@example.org"}, message("ops@acme.test", "bob@example.org", subj)); err != nil {
			t.Fatal(err)
		}
		m := k.wait(t, n, 10*time.Second)[n-1]
		got := mailauth.VerifyDKIM(context.Background(), resolver, m.Data)
		if got.Result != mailauth.Pass || len(got.Signatures) != 1 || got.Signatures[0].Selector != wantSel {
			t.Errorf("message %d: %+v, want a passing signature with s=%s", n, got, wantSel)
		}
	}
	sendSigned(1, "s1")
	write("s2", k2)
	if err := srv.ReloadConfig(); err != nil {
		t.Fatal(err)
	}
	sendSigned(2, "s2")
	write("s3", filepath.Join(dir, "missing.pem"))
	if err := srv.ReloadConfig(); err == nil || !strings.Contains(err.Error(), "dkim_sign") {
		t.Errorf("a reload naming a missing key: %v", err)
	}
	sendSigned(3, "s2")
}
