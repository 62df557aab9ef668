package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
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
