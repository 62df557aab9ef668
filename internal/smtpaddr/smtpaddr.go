// Package smtpaddr checks envelope addresses as the relay receives them and
// gives each its one canonical wire form, so that what is stored, judged,
// retried and bounced is the same bytes, and nothing smuggles a route.
package smtpaddr

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// Errors a caller turns into replies: Control and Syntax are 501 5.1.3 at the
// command (RFC 5321 4.1.2 allows neither in a path), UTF8 is 553.
var (
	ErrControl = errors.New("address holds a control character")
	ErrUTF8    = errors.New("address is not valid UTF-8")
	ErrSyntax  = errors.New("address syntax")
)

// Limits from RFC 5321 4.5.3.1: a domain of 255 octets, a path of 256; the
// local part's 64 is not enforced (real systems exceed it and Postfix does
// not refuse it), the whole address is.
const (
	maxDomain  = 255
	maxAddress = 254 + 64
)

// Canonical checks an address as go-smtp hands it over (the local part
// already unquoted, "" for the null reverse-path) and returns it in wire
// form: the local part quoted only when it is not a dot-string (RFC 5321
// 4.1.2), so `"john smith"@example.com` stays quoted on the next hop and
// `"info"@example.com` becomes `info@example.com`, the same mailbox.
func Canonical(addr string) (string, error) {
	if addr == "" {
		return "", nil
	}
	for i := 0; i < len(addr); i++ {
		if c := addr[i]; c < 0x20 || c == 0x7f {
			return "", ErrControl
		}
	}
	if !utf8.ValidString(addr) {
		return "", ErrUTF8
	}
	if len(addr) > maxAddress {
		return "", ErrSyntax
	}
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 {
		return "", ErrSyntax
	}
	local, domain := addr[:at], addr[at+1:]
	if !validDomain(domain) {
		return "", ErrSyntax
	}
	if isDotString(local) {
		return addr, nil
	}
	return Quote(local) + "@" + domain, nil
}

// Local returns the local part of a canonical address, unquoted.
func Local(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return addr
	}
	return Unquote(addr[:at])
}

// Routed reports whether a local part asks the receiving system to route
// the mail on: user%host, host!user, or an '@' inside a quoted local part.
// Sendmail-era hosts behind the relay may honour them, so a client that may
// not relay must not use them (Postfix refuses them the same way).
func Routed(addr string) bool {
	return strings.ContainsAny(Local(addr), "%!@")
}

// Quote returns a local part as a quoted-string (RFC 5321 4.1.2
// Quoted-string): backslash and double quote escaped.
func Quote(local string) string {
	var b strings.Builder
	b.Grow(len(local) + 2)
	b.WriteByte('"')
	for i := 0; i < len(local); i++ {
		if c := local[i]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(local[i])
	}
	b.WriteByte('"')
	return b.String()
}

// Unquote undoes Quote; a local part that is not quoted is returned as is.
func Unquote(local string) string {
	if len(local) < 2 || local[0] != '"' || local[len(local)-1] != '"' {
		return local
	}
	var b strings.Builder
	for i := 1; i < len(local)-1; i++ {
		if local[i] == '\\' && i+1 < len(local)-1 {
			i++
		}
		b.WriteByte(local[i])
	}
	return b.String()
}

// isDotString: Atom *("." Atom) with RFC 6531's UTF-8 in atext.
func isDotString(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 0x80, c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.':
		case strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validDomain: a dot-separated name of letters, digits, hyphens and UTF-8
// (an IDN under SMTPUTF8), or an address literal [..] (RFC 5321 4.1.3).
func validDomain(d string) bool {
	if d == "" || len(d) > maxDomain {
		return false
	}
	if d[0] == '[' {
		if d[len(d)-1] != ']' || len(d) < 3 {
			return false
		}
		for i := 1; i < len(d)-1; i++ {
			c := d[i]
			if c == '[' || c == ']' || c == '\\' || c <= ' ' {
				return false
			}
		}
		return true
	}
	d = strings.TrimSuffix(d, ".")
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 0x80 || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
