package server

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluicemail/sluice/store"
	"github.com/sluicemail/sluice/web"
)

// UnsubscribeConfig turns on the RFC 8058 one-click unsubscribe endpoint
// (served by package web, on its own listen or on web.listen).
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

// unsubscribeHeaders are the RFC 2369/8058 headers for a message to rcpt.
func (s *Server) unsubscribeHeaders(rcpt, account string) string {
	cfg := s.cfg.Load()
	tok := web.UnsubscribeToken(s.unsubKey, store.NormalizeKey(rcpt), account, s.opts.Now().Add(cfg.Unsubscribe.LinkTTL.D()))
	return "List-Unsubscribe: <" + cfg.Unsubscribe.URL + "/" + tok + ">\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
}

// unsubscribed puts rcpt on the unsubscribe list of account: the
// recipient asked this sender's account to stop (web's endpoint calls it).
func (s *Server) unsubscribed(ctx context.Context, rcpt, account string) error {
	e := store.Entry{List: "unsubscribes", Key: rcpt, Reason: "one-click unsubscribe", Source: "RFC 8058 link", Added: s.opts.Now()}
	if account != "" {
		e.List = accountList("unsubscribes", account)
	}
	if err := s.store.ListAdd(ctx, e); err != nil {
		return err
	}
	s.log.Info("list: added", "list", e.List, "key", rcpt, "source", "RFC 8058 link")
	return nil
}
