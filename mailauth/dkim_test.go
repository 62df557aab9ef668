package mailauth

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicemail/sluice/internal/dnstest"
)

const dkimTestMsg = "From: Ann <ann@example.com>\r\n" +
	"To: bob@example.net\r\n" +
	"Subject: quarterly figures\r\n" +
	"Date: Mon, 06 Jan 2025 10:00:00 +0000\r\n" +
	"Message-ID: <q1@example.com>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=us-ascii\r\n" +
	"\r\n" +
	"Hello Bob,\r\n\r\nthe figures are attached.\r\n"

// dkimTestKey loads a key of testdata/dkim.
func dkimTestKey(t testing.TB, name string) crypto.Signer {
	t.Helper()
	k, err := LoadKey(filepath.Join("testdata", "dkim", name))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// dkimTXT is a TXT record as a zone holds it, its text cut into strings
// of at most 255 octets.
func dkimTXT(name, text string) dns.RR {
	return &dns.TXT{Hdr: dns.RR_Header{Name: dns.Fqdn(strings.ToLower(name)), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
		Txt: TXTStrings(text)}
}

// dkimKeyRR is the key record of key at selector._domainkey.domain.
func dkimKeyRR(t testing.TB, domain, selector string, key crypto.Signer) dns.RR {
	t.Helper()
	rec, err := DKIMRecord(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return dkimTXT(selector+"._domainkey."+domain, rec)
}

// dkimZone makes a dnstest zone of records.
func dkimZone(rrs ...dns.RR) map[string][]dns.RR {
	zone := map[string][]dns.RR{}
	for _, rr := range rrs {
		zone[rr.Header().Name] = append(zone[rr.Header().Name], rr)
	}
	return zone
}

// dkimSign signs msg with key as d=domain s=selector through Signer and
// returns the signed message.
func dkimSign(t testing.TB, msg, domain, selector string, key crypto.Signer) string {
	t.Helper()
	sig, err := NewSigner([]SignKey{{Domain: domain, Selector: selector, Key: key}}).Sign([]byte(msg), domain)
	if err != nil || sig == "" {
		t.Fatalf("sign: %q, %v", sig, err)
	}
	return sig + msg
}

func dkimVerify(t testing.TB, r Resolver, msg string) DKIMResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return VerifyDKIM(ctx, r, []byte(msg))
}

// TestDkimResults: one signature, each result value SPEC 6 names, against
// a DNS server on 127.0.0.1.
func TestDkimResults(t *testing.T) {
	rsaKey := dkimTestKey(t, "rsa2048.pem")
	edKey := dkimTestKey(t, "ed25519.pem")
	res := dnstest.Serve(t, dkimZone(
		dkimKeyRR(t, "example.com", "rsa1", rsaKey),
		dkimKeyRR(t, "example.com", "ed1", edKey),
		dkimTXT("bad._domainkey.example.com", "v=DKIM1; k=rsa; p=bm90IGEga2V5"),
		dkimTXT("revoked._domainkey.example.com", "v=DKIM1; k=rsa; p="),
		dkimTXT("wrongtype._domainkey.example.com", strings.Replace(mustRecord(t, edKey), "k=ed25519", "k=rsa", 1)),
	), map[string]bool{"flaky._domainkey.example.com.": true})

	signed := dkimSign(t, dkimTestMsg, "example.com", "rsa1", rsaKey)
	for _, c := range []struct {
		name, msg, want, detail string
	}{
		{"rsa pass", signed, Pass, ""},
		{"ed25519 pass", dkimSign(t, dkimTestMsg, "example.com", "ed1", edKey), Pass, ""},
		{"header tampered", strings.Replace(signed, "quarterly figures", "quarterly figures!", 1), Fail, "signature did not verify"},
		{"body tampered", strings.Replace(signed, "attached", "ATTACHED", 1), Fail, "body hash did not verify"},
		{"From added above", "From: Mallory <m@example.org>\r\n" + signed, Fail, "signature did not verify"},
		{"no key record", dkimSign(t, dkimTestMsg, "example.com", "gone", rsaKey), PermError, "no key"},
		{"no such domain", dkimSign(t, dkimTestMsg, "nowhere.example", "rsa1", rsaKey), PermError, "no key"},
		{"malformed key", dkimSign(t, dkimTestMsg, "example.com", "bad", rsaKey), PermError, ""},
		{"revoked key", dkimSign(t, dkimTestMsg, "example.com", "revoked", rsaKey), PermError, "revoked"},
		{"key of the wrong type", dkimSign(t, dkimTestMsg, "example.com", "wrongtype", edKey), PermError, ""},
		{"malformed signature", "DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=rsa1\r\n" + dkimTestMsg, PermError, "missing required tag"},
		{"SERVFAIL", dkimSign(t, dkimTestMsg, "example.com", "flaky", rsaKey), TempError, "key unavailable"},
		{"unsigned", dkimTestMsg, None, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := dkimVerify(t, res, c.msg)
			if got.Result != c.want {
				t.Fatalf("result %s, want %s: %+v", got.Result, c.want, got)
			}
			if c.want == None {
				if len(got.Signatures) != 0 || got.Domains != nil {
					t.Errorf("unsigned message: %+v", got)
				}
				return
			}
			if len(got.Signatures) != 1 {
				t.Fatalf("%d signatures, want 1: %+v", len(got.Signatures), got)
			}
			s := got.Signatures[0]
			if s.Result != c.want || !strings.Contains(s.Detail, c.detail) || s.Domain == "" || s.Selector == "" || s.Unsigned {
				t.Errorf("signature %+v, want %s with detail containing %q", s, c.want, c.detail)
			}
			if wantDomains := c.want == Pass; wantDomains != slices.Equal(got.Domains, []string{s.Domain}) {
				t.Errorf("Domains %q for a %s signature of %s", got.Domains, s.Result, s.Domain)
			}
		})
	}
}

func mustRecord(t testing.TB, k crypto.Signer) string {
	t.Helper()
	r, err := DKIMRecord(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestDkimTempErrorNoAnswer: a DNS server that never answers gives
// temperror once the context's deadline passes, not a hang or permerror.
func TestDkimTempErrorNoAnswer(t *testing.T) {
	r := dnstest.Resolver(dnstest.Silent(t))
	msg := dkimSign(t, dkimTestMsg, "example.com", "rsa1", dkimTestKey(t, "rsa2048.pem"))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	got := VerifyDKIM(ctx, r, []byte(msg))
	if got.Result != TempError {
		t.Errorf("result %s, want temperror: %+v", got.Result, got)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v, the context allowed 300ms", d)
	}
}

// dkimFakeResolver answers TXT from a map and fails other names with err
// (nil: not found). It checks the Resolver contract with errors that are
// not *net.DNSError.
type dkimFakeResolver struct {
	txt map[string]string
	err error
}

func (f dkimFakeResolver) LookupTXT(_ context.Context, name string) ([]string, error) {
	if v, ok := f.txt[strings.TrimSuffix(strings.ToLower(name), ".")]; ok {
		return []string{v}, nil
	}
	if f.err != nil {
		return nil, f.err
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}
func (dkimFakeResolver) LookupMX(context.Context, string) ([]*net.MX, error) {
	return nil, errors.New("not in this test")
}
func (dkimFakeResolver) LookupIPAddr(context.Context, string) ([]net.IPAddr, error) {
	return nil, errors.New("not in this test")
}
func (dkimFakeResolver) LookupAddr(context.Context, string) ([]string, error) {
	return nil, errors.New("not in this test")
}

// TestDkimResolverContract: any lookup error but "not found" is temporary
// (mailauth.Resolver), even one go-msgauth would read as permanent.
func TestDkimResolverContract(t *testing.T) {
	msg := dkimSign(t, dkimTestMsg, "example.com", "rsa1", dkimTestKey(t, "rsa2048.pem"))
	if got := dkimVerify(t, dkimFakeResolver{err: errors.New("connection refused")}, msg); got.Result != TempError {
		t.Errorf("plain error: %s, want temperror", got.Result)
	}
	if got := dkimVerify(t, dkimFakeResolver{err: context.DeadlineExceeded}, msg); got.Result != TempError {
		t.Errorf("deadline: %s, want temperror", got.Result)
	}
	if got := dkimVerify(t, dkimFakeResolver{}, msg); got.Result != PermError {
		t.Errorf("not found: %s, want permerror", got.Result)
	}
}

// TestDkimRanking: over several signatures the best counts (SPEC 6: pass >
// temperror > fail > permerror > none), and Domains lists only those that
// passed, in order, once each.
func TestDkimRanking(t *testing.T) {
	rsaKey := dkimTestKey(t, "rsa2048.pem")
	edKey := dkimTestKey(t, "ed25519.pem")
	res := dnstest.Serve(t, dkimZone(
		dkimKeyRR(t, "example.com", "rsa1", rsaKey),
		dkimKeyRR(t, "example.com", "ed1", edKey),
		dkimKeyRR(t, "esp.example", "s1", rsaKey),
		dkimKeyRR(t, "other.example", "s1", edKey),
	), map[string]bool{"flaky._domainkey.example.com.": true})

	sig := func(domain, selector string, key crypto.Signer) string {
		s, err := NewSigner([]SignKey{{Domain: domain, Selector: selector, Key: key}}).Sign([]byte(dkimTestMsg), domain)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	pass1 := sig("example.com", "rsa1", rsaKey)
	pass2 := sig("Example.COM", "ed1", edKey)
	passESP := sig("esp.example", "s1", rsaKey)
	temp := sig("example.com", "flaky", rsaKey)
	perm := sig("example.com", "gone", rsaKey)
	// fail: an Ed25519 signature by a key other than the one published
	otherKey, err := GenerateKey("ed25519", 0)
	if err != nil {
		t.Fatal(err)
	}
	fail := sig("other.example", "s1", otherKey)

	for _, c := range []struct {
		name    string
		sigs    []string
		want    string
		domains []string
		results []string
	}{
		{"pass beats all", []string{perm, fail, temp, passESP}, Pass, []string{"esp.example"}, []string{PermError, Fail, TempError, Pass}},
		{"temperror beats fail", []string{fail, temp, perm}, TempError, nil, []string{Fail, TempError, PermError}},
		{"fail beats permerror", []string{perm, fail}, Fail, nil, []string{PermError, Fail}},
		{"permerror alone", []string{perm}, PermError, nil, []string{PermError}},
		{"two domains pass", []string{pass1, fail, passESP, pass2}, Pass, []string{"example.com", "esp.example"}, []string{Pass, Fail, Pass, Pass}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := dkimVerify(t, res, strings.Join(c.sigs, "")+dkimTestMsg)
			var results []string
			for _, s := range got.Signatures {
				results = append(results, s.Result)
			}
			if got.Result != c.want || !slices.Equal(got.Domains, c.domains) || !slices.Equal(results, c.results) {
				t.Errorf("got %s %q %q, want %s %q %q", got.Result, got.Domains, results, c.want, c.domains, c.results)
			}
		})
	}
}

// TestDkimTooManySignatures: past maxDKIMSignatures the rest are not
// checked (each costs a lookup and an RSA operation) and count as
// permerror; those checked still count.
func TestDkimTooManySignatures(t *testing.T) {
	rsaKey := dkimTestKey(t, "rsa2048.pem")
	good, err := NewSigner([]SignKey{{Domain: "example.com", Selector: "rsa1", Key: rsaKey}}).Sign([]byte(dkimTestMsg), "example.com")
	if err != nil {
		t.Fatal(err)
	}
	r := dkimFakeResolver{txt: map[string]string{"rsa1._domainkey.example.com": mustRecord(t, rsaKey)}}
	got := dkimVerify(t, r, strings.Repeat(good, maxDKIMSignatures+2)+dkimTestMsg)
	if got.Result != Pass || len(got.Signatures) != maxDKIMSignatures+2 {
		t.Fatalf("%s with %d signatures", got.Result, len(got.Signatures))
	}
	last := got.Signatures[maxDKIMSignatures]
	if last.Result != PermError || !strings.Contains(last.Detail, "not checked") || last.Domain != "example.com" {
		t.Errorf("signature past the limit: %+v", last)
	}
}

// TestDkimBodyLength: signatures with l= made by python3-dkim (testdata,
// so this runs without it). RFC 6376 3.5: the first l octets of the
// canonicalized body are what is signed; content after them leaves the
// signature passing and says so (8.2).
func TestDkimBodyLength(t *testing.T) {
	r := dkimFakeResolver{txt: map[string]string{"l1._domainkey.list.example": mustRecord(t, dkimTestKey(t, "rsa2048.pem"))}}
	for _, c := range []struct {
		file     string
		edit     func(string) string
		want     string
		unsigned bool
	}{
		{"l-relaxed.eml", nil, Pass, false},
		{"l-simple.eml", nil, Pass, false},
		{"l-relaxed-appended.eml", nil, Pass, true},
		{"l-simple-appended.eml", nil, Pass, true},
		// relaxed: trailing empty lines are not content (3.4.4)
		{"l-relaxed.eml", func(m string) string { return m + "\r\n\r\n" }, Pass, false},
		{"l-relaxed.eml", func(m string) string { return strings.Replace(m, "Thanks,", "Thanks!", 1) }, Fail, false},
		{"l-relaxed-appended.eml", func(m string) string { return strings.Replace(m, "Thanks,", "Thanks!", 1) }, Fail, true},
		{"l-relaxed.eml", func(m string) string { return strings.Replace(m, "Subject: l= test", "Subject: l= test!", 1) }, Fail, false},
		// a body shorter than l= lacks what was signed
		{"l-simple.eml", func(m string) string { return strings.TrimSuffix(m, "ann\r\n") }, Fail, false},
	} {
		data, err := os.ReadFile(filepath.Join("testdata", "dkim", c.file))
		if err != nil {
			t.Fatal(err)
		}
		msg := string(data)
		name := c.file
		if c.edit != nil {
			msg = c.edit(msg)
			name += " edited"
		}
		got := dkimVerify(t, r, msg)
		if got.Result != c.want || len(got.Signatures) != 1 || got.Signatures[0].Unsigned != c.unsigned {
			t.Errorf("%s: %+v, want %s unsigned=%v", name, got, c.want, c.unsigned)
			continue
		}
		if c.want == Pass {
			if !strings.HasPrefix(got.Signatures[0].Detail, "l=") || got.UnsignedContent() != c.unsigned || !slices.Equal(got.Domains, []string{"list.example"}) {
				t.Errorf("%s: %+v, UnsignedContent %v", name, got, got.UnsignedContent())
			}
		}
	}
}

// TestDkimUnsignedContent: the message-level fact is true only when no
// passing signature covers the whole body.
func TestDkimUnsignedContent(t *testing.T) {
	for _, c := range []struct {
		sigs []DKIMSignature
		want bool
	}{
		{nil, false},
		{[]DKIMSignature{{Result: Pass, Unsigned: true}}, true},
		{[]DKIMSignature{{Result: Pass, Unsigned: true}, {Result: Pass}}, false},
		{[]DKIMSignature{{Result: Fail, Unsigned: false}, {Result: Pass, Unsigned: true}}, true},
		{[]DKIMSignature{{Result: Fail, Unsigned: true}}, false},
	} {
		if got := (DKIMResult{Signatures: c.sigs}).UnsignedContent(); got != c.want {
			t.Errorf("%+v: %v, want %v", c.sigs, got, c.want)
		}
	}
}

// TestDkimOddMessages: a message of header fields only, LF line ends, and
// folded signature fields verify as their CRLF equivalents do.
func TestDkimOddMessages(t *testing.T) {
	key := dkimTestKey(t, "rsa2048.pem")
	r := dkimFakeResolver{txt: map[string]string{"rsa1._domainkey.example.com": mustRecord(t, key)}}
	headerOnly := strings.SplitAfter(dkimTestMsg, "\r\n\r\n")[0]
	headerOnly = strings.TrimSuffix(headerOnly, "\r\n")
	for name, msg := range map[string]string{
		"header only": dkimSign(t, headerOnly, "example.com", "rsa1", key),
		"LF":          strings.ReplaceAll(dkimSign(t, dkimTestMsg, "example.com", "rsa1", key), "\r\n", "\n"),
	} {
		if got := dkimVerify(t, r, msg); got.Result != Pass {
			t.Errorf("%s: %+v", name, got)
		}
	}
	if got := dkimVerify(t, r, ""); got.Result != None {
		t.Errorf("empty message: %+v", got)
	}
}

func TestDkimHeaderFields(t *testing.T) {
	got := dkimHeaderFields([]byte("A: 1\r\n folded\r\nB: 2\nC: 3\r\n\r\nD: body\r\n"))
	want := []string{"A: 1\r\n folded", "B: 2", "C: 3"}
	if !slices.Equal(got, want) {
		t.Errorf("%q, want %q", got, want)
	}
	if !bytes.HasSuffix(dkimWithHeaderEnd([]byte("A: 1")), []byte("A: 1\r\n\r\n")) {
		t.Error("header without end not closed")
	}
}
