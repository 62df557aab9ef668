package queue

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func testOpts() options {
	o := defaults
	o.lockWait = 50 * time.Millisecond
	return o
}

func mustOpen(t testing.TB, dir string, o options) *Spool {
	t.Helper()
	sp, err := openSpool(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

func content(id string) []byte {
	return []byte("Subject: " + id + "\r\n\r\n" + strings.Repeat(id+" ", 3) + "\r\n")
}

func put(t testing.TB, sp *Spool, area, id string) {
	t.Helper()
	env := &Envelope{ID: id, From: "a@b.test", Rcpts: []RcptState{{Addr: "c@d.test", Status: StatusPending}}, Received: time.Unix(1700000000, 0).UTC()}
	if err := sp.Put(area, env, content(id)); err != nil {
		t.Fatal(err)
	}
}

// state is what the spool holds: id -> area, envelope and content.
func state(t testing.TB, sp *Spool) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, area := range []string{AreaQueue, AreaHold} {
		ids, err := sp.List(area)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if _, dup := out[id]; dup {
				t.Fatalf("%s is in both areas", id)
			}
			env, err := sp.Envelope(area, id)
			if err != nil {
				t.Fatal(err)
			}
			msg, err := sp.Message(area, id)
			if err != nil {
				t.Fatal(err)
			}
			out[id] = fmt.Sprintf("%s attempts=%d reason=%q %q", area, env.Attempts, env.Reason, msg)
		}
	}
	return out
}

func TestSpoolOperations(t *testing.T) {
	dir := t.TempDir()
	sp := mustOpen(t, dir, testOpts())
	put(t, sp, AreaQueue, "M1")
	put(t, sp, AreaQueue, "M2")
	put(t, sp, AreaHold, "H1")
	if err := sp.Put(AreaQueue, &Envelope{ID: "M1"}, nil); err == nil {
		t.Error("a second put of an id was taken")
	}
	if err := sp.Put(AreaQueue, &Envelope{ID: "../x"}, nil); err == nil {
		t.Error("a path as id was taken")
	}
	if _, err := openSpool(dir, testOpts()); !errors.Is(err, ErrLocked) {
		t.Errorf("a second open while the spool is open: %v, want ErrLocked", err)
	}
	env, _ := sp.Envelope(AreaQueue, "M1")
	env.Attempts = 3
	if err := sp.Update(AreaQueue, env); err != nil {
		t.Fatal(err)
	}
	if err := sp.Update(AreaHold, env); err != ErrNotFound {
		t.Errorf("update in the wrong area: %v", err)
	}
	if err := sp.Move(AreaQueue, AreaHold, "M2"); err != nil {
		t.Fatal(err)
	}
	if err := sp.Release("H1", time.Unix(1700000100, 0)); err != nil {
		t.Fatal(err)
	}
	if err := sp.Remove(AreaQueue, "M2"); err != ErrNotFound {
		t.Errorf("remove from the wrong area: %v", err)
	}
	put(t, sp, AreaQueue, "GONE")
	put(t, sp, AreaQueue, "REFUSED")
	if err := sp.Remove(AreaQueue, "GONE"); err != nil {
		t.Fatal(err)
	}
	if err := sp.Discard(AreaQueue, "REFUSED"); err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Envelope(AreaQueue, "GONE"); err != ErrNotFound {
		t.Errorf("removed message: %v", err)
	}
	if _, err := sp.Message(AreaQueue, "../etc/passwd"); err != ErrNotFound {
		t.Errorf("a path as id: %v", err)
	}
	want := map[string]string{
		"M1": fmt.Sprintf("queue attempts=3 reason=\"\" %q", content("M1")),
		"M2": fmt.Sprintf("hold attempts=0 reason=\"\" %q", content("M2")),
		"H1": fmt.Sprintf("queue attempts=0 reason=\"\" %q", content("H1")),
	}
	if got := state(t, sp); !maps.Equal(got, want) {
		t.Errorf("state:\n%v\nwant\n%v", got, want)
	}
	if ids, _ := sp.List(AreaQueue); !slices.Equal(ids, []string{"H1", "M1"}) {
		t.Errorf("queue: %v", ids)
	}
	sp.Close()
	sp = mustOpen(t, dir, testOpts())
	defer sp.Close()
	if got := state(t, sp); !maps.Equal(got, want) {
		t.Errorf("state after reopening:\n%v\nwant\n%v", got, want)
	}
	if env, _ := sp.Envelope(AreaQueue, "H1"); !env.NextAttempt.Equal(time.Unix(1700000100, 0)) {
		t.Errorf("released message's next attempt: %v", env.NextAttempt)
	}
}

// TestSpoolMigratesPerFileLayout: a spool left by an earlier version, one
// file pair per message and a crash's debris, is put in order and moved
// into the segments when it opens.
func TestSpoolMigratesPerFileLayout(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"tmp", AreaQueue, AreaHold} {
		os.MkdirAll(filepath.Join(dir, d), 0o700)
	}
	file := func(name, data string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	envJSON := func(id string) string {
		return fmt.Sprintf(`{"id": %q, "from": "a@b.test", "rcpts": [{"addr": "c@d.test", "status": "pending"}], "attempts": 2}`, id)
	}
	file("queue/OK1.msg", "Subject: OK1\r\n\r\n")
	file("queue/OK1.env", envJSON("OK1"))
	file("hold/HELD.msg", "Subject: HELD\r\n\r\n")
	file("hold/HELD.env", envJSON("HELD"))
	// A crash mid-move from hold to queue: the content moved, the envelope not.
	file("queue/MOVED.msg", "Subject: MOVED\r\n\r\n")
	file("hold/MOVED.env", envJSON("MOVED"))
	// Debris of crashes: content without envelope, a temporary file, a torn
	// envelope, an envelope whose content was cut short, one without content.
	file("queue/HALF.msg", "x")
	file("tmp/OK2.msg.123", "x")
	file("queue/TORN.msg", "x")
	file("queue/TORN.env", `{"id": "TO`)
	file("queue/SHORT.msg", "")
	file("queue/SHORT.env", `{"id": "SHORT", "size": 120}`)
	file("queue/LOST.env", "{}")

	sp := mustOpen(t, dir, testOpts())
	did, _ := sp.Recover()
	if len(did) != 7 {
		t.Errorf("recovery did %q", did)
	}
	want := map[string]string{
		"OK1":   fmt.Sprintf("queue attempts=2 reason=\"\" %q", "Subject: OK1\r\n\r\n"),
		"HELD":  fmt.Sprintf("hold attempts=2 reason=\"\" %q", "Subject: HELD\r\n\r\n"),
		"MOVED": fmt.Sprintf("hold attempts=2 reason=\"\" %q", "Subject: MOVED\r\n\r\n"),
	}
	if got := state(t, sp); !maps.Equal(got, want) {
		t.Errorf("after migration:\n%v\nwant\n%v", got, want)
	}
	for _, gone := range []string{"tmp", "hold", "queue/OK1.env", "queue/OK1.msg", "queue/HALF.msg"} {
		if _, err := os.Stat(filepath.Join(dir, gone)); err == nil {
			t.Errorf("%s is still there", gone)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, AreaQueue, "LOST.env.broken")); err != nil {
		t.Error("envelope without content not set aside")
	}
	sp.Close()

	// A crash after the records were synced and before the files were
	// removed: the files are moved again, and each message is there once.
	file("queue/OK1.msg", "Subject: OK1\r\n\r\n")
	file("queue/OK1.env", envJSON("OK1"))
	sp = mustOpen(t, dir, testOpts())
	defer sp.Close()
	if got := state(t, sp); !maps.Equal(got, want) {
		t.Errorf("after a migration done twice:\n%v\nwant\n%v", got, want)
	}
}

// files reads every segment of a spool.
func files(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	ents, _ := os.ReadDir(filepath.Join(dir, "seg"))
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, "seg", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

// memDir is a directory for a spool whose durability a test does not
// look at: in memory (/dev/shm) where there is one, since the tests that
// open thousands of spools would spend their time making inodes on disk.
func memDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "sluice-spool-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// stateOf opens a spool made of segs and returns what it holds.
func stateOf(t *testing.T, segs map[string][]byte) map[string]string {
	t.Helper()
	dir := memDir(t)
	os.MkdirAll(filepath.Join(dir, "seg"), 0o700)
	for name, b := range segs {
		if err := os.WriteFile(filepath.Join(dir, "seg", name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	o := testOpts()
	o.manual = true
	sp := mustOpen(t, dir, o)
	defer sp.Close()
	return state(t, sp)
}

// TestSpoolCrashAtEveryByte cuts the last record of each operation at
// every byte, as a crash while writing it would: the spool must open as
// it was before the operation (the record is ignored, its checksum fails)
// until the record is whole, and as after it then. Compaction must never
// change what the spool holds, whatever is on disk of its copies.
func TestSpoolCrashAtEveryByte(t *testing.T) {
	dir := t.TempDir()
	o := testOpts()
	o.manual = true
	o.segMax = 400 // the base fills two segments
	sp := mustOpen(t, dir, o)
	for _, id := range []string{"A", "B", "C", "D", "E"} {
		put(t, sp, AreaQueue, id)
	}
	put(t, sp, AreaHold, "H")
	sp.Close()
	o.segMax = 1 << 20 // each operation appends to the last segment

	ops := []struct {
		name string
		do   func(sp *Spool) error
	}{
		{"put", func(sp *Spool) error {
			return sp.Put(AreaQueue, &Envelope{ID: "NEW", From: "x@y.test"}, content("NEW"))
		}},
		{"update", func(sp *Spool) error {
			env, _ := sp.Envelope(AreaQueue, "E")
			env.Attempts = 7
			return sp.Update(AreaQueue, env)
		}},
		{"move", func(sp *Spool) error { return sp.Move(AreaQueue, AreaHold, "D") }},
		{"release", func(sp *Spool) error { return sp.Release("H", time.Now()) }},
		{"remove", func(sp *Spool) error { return sp.Remove(AreaQueue, "E") }},
		{"discard", func(sp *Spool) error { return sp.Discard(AreaQueue, "NEW") }},
	}
	for _, op := range ops {
		before := files(t, dir)
		sp := mustOpen(t, dir, o)
		want0 := state(t, sp)
		if err := op.do(sp); err != nil {
			t.Fatalf("%s: %v", op.name, err)
		}
		want1 := state(t, sp)
		sp.Close()
		after := files(t, dir)
		last := slices.Max(slices.Collect(maps.Keys(after)))
		if len(after) != len(before) || len(after[last]) <= len(before[last]) {
			t.Fatalf("%s: the segments went from %d to %d files", op.name, len(before), len(after))
		}
		for cut := len(before[last]); cut <= len(after[last]); cut++ {
			segs := maps.Clone(after)
			segs[last] = after[last][:cut]
			want := want0
			if cut == len(after[last]) {
				want = want1
			}
			if got := stateOf(t, segs); !maps.Equal(got, want) {
				t.Fatalf("%s cut at byte %d of %d:\n%v\nwant\n%v", op.name, cut, len(after[last]), got, want)
			}
		}
	}

	// Compaction: the first segment holds A, B and C; removing A and B
	// leaves it mostly dead.
	sp = mustOpen(t, dir, o)
	sp.Remove(AreaQueue, "A")
	sp.Remove(AreaQueue, "B")
	want := state(t, sp)
	sp.Close()
	before := files(t, dir)
	sp = mustOpen(t, dir, o)
	if did, err := sp.compactOnce(); !did || err != nil {
		t.Fatalf("compaction: %v %v", did, err)
	}
	if got := state(t, sp); !maps.Equal(got, want) {
		t.Errorf("compaction changed the spool:\n%v\nwant\n%v", got, want)
	}
	sp.Close()
	after := files(t, dir)
	first := slices.Min(slices.Collect(maps.Keys(before)))
	last := slices.Max(slices.Collect(maps.Keys(after)))
	if _, ok := after[first]; ok || len(after) != len(before)-1 {
		t.Fatalf("compaction left %v (from %v)", slices.Collect(maps.Keys(after)), slices.Collect(maps.Keys(before)))
	}
	for cut := len(before[last]); cut <= len(after[last]); cut++ {
		segs := maps.Clone(after)
		segs[first] = before[first] // not deleted yet
		segs[last] = after[last][:cut]
		if got := stateOf(t, segs); !maps.Equal(got, want) {
			t.Fatalf("compaction cut at byte %d of %d:\n%v\nwant\n%v", cut, len(after[last]), got, want)
		}
	}
	if got := stateOf(t, after); !maps.Equal(got, want) {
		t.Errorf("after compaction:\n%v\nwant\n%v", got, want)
	}
	// A record whose bytes changed after it was written fails its checksum.
	segs := maps.Clone(after)
	b := bytes.Clone(segs[last])
	b[len(b)-3] ^= 0x20
	segs[last] = b
	if got := stateOf(t, segs); maps.Equal(got, want) {
		t.Error("a corrupt record was accepted")
	}
}

// TestCompactionUnderLoad: writers put, update, move and remove while
// small segments keep the compactor busy; the spool then holds exactly
// what they left, before and after reopening, in a few segments.
func TestCompactionUnderLoad(t *testing.T) {
	dir := t.TempDir()
	o := testOpts()
	o.segMax = 4 << 10
	var compactions int
	var hmu sync.Mutex
	o.hook = func(e string) {
		if e == "compact-end" {
			hmu.Lock()
			compactions++
			hmu.Unlock()
		}
	}
	sp := mustOpen(t, dir, o)
	var mu sync.Mutex
	want := map[string]string{}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range 150 {
				id := fmt.Sprintf("W%dN%03d", w, n)
				put(t, sp, AreaQueue, id)
				area, attempts := AreaQueue, 0
				switch n % 5 {
				case 0, 1:
					if err := sp.Remove(AreaQueue, id); err != nil {
						t.Error(err)
					}
					continue
				case 2:
					env, _ := sp.Envelope(AreaQueue, id)
					env.Attempts, attempts = 2, 2
					if err := sp.Update(AreaQueue, env); err != nil {
						t.Error(err)
					}
				case 3:
					if err := sp.Move(AreaQueue, AreaHold, id); err != nil {
						t.Error(err)
					}
					area = AreaHold
				}
				mu.Lock()
				want[id] = fmt.Sprintf("%s attempts=%d reason=\"\" %q", area, attempts, content(id))
				mu.Unlock()
				// Most of the older ones are delivered meanwhile.
				if n%4 != 0 && n >= 10 {
					old := fmt.Sprintf("W%dN%03d", w, n-10)
					mu.Lock()
					s, ok := want[old]
					delete(want, old)
					mu.Unlock()
					if ok {
						if err := sp.Remove(strings.Fields(s)[0], old); err != nil {
							t.Error(err)
						}
					}
				}
			}
		}()
	}
	wg.Wait()
	if got := state(t, sp); !maps.Equal(got, want) {
		t.Errorf("after the load: %d messages, want %d", len(got), len(want))
	}
	sp.Close()
	sp = mustOpen(t, dir, o)
	defer sp.Close()
	if got := state(t, sp); !maps.Equal(got, want) {
		t.Errorf("after reopening: %d messages, want %d", len(got), len(want))
	}
	segs, _ := segmentSeqs(filepath.Join(dir, "seg"))
	t.Logf("%d compactions; %d segments left, %d made", compactions, len(segs), segs[len(segs)-1])
	if compactions == 0 || len(segs) > int(segs[len(segs)-1])/4 {
		t.Errorf("%d compactions; segments left: %v", compactions, segs)
	}
}
