package server

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sluicemail/sluice/store"
)

// UnsubscribeConfig turns on the RFC 8058 one-click unsubscribe endpoint.
type UnsubscribeConfig struct {
	// Listen is the HTTP address (put a TLS proxy in front of it).
	Listen string `yaml:"listen"`
	// URL is the public base of the links, e.g. https://relay.example.net/unsubscribe.
	URL string `yaml:"url"`
	// Secret signs the links; relays sharing a store must share it.
	// Default: a random key kept in state_dir/unsubscribe.key.
	Secret string `yaml:"secret"`
	// Stamp adds List-Unsubscribe and List-Unsubscribe-Post to accepted
	// messages with one recipient and no List-Unsubscribe of their own.
	Stamp bool `yaml:"stamp"`
	// LinkTTL is how long a link works (default 60 days).
	LinkTTL Duration `yaml:"link_ttl"`
}

func (c *Config) finishUnsubscribe() error {
	u := &c.Unsubscribe
	if u.Listen == "" {
		return nil
	}
	if u.URL == "" {
		return errors.New("unsubscribe: listen needs url, the public base of the links")
	}
	u.URL = strings.TrimSuffix(u.URL, "/")
	setDefault(&u.LinkTTL, Duration(60*24*time.Hour))
	return nil
}

// unsubscribeKey is the configured secret or the one in the state dir.
func unsubscribeKey(c *Config) ([]byte, error) {
	if c.Unsubscribe.Secret != "" {
		return []byte(c.Unsubscribe.Secret), nil
	}
	path := filepath.Join(c.StateDir, "unsubscribe.key")
	if b, err := os.ReadFile(path); err == nil && len(b) >= 32 {
		return b, nil
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(c.StateDir, 0o700); err != nil {
		return nil, err
	}
	return k, os.WriteFile(path, k, 0o600)
}

var b64 = base64.RawURLEncoding

// unsubscribeToken signs (rcpt, account, expiry).
func unsubscribeToken(key []byte, rcpt, account string, exp time.Time) string {
	payload := rcpt + "\n" + account + "\n" + strconv.FormatInt(exp.Unix(), 10)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(payload))
	return b64.EncodeToString([]byte(payload)) + "." + b64.EncodeToString(m.Sum(nil)[:16])
}

var (
	errBadToken     = errors.New("this unsubscribe link is not valid")
	errExpiredToken = errors.New("this unsubscribe link has expired")
)

func checkUnsubscribeToken(key []byte, tok string, now time.Time) (rcpt, account string, err error) {
	p, sig, ok := strings.Cut(tok, ".")
	if !ok {
		return "", "", errBadToken
	}
	payload, err1 := b64.DecodeString(p)
	mac, err2 := b64.DecodeString(sig)
	if err1 != nil || err2 != nil {
		return "", "", errBadToken
	}
	m := hmac.New(sha256.New, key)
	m.Write(payload)
	if !hmac.Equal(m.Sum(nil)[:16], mac) {
		return "", "", errBadToken
	}
	f := strings.Split(string(payload), "\n")
	if len(f) != 3 {
		return "", "", errBadToken
	}
	exp, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return "", "", errBadToken
	}
	if now.Unix() > exp {
		return "", "", errExpiredToken
	}
	return f[0], f[1], nil
}

var unsubscribePage = template.Must(template.New("u").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Unsubscribe</title></head>
<body style="font-family: sans-serif; max-width: 32em; margin: 3em auto">
{{if .Done}}<h1>You are unsubscribed</h1><p>{{.Rcpt}} will not get mail from this sender again.</p>
{{else if .Err}}<h1>Unsubscribe</h1><p>{{.Err}}</p>
{{else}}<h1>Unsubscribe</h1><p>Stop mail to <b>{{.Rcpt}}</b>?</p>
<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button></form>{{end}}
</body></html>`))

// serveUnsubscribe runs the endpoint: POST (RFC 8058's one click, or the
// page's button) unsubscribes; GET only shows the page, since mail
// scanners follow links.
func (s *Server) serveUnsubscribe(ctx context.Context) (net.Addr, error) {
	cfg := s.cfg.Load()
	if cfg.Unsubscribe.Listen == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", cfg.Unsubscribe.Listen)
	if err != nil {
		return nil, fmt.Errorf("unsubscribe: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/unsubscribe/{token}", func(w http.ResponseWriter, r *http.Request) {
		type page struct {
			Rcpt string
			Done bool
			Err  string
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		rcpt, account, err := checkUnsubscribeToken(s.unsubKey, r.PathValue("token"), s.opts.Now())
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			unsubscribePage.Execute(w, page{Err: err.Error()})
			return
		}
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			unsubscribePage.Execute(w, page{Rcpt: rcpt})
		case http.MethodPost:
			body, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
			if !strings.Contains(string(body), "List-Unsubscribe=One-Click") {
				w.WriteHeader(http.StatusBadRequest)
				unsubscribePage.Execute(w, page{Err: "expected List-Unsubscribe=One-Click (RFC 8058)"})
				return
			}
			// The recipient asked this sender's account to stop: its list.
			e := store.Entry{List: "unsubscribes", Key: rcpt, Reason: "one-click unsubscribe", Source: "RFC 8058 link", Added: s.opts.Now()}
			if account != "" {
				e.List = accountList("unsubscribes", account)
			}
			if err := s.store.ListAdd(r.Context(), e); err != nil {
				s.log.Error("unsubscribe", "rcpt", rcpt, "err", err.Error())
				w.WriteHeader(http.StatusServiceUnavailable)
				unsubscribePage.Execute(w, page{Err: "Please try again in a few minutes."})
				return
			}
			s.log.Info("list: added", "list", e.List, "key", rcpt, "source", "RFC 8058 link")
			unsubscribePage.Execute(w, page{Rcpt: rcpt, Done: true})
		default:
			w.WriteHeader(http.StatusMethodNotAllowed)
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go srv.Serve(ln)
	return ln.Addr(), nil
}

// unsubscribeHeaders are the RFC 2369/8058 headers for a message to rcpt.
func (s *Server) unsubscribeHeaders(rcpt, account string) string {
	cfg := s.cfg.Load()
	tok := unsubscribeToken(s.unsubKey, store.NormalizeKey(rcpt), account, s.opts.Now().Add(cfg.Unsubscribe.LinkTTL.D()))
	return "List-Unsubscribe: <" + cfg.Unsubscribe.URL + "/" + tok + ">\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
}
