package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/sluicemail/sluice/mailauth"
)

const dkimUsage = `usage: sluice dkim keygen [--type rsa|ed25519] [--bits N] [--out PATH] DOMAIN SELECTOR

writes a new DKIM signing key (PEM, mode 0600; default DOMAIN.SELECTOR.pem in the
current directory, never over an existing file) and prints the TXT record to publish
at SELECTOR._domainkey.DOMAIN. --type defaults to rsa, --bits to 2048.
`

// cmdDkim is `sluice dkim keygen` (SPEC 5).
func cmdDkim(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "keygen" {
		fmt.Fprint(stderr, dkimUsage)
		return 2
	}
	fs := newFlags("dkim keygen", stderr)
	typ := fs.String("type", "rsa", "key `TYPE`: rsa or ed25519")
	bits := fs.Int("bits", 2048, "RSA key size in `N` bits (1024 to 8192)")
	out := fs.String("out", "", "write the key to `PATH` (default DOMAIN.SELECTOR.pem)")
	pos, err := parseArgs(fs, args[1:])
	if err != nil {
		return 2
	}
	if len(pos) != 2 {
		fmt.Fprint(stderr, dkimUsage)
		return 2
	}
	domain, selector := strings.TrimSuffix(pos[0], "."), pos[1]
	bitsSet := false
	fs.Visit(func(f *flag.Flag) { bitsSet = bitsSet || f.Name == "bits" })
	if msg := keygenProblem(domain, selector, *typ, *bits, bitsSet); msg != "" {
		fmt.Fprintf(stderr, "sluice dkim keygen: %s\n", msg)
		return 2
	}
	path := *out
	if path == "" {
		path = domain + "." + selector + ".pem"
	}

	key, err := mailauth.GenerateKey(*typ, *bits)
	if err != nil {
		fmt.Fprintf(stderr, "sluice dkim keygen: %v\n", err)
		return 1
	}
	record, err := mailauth.DKIMRecord(key.Public())
	if err != nil {
		fmt.Fprintf(stderr, "sluice dkim keygen: %v\n", err)
		return 1
	}
	pemData, err := mailauth.MarshalKey(key)
	if err != nil {
		fmt.Fprintf(stderr, "sluice dkim keygen: %v\n", err)
		return 1
	}
	if err := writeNewPrivate(path, pemData); err != nil {
		fmt.Fprintf(stderr, "sluice dkim keygen: %v\n", err)
		return 1
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	// stdout is what goes into the zone: the hint is a zone-file comment.
	fmt.Fprintf(stdout, "; key written to %s; in the config:\n;   dkim_sign:\n;     - {domain: %s, selector: %s, key: %s}\n", abs, domain, selector, abs)
	fmt.Fprintln(stdout, mailauth.ZoneTXT(selector+"._domainkey."+domain+".", record))
	return 0
}

// keygenProblem says what is wrong with keygen's arguments, "" if nothing.
// DOMAIN and SELECTOR name a DNS record and, by default, the key file, so
// they are held to host-name characters (RFC 6376 3.1: selectors are
// dot-separated sub-domain labels); no '/' can reach the file name.
func keygenProblem(domain, selector, typ string, bits int, bitsSet bool) string {
	for _, n := range []struct{ what, name string }{{"domain", domain}, {"selector", selector}} {
		if !dnsName(n.name) {
			return fmt.Sprintf("%s %q: want a DNS name (letters, digits, '-', dot-separated labels)", n.what, n.name)
		}
	}
	switch typ {
	case "rsa":
		if bits < 1024 || bits > 8192 {
			return fmt.Sprintf("--bits %d: RSA keys for DKIM are 1024 to 8192 bits (RFC 8301 3.2; 2048 is usual)", bits)
		}
	case "ed25519":
		if bitsSet {
			return "--bits applies to rsa keys; an Ed25519 key has no size to choose"
		}
	default:
		return fmt.Sprintf("--type %q: want rsa or ed25519", typ)
	}
	return ""
}

func dnsName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// writeNewPrivate writes data to a file that must not exist yet, readable
// by its owner only (a private key), and syncs it before saying it is done.
func writeNewPrivate(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists; not overwriting a key (choose another selector or --out)", path)
	}
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return f.Close()
}
