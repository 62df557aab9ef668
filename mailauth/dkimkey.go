package mailauth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"strings"
)

// GenerateKey makes a new DKIM signing key: typ "rsa" of bits bits (at
// least 1024; 2048 is what operators should publish) or "ed25519" (RFC
// 8463; bits is ignored).
func GenerateKey(typ string, bits int) (crypto.Signer, error) {
	switch typ {
	case "rsa":
		if bits < minRSABits {
			return nil, fmt.Errorf("RSA key of %d bits: DKIM needs at least %d (RFC 8301 3.2)", bits, minRSABits)
		}
		return rsa.GenerateKey(rand.Reader, bits)
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	default:
		return nil, fmt.Errorf("key type %q: want rsa or ed25519", typ)
	}
}

// MarshalKey encodes key as PEM PKCS#8 ("PRIVATE KEY"), which LoadKey reads.
func MarshalKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// DKIMRecord is the key record to publish at SELECTOR._domainkey.DOMAIN
// for the public key pub (RFC 6376 3.6.1): for RSA, p= is the DER
// SubjectPublicKeyInfo; for Ed25519 the 32 raw octets (RFC 8463 4).
func DKIMRecord(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			return "", err
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(k), nil
	default:
		return "", fmt.Errorf("%T: DKIM keys are RSA or Ed25519", pub)
	}
}

// TXTStrings cuts a TXT record's text into the character-strings of at most
// 255 octets that one record holds (RFC 1035 3.3.14); resolvers join them
// back (RFC 6376 3.6.2.2).
func TXTStrings(text string) []string {
	var out []string
	for len(text) > 255 {
		out = append(out, text[:255])
		text = text[255:]
	}
	return append(out, text)
}

// ZoneTXT formats the record text for name as a zone file line with its
// strings quoted:
//
//	name IN TXT ( "..." "..." )
func ZoneTXT(name, text string) string {
	var b strings.Builder
	b.WriteString(name)
	b.WriteString(" IN TXT (")
	for _, s := range TXTStrings(text) {
		b.WriteString(" \"")
		b.WriteString(s) // a key record has no '"' or '\\' to escape
		b.WriteString("\"")
	}
	b.WriteString(" )")
	return b.String()
}
