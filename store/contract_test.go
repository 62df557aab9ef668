package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sluicemail/sluice/store/storetest"
)

// stores opens each implementation for the contract suite.
func stores(t *testing.T) map[string]Store {
	emb, err := OpenEmbedded(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emb.Close() })
	rs := storetest.StartRedis(t)
	red := OpenRedis(RedisOptions{Addrs: []string{rs.Addr}})
	t.Cleanup(func() { red.Close() })
	return map[string]Store{"embedded": emb, "redis": red}
}

func contract(t *testing.T, test func(t *testing.T, s Store)) {
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) { test(t, s) })
	}
}

var (
	hour = time.Hour
	day  = 24 * time.Hour
	t0   = time.Date(2026, 11, 23, 10, 0, 30, 0, time.UTC)
	bg   = context.Background()
)

func TestCountSlidingWindows(t *testing.T) {
	contract(t, func(t *testing.T, s Store) {
		key := "user:" + t.Name()
		for i := range 5 {
			if _, err := s.Count(bg, t0.Add(time.Duration(i)*10*time.Minute), 1, []string{key}, nil); err != nil {
				t.Fatal(err)
			}
		}
		// events at 10:00, 10:10, 10:20, 10:30, 10:40
		for _, tt := range []struct {
			at       time.Time
			hour, dy int
		}{
			{t0.Add(45 * time.Minute), 5, 5},
			{t0.Add(60 * time.Minute), 4, 5},  // 11:00: 10:00 has slid out
			{t0.Add(100 * time.Minute), 0, 5}, // 11:40
			{t0.Add(24*time.Hour + 5*time.Minute), 0, 4},
			{t0.Add(-time.Hour), 0, 0}, // before any event
		} {
			got, err := s.Count(bg, tt.at, 0, []string{key}, []time.Duration{hour, day})
			if err != nil {
				t.Fatal(err)
			}
			if got[0][0] != tt.hour || got[0][1] != tt.dy {
				t.Errorf("at %s: hour %d day %d, want %d %d", tt.at.Format("15:04"), got[0][0], got[0][1], tt.hour, tt.dy)
			}
		}
	})
}

// TestNoDoubleBurstAtTheHour: 300 at 10:59 still count at 11:00 and 11:58.
func TestNoDoubleBurstAtTheHour(t *testing.T) {
	contract(t, func(t *testing.T, s Store) {
		key := "user:burst"
		at := time.Date(2026, 11, 23, 10, 59, 50, 0, time.UTC)
		for range 300 {
			s.Count(bg, at, 1, []string{key}, nil)
		}
		for _, later := range []time.Duration{20 * time.Second, 30 * time.Minute, 58 * time.Minute} {
			got, _ := s.Count(bg, at.Add(later), 0, []string{key}, []time.Duration{hour})
			if got[0][0] != 300 {
				t.Errorf("%v after the burst the hour counts %d, want 300", later, got[0][0])
			}
		}
		got, _ := s.Count(bg, at.Add(61*time.Minute), 0, []string{key}, []time.Duration{hour})
		if got[0][0] != 0 {
			t.Errorf("an hour later the hour counts %d", got[0][0])
		}
	})
}

func TestCountManyKeysAndConcurrency(t *testing.T) {
	contract(t, func(t *testing.T, s Store) {
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 50 {
					if _, err := s.Count(bg, t0, 1, []string{"shared", fmt.Sprint("own", w)}, []time.Duration{hour}); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		got, err := s.Count(bg, t0, 0, []string{"SHARED", "own3", "never"}, []time.Duration{hour, day})
		if err != nil {
			t.Fatal(err)
		}
		if got[0][0] != 400 || got[1][0] != 50 || got[2][0] != 0 || got[0][1] != 400 {
			t.Errorf("counts %v, want [[400 400] [50 50] [0 0]]", got)
		}
	})
}

func TestLists(t *testing.T) {
	contract(t, func(t *testing.T, s Store) {
		now := time.Now()
		if err := s.ListAdd(bg, Entry{List: "bounces", Key: "<Gone@Example.org>", Reason: "550 5.1.1 user unknown", Source: "delivery", Added: now}); err != nil {
			t.Fatal(err)
		}
		s.ListAdd(bg, Entry{List: "blocked", Key: "spammer@example.net", Reason: "sustained abuse", Source: "rule sustained-abuse", Added: now, Expires: now.Add(time.Hour)})
		s.ListAdd(bg, Entry{List: "blocked", Key: "old@example.net", Added: now.Add(-2 * time.Hour), Expires: now.Add(-time.Hour)})
		e, err := s.ListGet(bg, "bounces", "gone@example.org", now)
		if err != nil || e == nil || e.Reason != "550 5.1.1 user unknown" || e.Source != "delivery" || !e.Added.Equal(now.Truncate(0)) && e.Added.Sub(now).Abs() > time.Millisecond {
			t.Fatalf("get: %+v %v", e, err)
		}
		if e, _ := s.ListGet(bg, "blocked", "old@example.net", now); e != nil {
			t.Error("an expired entry is live")
		}
		if e, _ := s.ListGet(bg, "blocked", "spammer@example.net", now.Add(2*time.Hour)); e != nil {
			t.Error("an entry is live after its expiry")
		}
		if e, _ := s.ListGet(bg, "unsubscribes", "gone@example.org", now); e != nil {
			t.Error("lists are not separate")
		}
		all, err := s.ListEntries(bg, "blocked", now)
		if err != nil || len(all) != 1 || all[0].Key != "spammer@example.net" {
			t.Errorf("entries: %+v %v", all, err)
		}
		if ok, err := s.ListRemove(bg, "bounces", "GONE@example.org"); !ok || err != nil {
			t.Errorf("remove: %v %v", ok, err)
		}
		if ok, _ := s.ListRemove(bg, "bounces", "gone@example.org"); ok {
			t.Error("removed twice")
		}
		if err := s.ListAdd(bg, Entry{List: "", Key: "x"}); err == nil {
			t.Error("a list without a name was accepted")
		}
	})
}

func TestRecords(t *testing.T) {
	contract(t, func(t *testing.T, s Store) {
		if err := s.Put(bg, "decision", "01ABC", []byte(`{"action":"reject"}`), 0); err != nil {
			t.Fatal(err)
		}
		s.Put(bg, "hold", "01DEF", []byte("x"), 50*time.Millisecond)
		if b, err := s.Get(bg, "decision", "01ABC"); err != nil || string(b) != `{"action":"reject"}` {
			t.Errorf("get: %q %v", b, err)
		}
		time.Sleep(120 * time.Millisecond)
		if b, _ := s.Get(bg, "hold", "01DEF"); b != nil {
			t.Errorf("expired record: %q", b)
		}
		if b, err := s.Get(bg, "decision", "nope"); b != nil || err != nil {
			t.Errorf("absent record: %q %v", b, err)
		}
	})
}

func TestCountersSurviveRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := OpenEmbedded(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.Count(bg, t0, 7, []string{"user:a"}, nil)
	s.ListAdd(bg, Entry{List: "blocked", Key: "x@y.test", Added: t0})
	s.Close()
	s, err = OpenEmbedded(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, _ := s.Count(bg, t0, 0, []string{"user:a"}, []time.Duration{hour})
	if got[0][0] != 7 {
		t.Errorf("after reopening: %v", got)
	}
	if e, _ := s.ListGet(bg, "blocked", "x@y.test", t0); e == nil {
		t.Error("list entry lost")
	}
}

func TestRedisDownAndBack(t *testing.T) {
	rs := storetest.StartRedis(t)
	s := OpenRedis(RedisOptions{Addrs: []string{rs.Addr}, Timeout: 200 * time.Millisecond})
	defer s.Close()
	if _, err := s.Count(bg, t0, 1, []string{"k"}, []time.Duration{hour}); err != nil {
		t.Fatal(err)
	}
	rs.Stop()
	_, err := s.Count(bg, t0, 0, []string{"k"}, []time.Duration{hour})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("with redis down: %v, want ErrUnavailable (never a silent zero)", err)
	}
	if _, err := s.ListGet(bg, "blocked", "x", t0); !errors.Is(err, ErrUnavailable) {
		t.Errorf("list read with redis down: %v", err)
	}
	rs.Start()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := s.Count(bg, t0, 1, []string{"k"}, []time.Duration{hour}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no recovery after redis came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestDistinct(t *testing.T) {
	contract(t, func(t *testing.T, s Store) {
		key := "senders:user:app"
		for i, m := range []string{"a@x.test", "b@x.test", "A@x.test", "c@x.test"} {
			n, err := s.Distinct(bg, t0.Add(time.Duration(i)*20*time.Minute), key, m, hour)
			if err != nil {
				t.Fatal(err)
			}
			if want := []int{1, 2, 2, 3}[i]; n != want { // A is a again, seen last at 10:40
				t.Errorf("after %s: %d distinct, want %d", m, n, want)
			}
		}
		if n, _ := s.Distinct(bg, t0.Add(60*time.Minute), key, "", day); n != 3 {
			t.Errorf("distinct over the day: %d, want 3", n)
		}
	})
}

func TestIndex(t *testing.T) {
	contract(t, func(t *testing.T, s Store) {
		const max = 200
		add := func(name string, i int, at time.Time) {
			t.Helper()
			e := IndexEntry{At: at, ID: fmt.Sprintf("id%04d", i), Data: []byte(fmt.Sprintf(`{"n":%d}`, i))}
			if err := s.IndexAdd(bg, name, e, max, 30*day); err != nil {
				t.Fatal(err)
			}
		}
		scan := func(name string, from, to time.Time) []IndexEntry {
			t.Helper()
			var out []IndexEntry
			if err := s.IndexScan(bg, name, from, to, func(e IndexEntry) bool { out = append(out, e); return true }); err != nil {
				t.Fatal(err)
			}
			return out
		}
		// 1,100 entries a second apart, several sharing a time (same
		// second: kept apart by id), in a shuffled order.
		const n = 1100
		for i := range n {
			j := (i * 7) % n
			add("decisions", j, t0.Add(time.Duration(j/2)*time.Second))
		}
		all := scan("decisions", time.Time{}, time.Time{})
		if len(all) > max || len(all) < max-max/100 {
			t.Fatalf("%d entries kept, want at most %d and at least %d", len(all), max, max-max/100)
		}
		for i, e := range all {
			want := n - 1 - i
			if e.ID != fmt.Sprintf("id%04d", want) || string(e.Data) != fmt.Sprintf(`{"n":%d}`, want) || !e.At.Equal(t0.Add(time.Duration(want/2)*time.Second)) {
				t.Fatalf("entry %d: %s %s %s, want id%04d newest first", i, e.ID, e.Data, e.At, want)
			}
		}
		// a time range, bounds included, and stopping early
		got := scan("decisions", t0.Add(500*time.Second), t0.Add(520*time.Second))
		if len(got) != 42 || got[0].ID != "id1041" || got[41].ID != "id1000" {
			t.Errorf("range: %d entries, %v ... ", len(got), got[:min(2, len(got))])
		}
		k := 0
		s.IndexScan(bg, "decisions", time.Time{}, time.Time{}, func(IndexEntry) bool { k++; return k < 3 })
		if k != 3 {
			t.Errorf("scan went on after fn said stop: %d calls", k)
		}
		if got := scan("other", time.Time{}, time.Time{}); len(got) != 0 {
			t.Errorf("indexes are not separate: %d", len(got))
		}
		// by age: an entry 31 days newer drops the old ones
		add("aging", 1, t0)
		add("aging", 2, t0.Add(29*day))
		add("aging", 3, t0.Add(31*day))
		if got := scan("aging", time.Time{}, time.Time{}); len(got) != 2 || got[0].ID != "id0003" || got[1].ID != "id0002" {
			t.Errorf("after 31 days: %v", got)
		}
		if err := s.IndexAdd(bg, "", IndexEntry{At: t0, ID: "x"}, max, 0); err == nil {
			t.Error("an index without a name was accepted")
		}
	})
}

// TestIndexSurvivesRestart: the embedded store counts an index it reopens,
// so its cap holds across restarts.
func TestIndexSurvivesRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	for round := range 3 {
		s, err := OpenEmbedded(dir)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 80 {
			s.IndexAdd(bg, "d", IndexEntry{At: t0.Add(time.Duration(round*80+i) * time.Second), ID: fmt.Sprint(round*80 + i)}, 100, 0)
		}
		n := 0
		s.IndexScan(bg, "d", time.Time{}, time.Time{}, func(IndexEntry) bool { n++; return true })
		if want := min(80*(round+1), 100); n > want || n < min(want, 99) {
			t.Errorf("round %d: %d entries", round, n)
		}
		s.Close()
	}
}
