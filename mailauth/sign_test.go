package mailauth

import (
	"crypto/ed25519"
	"crypto/rsa"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// dkimTag returns tag's value in a DKIM-Signature field, whitespace removed.
func dkimTag(field, tag string) string {
	_, value, _ := strings.Cut(field, ":")
	for _, kv := range strings.Split(value, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.TrimSpace(k) == tag {
			return strings.Join(strings.Fields(v), "")
		}
	}
	return ""
}

func TestDkimSign(t *testing.T) {
	rsaKey := dkimTestKey(t, "rsa2048.pem")
	edKey := dkimTestKey(t, "ed25519.pem")
	s := NewSigner([]SignKey{
		{Domain: "Example.COM", Selector: "s1", Key: rsaKey},
		{Domain: "ed.example", Selector: "e1", Key: edKey},
	})
	r := dkimFakeResolver{txt: map[string]string{
		"s1._domainkey.example.com": mustRecord(t, rsaKey),
		"e1._domainkey.ed.example":  mustRecord(t, edKey),
	}}
	msg := "From: a@example.com\r\nto: b@example.net\r\nSubject: hi\r\nX-Mailer: not signed\r\n" +
		"List-Unsubscribe: <https://example.com/u>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" +
		"Received: by x\r\nTo: c@example.net\r\n\r\nbody\r\n"
	for _, c := range []struct{ domain, alg, d string }{
		{"example.com", "rsa-sha256", "Example.COM"},
		{"EXAMPLE.com.", "rsa-sha256", "Example.COM"},
		{"ed.example", "ed25519-sha256", "ed.example"},
	} {
		sig, err := s.Sign([]byte(msg), c.domain)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(sig, "DKIM-Signature: ") || !strings.HasSuffix(sig, "\r\n") || strings.Count(sig, "\r\n") != strings.Count(sig, "\n") {
			t.Errorf("%s: not a CRLF field: %q", c.domain, sig)
		}
		if got := dkimTag(sig, "a"); got != c.alg {
			t.Errorf("%s: a=%s, want %s", c.domain, got, c.alg)
		}
		if got := dkimTag(sig, "c"); got != "relaxed/relaxed" {
			t.Errorf("%s: c=%s", c.domain, got)
		}
		if got := dkimTag(sig, "d"); got != c.d {
			t.Errorf("%s: d=%s, want %s", c.domain, got, c.d)
		}
		// From oversigned; both To fields; absent ones and X-Mailer,
		// Received left out
		if got, want := dkimTag(sig, "h"), "From:From:Subject:To:To:List-Unsubscribe:List-Unsubscribe-Post"; got != want {
			t.Errorf("%s: h=%s, want %s", c.domain, got, want)
		}
		if got := dkimVerify(t, r, sig+msg); got.Result != Pass {
			t.Errorf("%s: signed message verifies %+v", c.domain, got)
		}
		// RFC 6376 5.4.2: a second From added later breaks it
		if got := dkimVerify(t, r, sig+"From: evil@example.org\r\n"+msg); got.Result != Fail {
			t.Errorf("%s: with a From added: %s", c.domain, got.Result)
		}
	}
	if sig, err := s.Sign([]byte(msg), "other.example"); sig != "" || err != nil {
		t.Errorf("domain without a key: %q, %v", sig, err)
	}
	var none *Signer
	if sig, err := none.Sign([]byte(msg), "example.com"); sig != "" || err != nil {
		t.Errorf("nil Signer: %q, %v", sig, err)
	}
}

// TestDkimSignWithoutFrom: h= still names From (RFC 6376 5.4), so a From
// added later breaks the signature.
func TestDkimSignWithoutFrom(t *testing.T) {
	if got := signHeaderKeys([]byte("Subject: x\r\n\r\n")); !slices.Equal(got, []string{"From", "Subject"}) {
		t.Errorf("h= %q", got)
	}
}

func TestDkimLoadKey(t *testing.T) {
	for _, c := range []struct {
		file string
		ok   func(any) bool
		err  string
	}{
		{"rsa2048.pem", func(k any) bool { _, ok := k.(*rsa.PrivateKey); return ok }, ""},
		{"rsa1024-pkcs8.pem", func(k any) bool { _, ok := k.(*rsa.PrivateKey); return ok }, ""},
		{"ed25519.pem", func(k any) bool { _, ok := k.(ed25519.PrivateKey); return ok }, ""},
		{"rsa512.pem", nil, "512 bits"},
		{"ec.pem", nil, "RSA or Ed25519"},
		{"dkimpy.py", nil, "no PEM block"},
		{"absent.pem", nil, "no such file"},
	} {
		k, err := LoadKey(filepath.Join("testdata", "dkim", c.file))
		switch {
		case c.err == "" && (err != nil || !c.ok(k)):
			t.Errorf("%s: %T, %v", c.file, k, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: error %v, want one containing %q", c.file, err, c.err)
		}
	}
}

// TestDkimLoadSigner: the config entries become a Signer; a bad entry is
// an error naming it, so a reload keeps the last good Signer. A new
// selector and key for a domain (rotation) is a new Signer.
func TestDkimLoadSigner(t *testing.T) {
	dir := filepath.Join("testdata", "dkim")
	s, err := LoadSigner([]SignKeyFile{
		{Domain: "example.com", Selector: "s1", KeyPath: filepath.Join(dir, "rsa2048.pem")},
		{Domain: "ed.example", Selector: "e1", KeyPath: filepath.Join(dir, "ed25519.pem")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Domains(); len(got) != 2 || !slices.Contains(got, "example.com") || !slices.Contains(got, "ed.example") {
		t.Errorf("Domains %q", got)
	}
	rotated, err := LoadSigner([]SignKeyFile{{Domain: "example.com", Selector: "s2", KeyPath: filepath.Join(dir, "ed25519.pem")}})
	if err != nil {
		t.Fatal(err)
	}
	sig, err := rotated.Sign([]byte(dkimTestMsg), "example.com")
	if err != nil || dkimTag(sig, "s") != "s2" || dkimTag(sig, "a") != "ed25519-sha256" {
		t.Errorf("rotated: %q, %v", sig, err)
	}
	for _, c := range []struct {
		entries []SignKeyFile
		err     string
	}{
		{[]SignKeyFile{{Domain: "example.com", Selector: "s1", KeyPath: filepath.Join(dir, "rsa512.pem")}}, "example.com"},
		{[]SignKeyFile{{Domain: "example.com", Selector: "s1", KeyPath: filepath.Join(dir, "absent.pem")}}, "absent.pem"},
		{[]SignKeyFile{{Domain: "example.com", KeyPath: filepath.Join(dir, "rsa2048.pem")}}, "selector"},
		{[]SignKeyFile{
			{Domain: "example.com", Selector: "s1", KeyPath: filepath.Join(dir, "rsa2048.pem")},
			{Domain: "EXAMPLE.com", Selector: "s2", KeyPath: filepath.Join(dir, "ed25519.pem")},
		}, "listed twice"},
	} {
		if s, err := LoadSigner(c.entries); err == nil || s != nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%+v: %v, want an error containing %q", c.entries, err, c.err)
		}
	}
}

// TestDkimKeyRoundTrip: a generated key written by MarshalKey loads back,
// and its record verifies what it signs.
func TestDkimKeyRoundTrip(t *testing.T) {
	for _, typ := range []string{"ed25519", "rsa"} {
		k, err := GenerateKey(typ, 1024)
		if err != nil {
			t.Fatal(err)
		}
		pemData, err := MarshalKey(k)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "k.pem")
		if err := os.WriteFile(path, pemData, 0o600); err != nil {
			t.Fatal(err)
		}
		loaded, err := LoadKey(path)
		if err != nil {
			t.Fatal(err)
		}
		msg := dkimSign(t, dkimTestMsg, "example.com", "s1", loaded)
		r := dkimFakeResolver{txt: map[string]string{"s1._domainkey.example.com": mustRecord(t, k)}}
		if got := dkimVerify(t, r, msg); got.Result != Pass {
			t.Errorf("%s: %+v", typ, got)
		}
	}
	if _, err := GenerateKey("rsa", 512); err == nil {
		t.Error("512-bit RSA key generated")
	}
	if _, err := GenerateKey("dsa", 0); err == nil {
		t.Error("dsa key generated")
	}
}

func TestDkimTXTStrings(t *testing.T) {
	text := strings.Repeat("a", 255) + strings.Repeat("b", 255) + "c"
	got := TXTStrings(text)
	if len(got) != 3 || len(got[0]) != 255 || len(got[1]) != 255 || got[2] != "c" || strings.Join(got, "") != text {
		t.Errorf("%q", got)
	}
	if got := TXTStrings("short"); !slices.Equal(got, []string{"short"}) {
		t.Errorf("%q", got)
	}
	if got, want := ZoneTXT("s._domainkey.example.com.", "v=DKIM1; p=x"), `s._domainkey.example.com. IN TXT ( "v=DKIM1; p=x" )`; got != want {
		t.Errorf("%s, want %s", got, want)
	}
}
