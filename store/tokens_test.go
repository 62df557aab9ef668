package store

import (
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

func tokenStore(t *testing.T, s Store) TokenStore {
	t.Helper()
	ts, ok := s.(TokenStore)
	if !ok {
		t.Fatalf("%T is not a TokenStore", s)
	}
	return ts
}

func wantCounts(t *testing.T, ts TokenStore, model string, buckets []uint32, want []TokenCount) {
	t.Helper()
	got, err := ts.TokenCounts(bg, model, buckets)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("counts of %v: %v, want %v", buckets, got, want)
	}
}

func wantTotals(t *testing.T, ts TokenStore, model string, ham, spam int) {
	t.Helper()
	h, s, err := ts.TokenTotals(bg, model)
	if err != nil {
		t.Fatal(err)
	}
	if h != ham || s != spam {
		t.Errorf("totals ham %d spam %d, want %d %d", h, s, ham, spam)
	}
}

// TestTokenLearnOnceMoveForget: a message counts once, moves when learned
// as the other class, and forgetting undoes it; no count goes below zero;
// models are apart.
func TestTokenLearnOnceMoveForget(t *testing.T) {
	contract(t, func(t *testing.T, s Store) {
		ts := tokenStore(t, s)
		m := "m1"
		all := []uint32{1, 2, 3, 1 << 20, 4000000000}
		wantTotals(t, ts, m, 0, 0)
		wantCounts(t, ts, m, all, make([]TokenCount, 5))
		learn := func(msg string, c TokenClass, b []uint32, prev TokenClass) {
			t.Helper()
			got, err := ts.TokenLearn(bg, m, msg, c, b, t0)
			if err != nil {
				t.Fatal(err)
			}
			if got != prev {
				t.Errorf("learn %s as %q: previous class %q, want %q", msg, c, got, prev)
			}
		}
		learn("a", TokenSpam, []uint32{1, 2, 2, 4000000000}, TokenNone) // duplicates count once
		learn("a", TokenSpam, []uint32{1, 2, 3}, TokenSpam)             // again: nothing changes
		learn("b", TokenHam, []uint32{2, 3}, TokenNone)
		wantTotals(t, ts, m, 1, 1)
		wantCounts(t, ts, m, all, []TokenCount{{0, 1}, {1, 1}, {1, 0}, {}, {0, 1}})
		learn("a", TokenHam, []uint32{4000000000, 1, 2}, TokenSpam) // moves
		wantTotals(t, ts, m, 2, 0)
		wantCounts(t, ts, m, all, []TokenCount{{1, 0}, {2, 0}, {1, 0}, {}, {1, 0}})
		learn("b", TokenNone, []uint32{2, 3}, TokenHam)
		learn("b", TokenNone, []uint32{2, 3}, TokenNone)
		wantTotals(t, ts, m, 1, 0)
		wantCounts(t, ts, m, all, []TokenCount{{1, 0}, {1, 0}, {}, {}, {1, 0}})
		// forgotten with other buckets than it was learned with (a
		// tokenizer changed): no count goes below zero
		learn("a", TokenNone, []uint32{1, 5}, TokenHam)
		wantTotals(t, ts, m, 0, 0)
		wantCounts(t, ts, m, []uint32{1, 2, 5, 4000000000}, []TokenCount{{}, {1, 0}, {}, {1, 0}})
		learn("c", TokenSpam, []uint32{2, 6}, TokenNone)
		learn("c", TokenHam, []uint32{6, 7}, TokenSpam) // moved with a bucket it did not have
		wantCounts(t, ts, m, []uint32{2, 6, 7}, []TokenCount{{1, 1}, {1, 0}, {1, 0}})
		wantTotals(t, ts, "other", 0, 0)
		wantCounts(t, ts, "other", []uint32{1}, []TokenCount{{}})
		if _, err := ts.TokenLearn(bg, "bad:name", "x", TokenHam, nil, t0); err == nil {
			t.Error("a model name with ':' was accepted")
		}
		if _, err := ts.TokenLearn(bg, m, "", TokenHam, nil, t0); err == nil {
			t.Error("an empty message key was accepted")
		}
	})
}

// TestTokenLearnConcurrent: relays learning at once (the same messages,
// some as ham and some as spam, then forgetting half) leave counts that
// match the messages learned, as if one had learned them alone.
func TestTokenLearnConcurrent(t *testing.T) {
	contract(t, func(t *testing.T, s Store) {
		ts := tokenStore(t, s)
		const msgs, workers = 60, 4
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := range msgs {
					c := TokenHam
					if (i+w)%2 == 0 { // workers disagree: the last one wins
						c = TokenSpam
					}
					if _, err := ts.TokenLearn(bg, "conc", fmt.Sprint("msg", i), c, []uint32{7, uint32(i)}, t0); err != nil {
						t.Error(err)
						return
					}
				}
				for i := range msgs / 2 {
					if _, err := ts.TokenLearn(bg, "conc", fmt.Sprint("msg", i), TokenNone, []uint32{7, uint32(i)}, t0); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		ham, spam, err := ts.TokenTotals(bg, "conc")
		if err != nil {
			t.Fatal(err)
		}
		if ham+spam != msgs/2 {
			t.Errorf("%d ham + %d spam learned, want %d in all", ham, spam, msgs/2)
		}
		c, err := ts.TokenCounts(bg, "conc", []uint32{7})
		if err != nil {
			t.Fatal(err)
		}
		if int(c[0].Ham) != ham || int(c[0].Spam) != spam {
			t.Errorf("the token every message has: %+v, want ham %d spam %d", c[0], ham, spam)
		}
		// each message's own bucket matches its class
		for i := msgs / 2; i < msgs; i++ {
			c, _ := ts.TokenCounts(bg, "conc", []uint32{uint32(i)})
			if c[0].Ham+c[0].Spam != 1 {
				t.Errorf("msg%d's bucket: %+v, want one message", i, c[0])
			}
		}
	})
}

// TestTokenModelReopen: the embedded store's model in memory is a copy of
// what is on disk: a reopened store has the same counts, totals and
// learned messages.
func TestTokenModelReopen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := OpenEmbedded(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		c := TokenHam
		if i%3 == 0 {
			c = TokenSpam
		}
		if _, err := s.TokenLearn(bg, "m", fmt.Sprint("msg", i), c, []uint32{1, uint32(100 + i)}, t0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.TokenLearn(bg, "m", "msg1", TokenNone, []uint32{1, 101}, t0); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = OpenEmbedded(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wantTotals(t, s, "m", 5, 4)
	wantCounts(t, s, "m", []uint32{1, 100, 101, 102}, []TokenCount{{5, 4}, {0, 1}, {}, {1, 0}})
	if prev, err := s.TokenLearn(bg, "m", "msg0", TokenSpam, nil, t0); err != nil || prev != TokenSpam {
		t.Errorf("msg0 after reopening: %q, %v; want it learned as spam", prev, err)
	}
}
