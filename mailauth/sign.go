package mailauth

import "crypto"

// SignKey is one DKIM signing key: mail whose From domain is Domain is
// signed with d=Domain, s=Selector.
type SignKey struct {
	Domain   string
	Selector string
	Key      crypto.Signer // *rsa.PrivateKey (>= 1024 bits) or ed25519.PrivateKey
}

// Signer signs outbound mail with the key of its From domain.
type Signer struct {
	keys map[string]SignKey // by lower-case domain
}

// NewSigner makes a Signer of keys.
func NewSigner(keys []SignKey) *Signer {
	s := &Signer{keys: map[string]SignKey{}}
	for _, k := range keys {
		s.keys[k.Domain] = k
	}
	return s
}

// Sign returns the DKIM-Signature field (with its CRLF) for msg signed with
// the key of domain, relaxed/relaxed, or "" when no key is for domain.
// STUB: replaced by the signing implementation.
func (s *Signer) Sign(msg []byte, domain string) (string, error) {
	return "", nil
}

// LoadKey reads a PEM private key (PKCS#8, PKCS#1 RSA) from path.
// STUB: replaced by the signing implementation.
func LoadKey(path string) (crypto.Signer, error) {
	return nil, nil
}
