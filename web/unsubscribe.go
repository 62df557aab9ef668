package web

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Unsubscribe is the RFC 8058 one-click unsubscribe endpoint: the
// `unsubscribe:` keys of the config, whose links keep their paths and
// token format (/unsubscribe/TOKEN) wherever they are served.
type Unsubscribe struct {
	// Listen is the endpoint's own address when it is not web.listen.
	Listen string
	// Key signs the tokens; nil turns the endpoint off.
	Key []byte
	// Add puts rcpt on the unsubscribe list of account ("" for the
	// relay's own).
	Add func(ctx context.Context, rcpt, account string) error
}

var b64 = base64.RawURLEncoding

// UnsubscribeToken signs (rcpt, account, expiry): the token of the
// List-Unsubscribe links the relay stamps.
func UnsubscribeToken(key []byte, rcpt, account string, exp time.Time) string {
	payload := rcpt + "\n" + account + "\n" + strconv.FormatInt(exp.Unix(), 10)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(payload))
	return b64.EncodeToString([]byte(payload)) + "." + b64.EncodeToString(m.Sum(nil)[:16])
}

// Errors of CheckUnsubscribeToken, worded for the page.
var (
	ErrBadToken     = errors.New("this unsubscribe link is not valid")
	ErrExpiredToken = errors.New("this unsubscribe link has expired")
)

// CheckUnsubscribeToken returns what a token of UnsubscribeToken signs.
func CheckUnsubscribeToken(key []byte, tok string, now time.Time) (rcpt, account string, err error) {
	p, sig, ok := strings.Cut(tok, ".")
	if !ok {
		return "", "", ErrBadToken
	}
	payload, err1 := b64.DecodeString(p)
	mac, err2 := b64.DecodeString(sig)
	if err1 != nil || err2 != nil {
		return "", "", ErrBadToken
	}
	m := hmac.New(sha256.New, key)
	m.Write(payload)
	if !hmac.Equal(m.Sum(nil)[:16], mac) {
		return "", "", ErrBadToken
	}
	f := strings.Split(string(payload), "\n")
	if len(f) != 3 {
		return "", "", ErrBadToken
	}
	exp, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return "", "", ErrBadToken
	}
	if now.Unix() > exp {
		return "", "", ErrExpiredToken
	}
	return f[0], f[1], nil
}

type unsubscribePage struct {
	Rcpt string
	Done bool
	Err  string
}

// unsubscribe serves /unsubscribe/TOKEN: POST (RFC 8058's one click, or
// the page's button) unsubscribes; GET only shows the page, since mail
// scanners follow links.
func (s *Server) unsubscribe(w http.ResponseWriter, r *http.Request) {
	u := s.opts.Unsubscribe
	rcpt, account, err := CheckUnsubscribeToken(u.Key, r.PathValue("token"), s.opts.Now())
	if err != nil {
		s.render(w, http.StatusBadRequest, "unsubscribe.html", unsubscribePage{Err: err.Error()})
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		s.render(w, http.StatusOK, "unsubscribe.html", unsubscribePage{Rcpt: rcpt})
	case http.MethodPost:
		// RFC 8058 3.1: the body is List-Unsubscribe=One-Click; the
		// signed token is what stops forgery, so no CSRF token is asked.
		body, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
		if !strings.Contains(string(body), "List-Unsubscribe=One-Click") {
			s.render(w, http.StatusBadRequest, "unsubscribe.html", unsubscribePage{Err: "expected List-Unsubscribe=One-Click (RFC 8058)"})
			return
		}
		if err := u.Add(r.Context(), rcpt, account); err != nil {
			s.opts.Log.Error("unsubscribe", "rcpt", rcpt, "err", err.Error())
			s.render(w, http.StatusServiceUnavailable, "unsubscribe.html", unsubscribePage{Err: "Please try again in a few minutes."})
			return
		}
		s.render(w, http.StatusOK, "unsubscribe.html", unsubscribePage{Rcpt: rcpt, Done: true})
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}
