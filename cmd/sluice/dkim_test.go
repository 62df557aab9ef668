package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rsa"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/sluicemail/sluice/internal/dnstest"
	"github.com/sluicemail/sluice/mailauth"
)

// keygenRecord parses the TXT record keygen printed, as a name server
// loading the operator's zone file would.
func keygenRecord(t *testing.T, out string) *dns.TXT {
	t.Helper()
	var zoneLines []string
	for _, l := range strings.Split(out, "\n") {
		if l != "" && !strings.HasPrefix(l, ";") {
			zoneLines = append(zoneLines, l)
		}
	}
	if len(zoneLines) != 1 {
		t.Fatalf("want one record line:\n%s", out)
	}
	zp := dns.NewZoneParser(strings.NewReader(out), "", "")
	rr, ok := zp.Next()
	if !ok || zp.Err() != nil {
		t.Fatalf("not a zone file record (%v):\n%s", zp.Err(), out)
	}
	txt, ok := rr.(*dns.TXT)
	if !ok {
		t.Fatalf("%T, want TXT", rr)
	}
	for _, s := range txt.Txt {
		if len(s) > 255 {
			t.Errorf("a string of %d octets", len(s))
		}
	}
	return txt
}

// TestDkimKeygenBinary: `sluice dkim keygen` writes a private key file of
// mode 0600 and prints a record that, published, verifies what the key
// signs; it never overwrites a key.
func TestDkimKeygenBinary(t *testing.T) {
	bin := buildSluice(t)
	dir := t.TempDir()
	for _, c := range []struct {
		args      []string
		file      string
		name      string
		rsaBits   int // 0: Ed25519
		nStrings  int
		ktag      string
		signedFor string
	}{
		{[]string{"dkim", "keygen", "example.com", "s1"}, "example.com.s1.pem", "s1._domainkey.example.com.", 2048, 2, "k=rsa", "example.com"},
		{[]string{"dkim", "keygen", "--type", "rsa", "--bits", "4096", "Example.org.", "big"}, "Example.org.big.pem", "big._domainkey.example.org.", 4096, 3, "k=rsa", "example.org"},
		{[]string{"dkim", "keygen", "--type", "ed25519", "example.com", "e1", "--out", "keys/ed.pem"}, "keys/ed.pem", "e1._domainkey.example.com.", 0, 1, "k=ed25519", "example.com"},
	} {
		os.MkdirAll(filepath.Join(dir, "keys"), 0o755)
		code, out, errs := sluiceIn(t, bin, dir, nil, c.args...)
		if code != 0 || errs != "" {
			t.Fatalf("%q: exit %d\n%s%s", c.args, code, out, errs)
		}
		path := filepath.Join(dir, c.file)
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", c.file, fi.Mode().Perm())
		}
		if !strings.Contains(out, "key: "+path+"}") {
			t.Errorf("%q: the config hint does not name %s:\n%s", c.args, path, out)
		}
		key, err := mailauth.LoadKey(path)
		if err != nil {
			t.Fatal(err)
		}
		switch k := key.(type) {
		case *rsa.PrivateKey:
			if k.N.BitLen() != c.rsaBits {
				t.Errorf("%s: %d bits, want %d", c.file, k.N.BitLen(), c.rsaBits)
			}
		case ed25519.PrivateKey:
			if c.rsaBits != 0 {
				t.Errorf("%s: Ed25519, want RSA", c.file)
			}
		}
		txt := keygenRecord(t, out)
		if !strings.EqualFold(txt.Hdr.Name, c.name) || len(txt.Txt) != c.nStrings || !strings.Contains(txt.Txt[0], c.ktag) {
			t.Errorf("%q: record %s, want %d strings at %s with %s", c.args, txt, c.nStrings, c.name, c.ktag)
		}

		// Published as printed, the record verifies the key's signature.
		txt.Hdr.Name = strings.ToLower(txt.Hdr.Name)
		res := dnstest.Serve(t, map[string][]dns.RR{txt.Hdr.Name: {txt}}, nil)
		msg := "From: a@" + c.signedFor + "\r\nSubject: hi\r\n\r\nbody\r\n"
		sig, err := mailauth.NewSigner([]mailauth.SignKey{{Domain: c.signedFor, Selector: strings.SplitN(txt.Hdr.Name, ".", 2)[0], Key: key}}).Sign([]byte(msg), c.signedFor)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if got := mailauth.VerifyDKIM(ctx, res, []byte(sig+msg)); got.Result != mailauth.Pass {
			t.Errorf("%q: a message signed with the key, verified against the printed record: %+v", c.args, got)
		}
		cancel()

		// A second run for the same file refuses and leaves the key.
		before, _ := os.ReadFile(path)
		code, out, errs = sluiceIn(t, bin, dir, nil, c.args...)
		after, _ := os.ReadFile(path)
		if code != 1 || out != "" || !strings.Contains(errs, "exists; not overwriting") || string(before) != string(after) {
			t.Errorf("%q again: exit %d, key kept %v\n%s%s", c.args, code, string(before) == string(after), out, errs)
		}
	}
}

// TestDkimKeygenUsage: wrong arguments exit 2, say why, and write nothing.
func TestDkimKeygenUsage(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "k.pem")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"dkim"}, "usage: sluice dkim keygen"},
		{[]string{"dkim", "rotate"}, "usage: sluice dkim keygen"},
		{[]string{"dkim", "keygen", "example.com"}, "usage: sluice dkim keygen"},
		{[]string{"dkim", "keygen", "--type", "dsa", "example.com", "s1"}, `--type "dsa"`},
		{[]string{"dkim", "keygen", "--bits", "512", "example.com", "s1"}, "--bits 512"},
		{[]string{"dkim", "keygen", "--type", "ed25519", "--bits", "2048", "example.com", "s1"}, "--bits applies to rsa"},
		{[]string{"dkim", "keygen", "../etc", "s1"}, `domain "../etc"`},
		{[]string{"dkim", "keygen", "example.com", "s/1"}, `selector "s/1"`},
		{[]string{"dkim", "keygen", "--frobnicate", "example.com", "s1"}, "flag provided but not defined"},
	} {
		code, stdout, stderr := runCLI(append(c.args, "--out", out)...)
		if code != 2 || stdout != "" || !strings.Contains(stderr, c.want) {
			t.Errorf("%q: exit %d, stderr lacks %q\n%s%s", c.args, code, c.want, stdout, stderr)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a refused keygen wrote %s", out)
	}
}
