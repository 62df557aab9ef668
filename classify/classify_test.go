package classify

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicemail/sluice/builtins"
	"github.com/sluicemail/sluice/store"
	"github.com/sluicemail/sluice/store/storetest"
)

var bg = context.Background()

// stores opens the embedded store and a real redis-server's store.
func stores(t testing.TB) map[string]store.Store {
	emb, err := store.OpenEmbedded(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emb.Close() })
	rs := storetest.StartRedis(t)
	red := store.OpenRedis(store.RedisOptions{Addrs: []string{rs.Addr}})
	t.Cleanup(func() { red.Close() })
	return map[string]store.Store{"embedded": emb, "redis": red}
}

func msg(id, subject, body string) []byte {
	return []byte(fmt.Sprintf("From: a@example.org\r\nTo: b@example.net\r\nMessage-ID: <%s@example.org>\r\nSubject: %s\r\n\r\n%s\r\n", id, subject, body))
}

func spamMsg(i int) []byte {
	return msg(fmt.Sprint("spam", i), "Cheap pills now", fmt.Sprintf("Buy cheap viagra pills online, best price guaranteed, order %d today", i))
}

func hamMsg(i int) []byte {
	return msg(fmt.Sprint("ham", i), "Meeting notes", fmt.Sprintf("Hi team, the notes of meeting %d are attached; the release is on Thursday", i))
}

func open(t *testing.T, s store.Store, min int) *Classifier {
	t.Helper()
	c, err := Open(s, Options{MinLearned: min, Now: func() time.Time { return time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func prob(t *testing.T, c *Classifier, raw []byte) (float64, []string) {
	t.Helper()
	p, ev, err := c.SpamProbability(bg, builtins.Parse(raw, builtins.Limits{}))
	if err != nil {
		t.Fatal(err)
	}
	return p, ev
}

func counts(t *testing.T, c *Classifier, ham, spam int) {
	t.Helper()
	h, s, err := c.Counts(bg)
	if err != nil {
		t.Fatal(err)
	}
	if h != ham || s != spam {
		t.Errorf("counts ham %d spam %d, want %d %d", h, s, ham, spam)
	}
}

func learn(t *testing.T, c *Classifier, raw []byte, spam, changed bool) {
	t.Helper()
	got, err := c.Learn(bg, raw, spam)
	if err != nil {
		t.Fatal(err)
	}
	if got != changed {
		t.Errorf("learn %.40q as spam=%v: changed %v, want %v", raw, spam, got, changed)
	}
}

// TestLearnOnceMoveForget: the semantics of SPEC 7 on both stores.
func TestLearnOnceMoveForget(t *testing.T) {
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			c := open(t, s, 3)
			for i := range 3 {
				learn(t, c, spamMsg(i), true, true)
				learn(t, c, hamMsg(i), false, true)
			}
			counts(t, c, 3, 3)
			learn(t, c, spamMsg(0), true, false) // counted once
			counts(t, c, 3, 3)
			// the same Message-ID with another body is another message
			other := msg("spam0", "Cheap pills now", "another body")
			learn(t, c, other, true, true)
			counts(t, c, 3, 4)
			learn(t, c, other, false, true) // moves
			counts(t, c, 4, 3)
			for _, raw := range [][]byte{other, hamMsg(2)} {
				found, err := c.Forget(bg, raw)
				if err != nil || !found {
					t.Fatalf("forget: found %v, %v", found, err)
				}
			}
			counts(t, c, 2, 3)
			if found, err := c.Forget(bg, other); err != nil || found {
				t.Errorf("forget again: found %v, %v", found, err)
			}
			// one ham short of the minimum: exactly 0.5
			if p, ev := prob(t, c, spamMsg(99)); p != 0.5 || ev != nil {
				t.Errorf("below MinLearned: %v %v, want exactly 0.5 and no evidence", p, ev)
			}
			learn(t, c, hamMsg(2), false, true)
			ps, ev := prob(t, c, spamMsg(99))
			ph, _ := prob(t, c, hamMsg(99))
			if ps < 0.9 || ph > 0.1 {
				t.Errorf("trained: spam %.3f (evidence %v), ham %.3f", ps, ev, ph)
			}
			if len(ev) == 0 || len(ev) > maxEvidence || !strings.Contains(strings.Join(ev, " "), `"viagra" 0.`) {
				t.Errorf("evidence %q, want at most %d tokens with viagra", ev, maxEvidence)
			}
		})
	}
}

// TestForgetMovesBack: a spam learned as ham then moved leaves the model as
// if it had been learned as spam only.
func TestForgetRestoresModel(t *testing.T) {
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			c := open(t, s, 1)
			learn(t, c, hamMsg(1), false, true)
			learn(t, c, spamMsg(1), true, true)
			before, _ := prob(t, c, spamMsg(7))
			learn(t, c, spamMsg(2), false, true) // a mistake...
			learn(t, c, spamMsg(2), true, true)  // ...corrected
			learn(t, c, hamMsg(3), false, true)
			if found, _ := c.Forget(bg, hamMsg(3)); !found {
				t.Fatal("forget: not found")
			}
			if found, _ := c.Forget(bg, spamMsg(2)); !found {
				t.Fatal("forget: not found")
			}
			after, _ := prob(t, c, spamMsg(7))
			if before != after {
				t.Errorf("after learning and forgetting: %v, want %v as before", after, before)
			}
			counts(t, c, 1, 1)
		})
	}
}

func TestMinLearnedDefault(t *testing.T) {
	s, err := store.OpenEmbedded(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := Open(s, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 199 {
		learn(t, c, spamMsg(i), true, true)
		learn(t, c, hamMsg(i), false, true)
	}
	if p, _ := prob(t, c, spamMsg(1000)); p != 0.5 {
		t.Errorf("199 of each learned: %v, want 0.5", p)
	}
	learn(t, c, spamMsg(199), true, true)
	learn(t, c, hamMsg(199), false, true)
	if p, _ := prob(t, c, spamMsg(1000)); p < 0.99 {
		t.Errorf("200 of each learned: %v, want spam", p)
	}
}

// TestBadInput: an empty message is refused with a clear error, and
// nothing is learned; a model name the stores cannot key is refused.
func TestBadInput(t *testing.T) {
	s, err := store.OpenEmbedded(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := open(t, s, 1)
	for _, raw := range [][]byte{nil, []byte(" \r\n\r\n")} {
		if _, err := c.Learn(bg, raw, true); !errors.Is(err, ErrEmptyMessage) {
			t.Errorf("learn %q: %v, want ErrEmptyMessage", raw, err)
		}
		if _, err := c.Forget(bg, raw); !errors.Is(err, ErrEmptyMessage) {
			t.Errorf("forget %q: %v, want ErrEmptyMessage", raw, err)
		}
	}
	counts(t, c, 0, 0)
	// a message that is all header, or not mail at all, is still a message
	learn(t, c, []byte("Subject: hello\r\n"), false, true)
	learn(t, c, []byte("\x00\x01 not mail"), true, true)
	counts(t, c, 1, 1)
	if _, err := Open(s, Options{Model: "a:b"}); err == nil {
		t.Error("a model name with a colon was accepted")
	}
	if _, err := Open(nil, Options{}); !errors.Is(err, ErrNoModelStore) {
		t.Errorf("a nil store: %v, want ErrNoModelStore", err)
	}
}

// TestRelaysShareRedis: two relays (two classifiers, two clients) on one
// Redis learn into one model and judge alike.
func TestRelaysShareRedis(t *testing.T) {
	rs := storetest.StartRedis(t)
	var cs [2]*Classifier
	for i := range cs {
		s := store.OpenRedis(store.RedisOptions{Addrs: []string{rs.Addr}})
		t.Cleanup(func() { s.Close() })
		cs[i] = open(t, s, 2)
	}
	learn(t, cs[0], spamMsg(1), true, true)
	learn(t, cs[1], spamMsg(2), true, true)
	learn(t, cs[0], hamMsg(1), false, true)
	learn(t, cs[1], hamMsg(2), false, true)
	learn(t, cs[1], spamMsg(1), true, false) // the other relay learned it
	counts(t, cs[0], 2, 2)
	p0, _ := prob(t, cs[0], spamMsg(9))
	p1, _ := prob(t, cs[1], spamMsg(9))
	if p0 != p1 || p0 < 0.9 {
		t.Errorf("the relays judge %v and %v, want one spam verdict", p0, p1)
	}
}

// FuzzTokens: whatever the message, tokenizing never panics, keeps within
// its bound, gives each bucket once and only buckets in range.
func FuzzTokens(f *testing.F) {
	f.Add([]byte("Subject: =?utf-8?b?w6k=?= FREE!!!\r\nFrom: x@y\r\nContent-Type: text/html\r\n\r\n<a href=http://a.b/c?d>www.e.f</a> 12345678 $19.99"))
	f.Add(spamMsg(1))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: application/zip; name=a.exe\r\n\r\nPK\r\n--x--"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		cfg := defaultTokens
		cfg.max, cfg.buckets = 50, 1000
		toks := tokens(builtins.Parse(raw, builtins.Limits{}), cfg)
		if len(toks) > cfg.max {
			t.Fatalf("%d tokens, max %d", len(toks), cfg.max)
		}
		seen := map[uint32]bool{}
		for i, tk := range toks {
			if tk.bucket >= cfg.buckets || seen[tk.bucket] {
				t.Fatalf("token %q: bucket %d out of range or repeated", tk, tk.bucket)
			}
			seen[tk.bucket] = true
			if tk.a >= int32(i) || tk.b >= int32(i) || (tk.a < 0) != (tk.b < 0) {
				t.Fatalf("bigram %q refers to %d, %d", tk, tk.a, tk.b)
			}
		}
	})
}
