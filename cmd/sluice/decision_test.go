package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"

	"github.com/sluicemail/sluice/internal/dnstest"
	"github.com/sluicemail/sluice/mailauth"
	"github.com/sluicemail/sluice/server"
)

const replayRules = `
rules:
  - listed: '"127.0.0.2" in dnsbl("bl.test", client_ip) => +1'
  - spf-fail: 'not outbound and spf == "fail" => +1'
  - rdns-known: 'rdns == "mail.forged.test" => +1'
  - name: dmarc-reject
    when: not outbound and dmarc == "fail" and dmarc_policy == "reject"
    then: 'block 550 5.7.1 "DMARC policy: reject"'
`

// TestDecisionReplaysOffline: a relay refuses a message by DMARC after
// asking a DNS server on 127.0.0.1; sluice decision shows the checks'
// results and prints the context with the DNS answers; that context, given
// to sluice explain with the message and no DNS, gives the same verdict by
// the same rules.
func TestDecisionReplaysOffline(t *testing.T) {
	dir := t.TempDir()
	rulesDir := filepath.Join(dir, "rules")
	os.MkdirAll(rulesDir, 0o755)
	os.WriteFile(filepath.Join(rulesDir, "rules.yaml"), []byte(replayRules), 0o644)
	cfgPath := filepath.Join(dir, "sluice.yaml")
	os.WriteFile(cfgPath, []byte("listen: [{addr: '127.0.0.1:0'}]\nstate_dir: "+filepath.Join(dir, "state")+"\nrules_dir: "+rulesDir+"\nlocal_domains: [local.test]\nrelay_networks: []\n"), 0o644)
	rr := func(s string) dns.RR { return dnstest.RR(t, s) }
	zone := map[string][]dns.RR{
		"forged.test.":        {rr(`forged.test. 60 IN TXT "v=spf1 ip4:192.0.2.1 -all"`)},
		"_dmarc.forged.test.": {rr(`_dmarc.forged.test. 60 IN TXT "v=DMARC1; p=reject"`)},
		"1.0.0.127.bl.test.":  {rr(`1.0.0.127.bl.test. 60 IN A 127.0.0.2`)},
	}
	cfg, err := server.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(cfg, cfgPath, server.Options{DNS: dnstest.Serve(t, zone, nil), Resolver: mailauth.NewStaticResolver(map[string][]string{"1.0.0.127.in-addr.arpa PTR": {"mail.forged.test."}}),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ls, err := srv.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})

	msg := "From: x@forged.test\r\nTo: box@local.test\r\nSubject: forged\r\nMessage-ID: <forged@test>\r\n\r\nHello.\r\n"
	c, err := smtp.Dial(ls[0].Addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("x@forged.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("box@local.test", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, msg)
	err = w.Close()
	m := idRe.FindStringSubmatch(errString(err))
	if m == nil || !strings.Contains(errString(err), "DMARC") {
		t.Fatalf("refusal: %v", err)
	}

	code, out, errs := runCLI("decision", m[1], "--config", cfgPath)
	if code != 0 {
		t.Fatalf("decision: exit %d %s", code, errs)
	}
	for _, want := range []string{
		"\nauthentication:\n  spf:    fail domain=forged.test (",
		"\n  dkim:   none\n",
		"\n  dmarc:  fail from=forged.test policy=reject (",
		"\ncontext:\n  client_ip: \"127.0.0.1\"\n  helo: \"client.test\"\n  mail_from: \"x@forged.test\"\n  rcpts: [\"box@local.test\"]\n  rdns: \"mail.forged.test\"\n  outbound: false\n  dns:\n",
		"\n    \"_dmarc.forged.test TXT\": [\"v=DMARC1; p=reject\"]\n",
		"\n    \"forged.test TXT\": [\"v=spf1 ip4:192.0.2.1 -all\"]\n",
		"\n    \"1.0.0.127.bl.test A\": [\"127.0.0.2\"]\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("decision lacks %q:\n%s", want, out)
		}
	}

	// The operator pastes the context into a file and replays offline.
	ctxFile, eml := filepath.Join(dir, "ctx.yaml"), filepath.Join(dir, "msg.eml")
	os.WriteFile(ctxFile, []byte(out[strings.Index(out, "\ncontext:\n"):]), 0o644)
	os.WriteFile(eml, []byte(msg), 0o644)
	code, replayed, errs := runCLI("explain", "--rules", rulesDir, "--context", ctxFile, eml)
	if code != 0 {
		t.Fatalf("explain: exit %d %s", code, errs)
	}
	verdict := func(s string) string {
		i := strings.Index(s, "verdict:  ")
		line := s[i:]
		line = line[:strings.IndexByte(line, '\n')]
		if j := strings.Index(line, " at "); j > 0 {
			line = line[:j]
		}
		return line
	}
	if verdict(replayed) != verdict(out) || verdict(out) != `verdict:  reject 550 5.7.1 "DMARC policy: reject"` {
		t.Errorf("replayed %q, recorded %q\n%s", verdict(replayed), verdict(out), replayed)
	}
	for _, rule := range []string{"listed", "spf-fail", "rdns-known", "dmarc-reject"} {
		if !strings.Contains(replayed, rule) || !strings.Contains(out, rule) {
			t.Errorf("rule %s not fired in both:\n%s\n%s", rule, out, replayed)
		}
	}
}
