package web

import (
	"testing"
	"time"
)

// The relay's end-to-end test (server/unsubscribe_test.go) covers the
// endpoint; this covers the token format links already mailed carry.
func TestUnsubscribeToken(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	now := time.Now()
	tok := UnsubscribeToken(key, "carol@example.org", "acme", now.Add(time.Hour))
	if rcpt, account, err := CheckUnsubscribeToken(key, tok, now); err != nil || rcpt != "carol@example.org" || account != "acme" {
		t.Errorf("check: %q %q %v", rcpt, account, err)
	}
	old := UnsubscribeToken(key, "carol@example.org", "acme", now.Add(-time.Hour))
	if _, _, err := CheckUnsubscribeToken(key, old, now); err != ErrExpiredToken {
		t.Errorf("expired token: %v", err)
	}
	if _, _, err := CheckUnsubscribeToken([]byte("another key, 32 bytes long......"), tok, now); err != ErrBadToken {
		t.Errorf("another key: %v", err)
	}
	// The format of links already mailed: base64url(rcpt \n account \n
	// unix expiry) "." base64url(16 bytes of HMAC-SHA256).
	fixed := UnsubscribeToken(key, "bob@example.org", "", time.Unix(2000000000, 0))
	if fixed != "Ym9iQGV4YW1wbGUub3JnCgoyMDAwMDAwMDAw."+fixed[len(fixed)-22:] || len(fixed) != 37+22 {
		t.Errorf("token format changed: %s", fixed)
	}
}
