package mailauth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// The DKIM primitives ARC is built on (RFC 6376 3.2, 3.4, 3.7, 6.1.2),
// written here because go-msgauth/dkim exports only whole-message
// verification of DKIM-Signature fields, not a hash over chosen fields.
// The names start with arc so they do not meet the DKIM verifier's.

// arcField is one header field as it came: name, and the whole field with
// its folding and final CRLF.
type arcField struct {
	name string // as written; compare with strings.EqualFold
	raw  string
}

// arcSplit splits a message into its header fields and body. Lines end in
// CRLF after it (a message with bare LF line ends is taken as if each LF
// were CRLF, as a message read from a file would be sent).
func arcSplit(msg []byte) ([]arcField, []byte) {
	if bytes.IndexByte(msg, '\n') >= 0 && arcHasBareLF(msg) {
		msg = arcCRLF(msg)
	}
	var fields []arcField
	s := msg
	for len(s) > 0 {
		if bytes.HasPrefix(s, []byte("\r\n")) {
			return fields, s[2:]
		}
		// A field runs to the CRLF not followed by folding white space.
		end := 0
		for {
			i := bytes.Index(s[end:], []byte("\r\n"))
			if i < 0 {
				end = len(s)
				break
			}
			end += i + 2
			if end >= len(s) || (s[end] != ' ' && s[end] != '\t') {
				break
			}
		}
		raw := string(s[:end])
		s = s[end:]
		name, _, ok := strings.Cut(raw, ":")
		if !ok {
			continue // not a header field; nothing can sign it
		}
		fields = append(fields, arcField{name: strings.TrimRight(name, " \t"), raw: raw})
	}
	return fields, nil
}

func arcHasBareLF(msg []byte) bool {
	for i, c := range msg {
		if c == '\n' && (i == 0 || msg[i-1] != '\r') {
			return true
		}
	}
	return false
}

func arcCRLF(msg []byte) []byte {
	out := make([]byte, 0, len(msg)+len(msg)/32)
	for i, c := range msg {
		if c == '\n' && (i == 0 || msg[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

// arcRelaxedHeader is RFC 6376 3.4.2: lower-case name, unfolded value with
// runs of white space as one space, none around the colon or at the end.
func arcRelaxedHeader(raw string) string {
	name, value, _ := strings.Cut(raw, ":")
	var b strings.Builder
	b.Grow(len(raw))
	b.WriteString(strings.ToLower(strings.TrimRight(name, " \t")))
	b.WriteByte(':')
	space := false
	started := false
	for i := 0; i < len(value); i++ {
		switch c := value[i]; c {
		case '\r', '\n':
			// unfolding removes the line breaks; the WSP after them stays
		case ' ', '\t':
			space = true
		default:
			if space && started {
				b.WriteByte(' ')
			}
			space, started = false, true
			b.WriteByte(c)
		}
	}
	b.WriteString("\r\n")
	return b.String()
}

// arcCanonHeader canonicalizes one field by c= ("simple" or "relaxed").
func arcCanonHeader(raw, canon string) string {
	if canon == "relaxed" {
		return arcRelaxedHeader(raw)
	}
	if !strings.HasSuffix(raw, "\r\n") {
		raw += "\r\n"
	}
	return raw
}

// arcCanonBody is RFC 6376 3.4.3 (simple) or 3.4.4 (relaxed).
func arcCanonBody(body []byte, canon string) []byte {
	if canon != "relaxed" {
		for bytes.HasSuffix(body, []byte("\r\n\r\n")) {
			body = body[:len(body)-2]
		}
		if len(body) == 0 {
			return []byte("\r\n")
		}
		if !bytes.HasSuffix(body, []byte("\r\n")) {
			return append(body[:len(body):len(body)], '\r', '\n')
		}
		return body
	}
	out := make([]byte, 0, len(body)+2)
	blank := 0 // empty lines held back until a line with content follows
	for len(body) > 0 {
		line := body
		if i := bytes.Index(body, []byte("\r\n")); i >= 0 {
			line, body = body[:i], body[i+2:]
		} else {
			body = nil
		}
		var l []byte
		space := false
		for _, c := range line {
			if c == ' ' || c == '\t' {
				space = true
				continue
			}
			if space {
				l = append(l, ' ')
				space = false
			}
			l = append(l, c)
		}
		if len(l) == 0 {
			blank++
			continue
		}
		for ; blank > 0; blank-- {
			out = append(out, '\r', '\n')
		}
		out = append(append(out, l...), '\r', '\n')
	}
	return out
}

// arcTags parses a tag=value list (RFC 6376 3.2): a tag twice, or a part
// that is not tag=value, is an error; white space around values goes.
func arcTags(s string) (map[string]string, error) {
	tags := make(map[string]string, 8)
	for part := range strings.SplitSeq(s, ";") {
		if strings.Trim(part, " \t\r\n") == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		k = strings.Trim(k, " \t\r\n")
		if !ok || k == "" {
			return nil, fmt.Errorf("malformed tag list at %q", strings.TrimSpace(part))
		}
		if _, dup := tags[k]; dup {
			return nil, fmt.Errorf("tag %s= twice", k)
		}
		tags[k] = strings.Trim(v, " \t\r\n")
	}
	return tags, nil
}

// arcWithoutB is a signature field with the value of its b= tag removed,
// as the signature was computed (RFC 6376 3.7, RFC 8617 5.1.1).
func arcWithoutB(raw string) string {
	colon := strings.IndexByte(raw, ':')
	if colon < 0 {
		return raw
	}
	var b strings.Builder
	b.Grow(len(raw))
	b.WriteString(raw[:colon+1])
	rest := raw[colon+1:]
	for len(rest) > 0 {
		part := rest
		if i := strings.IndexByte(rest, ';'); i >= 0 {
			part, rest = rest[:i+1], rest[i+1:]
		} else {
			rest = ""
		}
		k, _, ok := strings.Cut(part, "=")
		if ok && strings.Trim(k, " \t\r\n") == "b" {
			b.WriteString(k)
			b.WriteByte('=')
			if strings.HasSuffix(part, ";") {
				b.WriteByte(';')
			}
			continue
		}
		b.WriteString(part)
	}
	return b.String()
}

// arcB64 decodes a base64 tag value, which may hold folding white space.
func arcB64(v string) ([]byte, error) {
	v = strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, v)
	return base64.StdEncoding.DecodeString(v)
}

// arcTempError marks a key lookup that failed for now: the chain is
// temperror, not fail.
type arcTempError struct{ err error }

func (e arcTempError) Error() string { return e.err.Error() }
func (e arcTempError) Unwrap() error { return e.err }

// arcLookupKey fetches the public key at selector._domainkey.domain (RFC
// 6376 3.6.2.2), RSA or Ed25519 (RFC 8463).
func arcLookupKey(ctx context.Context, r Resolver, selector, domain string) (crypto.PublicKey, error) {
	name := selector + "._domainkey." + strings.TrimSuffix(domain, ".") + "."
	txts, err := r.LookupTXT(ctx, name)
	if IsNotFound(err) {
		return nil, fmt.Errorf("no key at %s", name)
	}
	if err != nil {
		return nil, arcTempError{fmt.Errorf("key at %s: %w", name, err)}
	}
	var lastErr error = fmt.Errorf("no key at %s", name)
	for _, txt := range txts {
		k, err := arcParseKey(txt)
		if err == nil {
			return k, nil
		}
		lastErr = fmt.Errorf("key at %s: %w", name, err)
	}
	return nil, lastErr
}

func arcParseKey(txt string) (crypto.PublicKey, error) {
	tags, err := arcTags(txt)
	if err != nil {
		return nil, err
	}
	if v, ok := tags["v"]; ok && v != "DKIM1" {
		return nil, fmt.Errorf("v=%s is not DKIM1", v)
	}
	if h, ok := tags["h"]; ok && !arcListHas(h, "sha256") {
		return nil, errors.New("key does not allow sha256")
	}
	p, ok := tags["p"]
	if !ok {
		return nil, errors.New("key record without p=")
	}
	der, err := arcB64(p)
	if err != nil {
		return nil, fmt.Errorf("p=: %w", err)
	}
	if len(der) == 0 {
		return nil, errors.New("key revoked (empty p=)")
	}
	switch k := tags["k"]; k {
	case "", "rsa":
		pub, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			// Some publish the bare PKCS#1 key (RFC 6376 3.6.1 says SPKI).
			if pk, err1 := x509.ParsePKCS1PublicKey(der); err1 == nil {
				return pk, nil
			}
			return nil, fmt.Errorf("p=: %w", err)
		}
		rk, ok := pub.(*rsa.PublicKey)
		if !ok {
			return nil, errors.New("k=rsa but p= is not an RSA key")
		}
		return rk, nil
	case "ed25519":
		if len(der) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("ed25519 key of %d bytes", len(der))
		}
		return ed25519.PublicKey(der), nil
	default:
		return nil, fmt.Errorf("key type k=%s", k)
	}
}

func arcListHas(list, want string) bool {
	for v := range strings.SplitSeq(list, ":") {
		if strings.EqualFold(strings.TrimSpace(v), want) {
			return true
		}
	}
	return false
}

// arcVerifySig checks sig over data's SHA-256 with key, by a= (RFC 8301:
// no SHA-1, RSA keys of 1024 bits at least; RFC 8463 for Ed25519).
func arcVerifySig(algo string, key crypto.PublicKey, data, sig []byte) error {
	sum := sha256.Sum256(data)
	switch algo {
	case "rsa-sha256":
		k, ok := key.(*rsa.PublicKey)
		if !ok {
			return errors.New("a=rsa-sha256 with a key that is not RSA")
		}
		if k.N.BitLen() < 1024 {
			return fmt.Errorf("RSA key of %d bits", k.N.BitLen())
		}
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, sum[:], sig); err != nil {
			return errors.New("signature does not verify")
		}
		return nil
	case "ed25519-sha256":
		k, ok := key.(ed25519.PublicKey)
		if !ok {
			return errors.New("a=ed25519-sha256 with a key that is not Ed25519")
		}
		if !ed25519.Verify(k, sum[:], sig) {
			return errors.New("signature does not verify")
		}
		return nil
	default:
		return fmt.Errorf("algorithm a=%s", algo)
	}
}
