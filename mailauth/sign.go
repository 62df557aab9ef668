package mailauth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/emersion/go-msgauth/dkim"
)

// SignKey is one DKIM signing key: mail whose From domain is Domain is
// signed with d=Domain, s=Selector.
type SignKey struct {
	Domain   string
	Selector string
	Key      crypto.Signer // *rsa.PrivateKey (>= 1024 bits) or ed25519.PrivateKey
}

// Signer signs outbound mail with the key of its From domain. It is not
// changed once made, so goroutines share it; a config reload makes a new
// one (key rotation: a new selector and key for a domain) and swaps it in.
type Signer struct {
	keys map[string]SignKey // by lower-case domain
}

// NewSigner makes a Signer of keys. A later key for the same domain
// replaces an earlier one; LoadSigner refuses such a list instead.
func NewSigner(keys []SignKey) *Signer {
	s := &Signer{keys: map[string]SignKey{}}
	for _, k := range keys {
		s.keys[signDomain(k.Domain)] = k
	}
	return s
}

// SignKeyFile is one `dkim_sign:` entry of the config (SPEC 6).
type SignKeyFile struct {
	Domain   string
	Selector string
	KeyPath  string
}

// LoadSigner reads the key files of the `dkim_sign:` entries and makes a
// Signer of them: what the relay builds at start and at every config
// reload. Any unreadable or unfit key, an empty domain or selector, or a
// domain listed twice is an error naming the entry, so a bad reload keeps
// the last good Signer.
func LoadSigner(entries []SignKeyFile) (*Signer, error) {
	keys := make([]SignKey, 0, len(entries))
	seen := map[string]bool{}
	for _, e := range entries {
		if e.Domain == "" || e.Selector == "" {
			return nil, fmt.Errorf("dkim_sign: an entry needs a domain and a selector (domain %q, selector %q)", e.Domain, e.Selector)
		}
		d := signDomain(e.Domain)
		if seen[d] {
			return nil, fmt.Errorf("dkim_sign: domain %s listed twice", e.Domain)
		}
		seen[d] = true
		key, err := LoadKey(e.KeyPath)
		if err != nil {
			return nil, fmt.Errorf("dkim_sign: %s: %w", e.Domain, err)
		}
		keys = append(keys, SignKey{Domain: e.Domain, Selector: e.Selector, Key: key})
	}
	return NewSigner(keys), nil
}

// Domains returns the domains s has a key for, lower-case.
func (s *Signer) Domains() []string {
	if s == nil {
		return nil
	}
	out := make([]string, 0, len(s.keys))
	for d := range s.keys {
		out = append(out, d)
	}
	return out
}

// signedFields are the header fields a signature covers when the message
// has them: those RFC 6376 5.4.1 recommends and the list headers the relay
// adds (SPEC 6), whose change would alter what the reader sees or does.
var signedFields = []string{
	"From", "Reply-To", "Subject", "Date", "To", "Cc", "Message-ID",
	"In-Reply-To", "References", "MIME-Version", "Content-Type",
	"Content-Transfer-Encoding", "List-Unsubscribe", "List-Unsubscribe-Post",
}

// Sign returns the DKIM-Signature field (with its CRLF) for msg signed with
// the key of domain, relaxed/relaxed, or "" when no key is for domain.
// The field goes on top of msg unchanged.
func (s *Signer) Sign(msg []byte, domain string) (string, error) {
	if s == nil {
		return "", nil
	}
	k, ok := s.keys[signDomain(domain)]
	if !ok {
		return "", nil
	}
	ds, err := dkim.NewSigner(&dkim.SignOptions{
		Domain:                 k.Domain,
		Selector:               k.Selector,
		Signer:                 k.Key,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             signHeaderKeys(msg),
	})
	if err != nil {
		return "", fmt.Errorf("dkim sign for %s: %w", k.Domain, err)
	}
	_, werr := ds.Write(dkimWithHeaderEnd(msg))
	if err := ds.Close(); err != nil {
		return "", fmt.Errorf("dkim sign for %s: %w", k.Domain, err)
	}
	if werr != nil {
		return "", fmt.Errorf("dkim sign for %s: %w", k.Domain, werr)
	}
	return ds.Signature(), nil
}

// signHeaderKeys lists the h= of a signature of msg: every instance of the
// signedFields msg has, and From once more than it has. RFC 6376 5.4.2: a
// name listed past its instances makes a From added later (a second author
// shown to the reader) break the signature. A message without From still
// lists it, as the RFC requires.
func signHeaderKeys(msg []byte) []string {
	count := map[string]int{}
	for _, f := range dkimHeaderFields(msg) {
		name, _, ok := strings.Cut(f, ":")
		if ok {
			count[strings.ToLower(strings.TrimSpace(name))]++
		}
	}
	var keys []string
	for _, name := range signedFields {
		n := count[strings.ToLower(name)]
		if name == "From" {
			n++
		}
		for range n {
			keys = append(keys, name)
		}
	}
	return keys
}

func signDomain(d string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
}

// minRSABits is the smallest RSA key sluice signs with: RFC 8301 3.2,
// signers MUST use at least 1024 bits.
const minRSABits = 1024

// LoadKey reads a PEM private key (PKCS#8, PKCS#1 RSA) from path.
func LoadKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dkim key: %w", err)
	}
	key, err := ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("dkim key %s: %w", path, err)
	}
	return key, nil
}

// ParseKey reads a PEM private key: PKCS#8 ("PRIVATE KEY", RSA or
// Ed25519) or PKCS#1 ("RSA PRIVATE KEY"). An RSA key under 1024 bits, or a
// key of another kind, is an error.
func ParseKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q: want PRIVATE KEY or RSA PRIVATE KEY", block.Type)
	}
	if err != nil {
		return nil, err
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if bits := k.N.BitLen(); bits < minRSABits {
			return nil, fmt.Errorf("RSA key of %d bits: DKIM needs at least %d (RFC 8301 3.2)", bits, minRSABits)
		}
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	default:
		return nil, fmt.Errorf("%T: DKIM signs with RSA or Ed25519 keys", key)
	}
}
