package mailauth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/sluicemail/sluice/internal/dnstest"
)

// arcSigner is one forwarder of the tests: its domain, selector and key
// (testdata/arc-*.pem, made for these tests only).
type arcSigner struct {
	domain, selector, keyFile string
	key                       crypto.Signer
}

func loadSigner(t testing.TB, domain, selector, file string) arcSigner {
	t.Helper()
	b, err := os.ReadFile("testdata/" + file)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	var k any
	if blk.Type == "RSA PRIVATE KEY" {
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	} else {
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	}
	if err != nil {
		t.Fatal(err)
	}
	return arcSigner{domain, selector, "testdata/" + file, k.(crypto.Signer)}
}

// txtRecord is the key's DKIM record, as the signer publishes it.
func (s arcSigner) txtRecord(t testing.TB) string {
	if k, ok := s.key.Public().(ed25519.PublicKey); ok {
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(k)
	}
	der, err := x509.MarshalPKIXPublicKey(s.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
}

func (s arcSigner) algo() string {
	if _, ok := s.key.(ed25519.PrivateKey); ok {
		return "ed25519-sha256"
	}
	return "rsa-sha256"
}

func (s arcSigner) sign(t testing.TB, data string) string {
	sum := sha256.Sum256([]byte(data))
	var sig []byte
	var err error
	if _, ok := s.key.(ed25519.PrivateKey); ok {
		sig, err = s.key.Sign(rand.Reader, sum[:], crypto.Hash(0))
	} else {
		sig, err = s.key.Sign(rand.Reader, sum[:], crypto.SHA256)
	}
	if err != nil {
		t.Fatal(err)
	}
	// Folded, as real sealers do, so that verification meets FWS inside b=.
	b := base64.StdEncoding.EncodeToString(sig)
	var out strings.Builder
	for len(b) > 64 {
		out.WriteString(b[:64] + "\r\n\t ")
		b = b[64:]
	}
	return out.String() + b
}

// seal adds an ARC set to msg the way a forwarder does (RFC 8617 5.1), for
// tests that need chains python3-dkim will not make (Ed25519, cv=fail
// written on purpose). TestARCInteropPython checks that python3-dkim's
// verifier accepts what this sealer makes, so these tests do not rest on
// our own reading of the RFC alone.
func (s arcSigner) seal(t testing.TB, msg []byte, cv string) []byte {
	t.Helper()
	fields, body := arcSplit(msg)
	sets, err := arcSets(fields)
	if err != nil {
		t.Fatal(err)
	}
	i := len(sets) + 1
	aar := fmt.Sprintf("ARC-Authentication-Results: i=%d; %s;\r\n  dkim=pass header.d=origin.test; arc=%s\r\n", i, s.domain, cv)

	bh := sha256.Sum256(arcCanonBody(body, "relaxed"))
	ams := fmt.Sprintf("ARC-Message-Signature: i=%d; a=%s; c=relaxed/relaxed; d=%s;\r\n s=%s; t=1700000000; h=From : To : Subject:Date:Subject;\r\n bh=%s;\r\n b=",
		i, s.algo(), s.domain, s.selector, base64.StdEncoding.EncodeToString(bh[:]))
	var data strings.Builder
	picked := map[string]int{}
	for _, h := range []string{"from", "to", "subject", "date", "subject"} {
		n := 0
		for k := len(fields) - 1; k >= 0; k-- {
			if strings.EqualFold(fields[k].name, h) {
				if n == picked[h] {
					data.WriteString(arcRelaxedHeader(fields[k].raw))
					break
				}
				n++
			}
		}
		picked[h]++
	}
	data.WriteString(strings.TrimSuffix(arcRelaxedHeader(ams), "\r\n"))
	ams += s.sign(t, data.String()) + "\r\n"

	seal := fmt.Sprintf("ARC-Seal: i=%d; a=%s; t=1700000000; cv=%s;\r\n d=%s; s=%s;\r\n b=", i, s.algo(), cv, s.domain, s.selector)
	data.Reset()
	if cv != Fail {
		for _, set := range sets {
			data.WriteString(arcRelaxedHeader(set.aar.raw) + arcRelaxedHeader(set.ams.raw) + arcRelaxedHeader(set.seal.raw))
		}
	}
	data.WriteString(arcRelaxedHeader(aar) + arcRelaxedHeader(ams))
	data.WriteString(strings.TrimSuffix(arcRelaxedHeader(seal), "\r\n"))
	seal += s.sign(t, data.String()) + "\r\n"
	return append([]byte(seal+ams+aar), msg...)
}

const arcMessage = "Received: from origin.test by list.test; Tue, 1 Jul 2025 10:00:00 +0000\r\n" +
	"From: Alice <alice@origin.test>\r\n" +
	"To: list@list.test\r\n" +
	"Subject: the  minutes,\r\n\tfolded\r\n" +
	"Date: Tue, 1 Jul 2025 09:59:00 +0000\r\n" +
	"Message-ID: <1@origin.test>\r\n" +
	"\r\n" +
	"Hello,  list.\t\r\n" +
	"\r\n" +
	"The minutes are attached.\r\n" +
	"\r\n\r\n"

// arcWorld is three forwarders, their DNS on 127.0.0.1, and names that
// fail: hop4's key SERVFAILs, nokey.test has no key.
type arcWorld struct {
	r                      *net.Resolver
	hop1, hop2, hop3, hop4 arcSigner
	nokey                  arcSigner
}

func newARCWorld(t testing.TB) arcWorld {
	w := arcWorld{
		hop1:  loadSigner(t, "hop1.test", "s1", "arc-rsa1.pem"),
		hop2:  loadSigner(t, "hop2.test", "s2", "arc-rsa2.pem"),
		hop3:  loadSigner(t, "hop3.test", "ed", "arc-ed25519.pem"),
		hop4:  loadSigner(t, "hop4.test", "s4", "arc-rsa1.pem"),
		nokey: loadSigner(t, "nokey.test", "s5", "arc-rsa1.pem"),
	}
	zone := map[string][]dns.RR{}
	for _, s := range []arcSigner{w.hop1, w.hop2, w.hop3, w.hop4} {
		name := s.selector + "._domainkey." + s.domain + "."
		// A 2048-bit key is longer than one TXT string: split, as published.
		rec := s.txtRecord(t)
		var parts []string
		for len(rec) > 255 {
			parts, rec = append(parts, rec[:255]), rec[255:]
		}
		zone[name] = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: append(parts, rec)}}
	}
	w.r = dnstest.Serve(t, zone, map[string]bool{"s4._domainkey.hop4.test.": true})
	return w
}

func TestVerifyARC(t *testing.T) {
	w := newARCWorld(t)
	msg := []byte(arcMessage)
	one := w.hop1.seal(t, msg, None)
	two := w.hop2.seal(t, one, Pass)
	three := w.hop3.seal(t, two, Pass)

	cases := []struct {
		name    string
		msg     []byte
		result  string
		domains []string
		detail  string
	}{
		{"no ARC headers", msg, None, nil, "no ARC sets"},
		{"one hop", one, Pass, []string{"hop1.test"}, "1 sets"},
		{"two hops", two, Pass, []string{"hop2.test", "hop1.test"}, ""},
		{"three hops, the newest Ed25519", three, Pass, []string{"hop3.test", "hop2.test", "hop1.test"}, ""},
		{"LF line ends", bytes.ReplaceAll(three, []byte("\r\n"), []byte("\n")), Pass, []string{"hop3.test", "hop2.test", "hop1.test"}, ""},
		{"a header added after sealing that h= does not name", append([]byte("X-Scanned: yes\r\nReceived: by mx.test\r\n"), three...), Pass, []string{"hop3.test", "hop2.test", "hop1.test"}, ""},

		{"body changed after sealing", replace(t, three, "The minutes", "The minutas"), Fail, nil, "body hash"},
		{"body lengthened after sealing", append(slices.Clip(three), "P.S. click here\r\n"...), Fail, nil, "body hash"},
		{"signed header changed", replace(t, three, "To: list@list.test", "To: else@list.test"), Fail, nil, "ARC-Message-Signature i=3"},
		{"a second Subject added below", insertAfter(t, three, "Date: ", "Subject: new\r\n"), Fail, nil, "ARC-Message-Signature i=3"},
		// The newest seal covers every older set: changing any of them
		// breaks it first.
		{"newest seal tampered (b=)", tamperSealB(t, three, 3), Fail, nil, "ARC-Seal i=3"},
		{"oldest seal tampered (b=)", tamperSealB(t, three, 1), Fail, nil, "ARC-Seal i=3"},
		{"middle seal tampered (b=)", tamperSealB(t, three, 2), Fail, nil, "ARC-Seal i=3"},
		{"oldest AAR changed", replace(t, three, "i=1; hop1.test;", "i=1; hop1.test; spf=pass;"), Fail, nil, "ARC-Seal i=3"},
		{"older AMS changed", replace(t, three, "i=2; a=rsa-sha256; c=relaxed/relaxed; d=hop2.test", "i=2; a=rsa-sha256; c=relaxed/relaxed;  d=hop2.test;x=1"), Fail, nil, "ARC-Seal i=3"},
		// A later forwarder that sealed over a broken seal with cv=pass
		// (wrongly) does not make it whole: each seal is checked.
		{"broken oldest seal under good newer ones", w.hop3.seal(t, w.hop2.seal(t, tamperSealB(t, one, 1), Pass), Pass), Fail, nil, "ARC-Seal i=1"},
		{"broken middle seal under a good newer one", w.hop3.seal(t, tamperSealB(t, two, 2), Pass), Fail, nil, "ARC-Seal i=2"},
		{"newest cv=fail", w.hop3.seal(t, two, Fail), Fail, nil, "cv=fail"},
		{"newest cv=fail over a chain that would validate", w.hop2.seal(t, one, Fail), Fail, nil, "cv=fail"},
		{"first set with cv=pass", w.hop1.seal(t, msg, Pass), Fail, nil, `i=1 has cv="pass"`},
		{"second set with cv=none", w.hop2.seal(t, one, None), Fail, nil, `i=2 has cv="none"`},
		{"missing instance (set 2 gone)", dropFields(t, three, "i=2;", 3), Fail, nil, "set i=2 without"},
		{"missing AMS of set 1", dropFields(t, three, "ARC-Message-Signature: i=1;", 1), Fail, nil, "set i=1 without ARC-Message-Signature"},
		{"only an AAR", []byte("ARC-Authentication-Results: i=1; x.test; arc=none\r\n" + arcMessage), Fail, nil, "without ARC-Message-Signature"},
		{"duplicate instance", append(firstLines(t, one, 3), one...), Fail, nil, "two ARC-Seal fields with i=1"},
		{"instance 0", replace(t, one, "ARC-Seal: i=1;", "ARC-Seal: i=0;"), Fail, nil, "i=\"0\""},
		{"instance 51", []byte("ARC-Seal: i=51; a=rsa-sha256; cv=pass; d=x.test; s=s; b=AAAA\r\n" + arcMessage), Fail, nil, "1 to 50"},
		{"instance not a number", replace(t, one, "ARC-Message-Signature: i=1;", "ARC-Message-Signature: i=one;"), Fail, nil, "instance"},
		{"malformed tag list", replace(t, one, "ARC-Seal: i=1;", "ARC-Seal: i=1; garbage;"), Fail, nil, "malformed"},
		{"seal with h=", replace(t, one, "ARC-Seal: i=1;", "ARC-Seal: i=1; h=from;"), Fail, nil, "h="},
		{"key SERVFAIL", w.hop4.seal(t, two, Pass), TempError, nil, "s4._domainkey.hop4.test"},
		{"key does not exist", w.nokey.seal(t, two, Pass), Fail, nil, "no key at s5._domainkey.nokey.test"},
		{"key does not exist, older seal", w.hop3.seal(t, w.hop2.seal(t, w.nokey.seal(t, msg, None), Pass), Pass), Fail, nil, "ARC-Seal i=1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := VerifyARC(context.Background(), w.r, c.msg)
			if got.Result != c.result || !slices.Equal(got.Domains, c.domains) {
				t.Errorf("got %s %q (%s), want %s %q", got.Result, got.Domains, got.Detail, c.result, c.domains)
			}
			if got.Detail == "" || !strings.Contains(got.Detail, c.detail) {
				t.Errorf("Detail %q, want it to contain %q", got.Detail, c.detail)
			}
		})
	}
}

func replace(t testing.TB, msg []byte, old, new string) []byte {
	t.Helper()
	if !bytes.Contains(msg, []byte(old)) {
		t.Fatalf("%q not in the message", old)
	}
	return bytes.Replace(msg, []byte(old), []byte(new), 1)
}

func insertAfter(t testing.TB, msg []byte, prefix, field string) []byte {
	t.Helper()
	i := bytes.Index(msg, []byte("\r\n"+prefix))
	if i < 0 {
		t.Fatalf("no %q field", prefix)
	}
	j := i + 2 + bytes.Index(msg[i+2:], []byte("\r\n")) + 2
	return slices.Concat(msg[:j], []byte(field), msg[j:])
}

// dropFields removes the n header fields containing marker.
func dropFields(t testing.TB, msg []byte, marker string, n int) []byte {
	t.Helper()
	fields, body := arcSplit(msg)
	var out []byte
	for _, f := range fields {
		if n > 0 && strings.Contains(f.raw, marker) {
			n--
			continue
		}
		out = append(out, f.raw...)
	}
	if n != 0 {
		t.Fatalf("not enough fields with %q", marker)
	}
	return slices.Concat(out, []byte("\r\n"), body)
}

func firstLines(t testing.TB, msg []byte, n int) []byte {
	fields, _ := arcSplit(msg)
	var out []byte
	for _, f := range fields[:n] {
		out = append(out, f.raw...)
	}
	return out
}

// tamperSealB flips one character of the signature of seal i.
func tamperSealB(t testing.TB, msg []byte, i int) []byte {
	t.Helper()
	fields, body := arcSplit(msg)
	var out []byte
	done := false
	for _, f := range fields {
		raw := f.raw
		if strings.EqualFold(f.name, "ARC-Seal") && strings.Contains(raw, fmt.Sprintf("i=%d;", i)) {
			k := strings.LastIndex(raw, "b=") + 10
			c := byte('A')
			if raw[k] == 'A' {
				c = 'B'
			}
			raw = raw[:k] + string(c) + raw[k+1:]
			done = true
		}
		out = append(out, raw...)
	}
	if !done {
		t.Fatalf("no seal i=%d", i)
	}
	return slices.Concat(out, []byte("\r\n"), body)
}

// BenchmarkVerifyARC validates a three-hop chain (RSA 2048, RSA 1024,
// Ed25519) with the keys served by a local DNS server: the figure includes
// three concurrent UDP round trips on loopback.
func BenchmarkVerifyARC(b *testing.B) {
	w := newARCWorld(b)
	msg := w.hop3.seal(b, w.hop2.seal(b, w.hop1.seal(b, []byte(arcMessage), None), Pass), Pass)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if res := VerifyARC(ctx, w.r, msg); res.Result != Pass {
			b.Fatal(res)
		}
	}
}

// BenchmarkVerifyARCCached is the same chain with the keys answered from
// memory, as the relay's cache would: the cost of parsing,
// canonicalization and the three seal and one AMS verifications.
func BenchmarkVerifyARCCached(b *testing.B) {
	w := newARCWorld(b)
	msg := w.hop3.seal(b, w.hop2.seal(b, w.hop1.seal(b, []byte(arcMessage), None), Pass), Pass)
	r := staticTXT{}
	for _, s := range []arcSigner{w.hop1, w.hop2, w.hop3} {
		r[s.selector+"._domainkey."+s.domain+"."] = []string{s.txtRecord(b)}
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if res := VerifyARC(ctx, r, msg); res.Result != Pass {
			b.Fatal(res)
		}
	}
}
