package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicemail/sluice/builtins"
)

func ruleFile(score int) string {
	return fmt.Sprintf("rules:\n  - name: r\n    when: size > 0\n    then: +%d\n", score)
}

// live waits until the live set gives score want on a message, or fails.
func live(t *testing.T, r *Reloader, want float64) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		v := replay(r.Current(), nil, "a@example.com", []string{"b@example.org"}, plainMsg)
		if v.Score == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("live score %v, want %v (status %+v)", v.Score, want, r.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path, src string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReloadKeepsLastGoodSet(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "10-r.yaml")
	writeFile(t, f, ruleFile(1))
	swaps := 0
	r, err := NewReloader(dir, builtins.NewRegistry(), Options{}, nil, func(*RuleSet) { swaps++ })
	if err != nil {
		t.Fatal(err)
	}
	first := r.Current()
	if changed, err := r.Reload("test"); changed || err != nil {
		t.Errorf("reload of an unchanged dir: %v %v", changed, err)
	}
	writeFile(t, f, "rules:\n  - name: r\n    when: subjet == 1\n    then: +1\n")
	changed, err := r.Reload("test")
	if changed || err == nil || !strings.Contains(err.Error(), "10-r.yaml:3:11") {
		t.Errorf("broken edit: changed %v err %v", changed, err)
	}
	if r.Current() != first || r.Status().OK || r.Status().Failures != 1 || len(r.Status().Problems) != 1 {
		t.Errorf("broken edit went live or was not recorded: %+v", r.Status())
	}
	writeFile(t, f, ruleFile(2))
	if changed, err := r.Reload("test"); !changed || err != nil {
		t.Fatalf("good edit: %v %v", changed, err)
	}
	if r.Current() == first || !r.Status().OK || r.Status().Reloads != 1 || swaps != 1 {
		t.Errorf("good edit not live: %+v", r.Status())
	}
	// A transaction begun on the old set finishes on it.
	txn := first.Begin(context.Background(), &builtins.Input{ClientIP: "192.0.2.1"})
	txn.Mail("a@example.com")
	txn.Rcpt("b@example.org")
	if v := txn.Data([]byte(plainMsg)); v.Score != 1 {
		t.Errorf("old transaction scored %v on the new rules", v.Score)
	}
	txn.Close()
	live(t, r, 2)
	if _, err := NewReloader(filepath.Join(dir, "missing"), builtins.NewRegistry(), Options{}, nil, nil); err == nil {
		t.Error("a missing directory loaded")
	}
}

// TestWatch makes edits the ways editors and Kubernetes make them and checks
// that each good one goes live and no broken one does.
func TestWatch(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "10-r.yaml")
	writeFile(t, f, ruleFile(1))
	r, err := NewReloader(dir, builtins.NewRegistry(), Options{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Watch(ctx, 20*time.Millisecond, time.Hour) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	time.Sleep(50 * time.Millisecond) // let the watcher start

	// In place, as `echo > file` does.
	writeFile(t, f, ruleFile(2))
	live(t, r, 2)

	// vim: write a new file, rename it over the old one, leave a swap file.
	writeFile(t, filepath.Join(dir, ".10-r.yaml.swp"), "garbage: [")
	tmp := filepath.Join(dir, "10-r.yaml.tmp~")
	writeFile(t, tmp, ruleFile(3))
	if err := os.Rename(tmp, f); err != nil {
		t.Fatal(err)
	}
	live(t, r, 3)

	// A broken edit: the live rules stay.
	writeFile(t, f, "rules:\n  - r: size > => +1\n")
	deadline := time.Now().Add(2 * time.Second)
	for r.Status().OK && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if r.Status().OK {
		t.Fatal("broken edit not noticed")
	}
	live(t, r, 3)

	// Delete and recreate.
	os.Remove(f)
	writeFile(t, f, ruleFile(4))
	live(t, r, 4)
}

// TestWatchConfigMapSwap reproduces a Kubernetes ConfigMap volume: the
// files are symlinks through ..data, which is swapped atomically.
func TestWatchConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	gen := func(n, score int) {
		d := filepath.Join(dir, fmt.Sprintf("..2026_11_23_%d", n))
		os.Mkdir(d, 0o755)
		writeFile(t, filepath.Join(d, "10-r.yaml"), ruleFile(score))
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(filepath.Base(d), tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	gen(1, 1)
	if err := os.Symlink("..data/10-r.yaml", filepath.Join(dir, "10-r.yaml")); err != nil {
		t.Fatal(err)
	}
	r, err := NewReloader(dir, builtins.NewRegistry(), Options{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Watch(ctx, 20*time.Millisecond, time.Hour)
	time.Sleep(50 * time.Millisecond)
	gen(2, 5)
	os.RemoveAll(filepath.Join(dir, "..2026_11_23_1"))
	live(t, r, 5)
}

// TestWatchPoll: with no event at all (a change inotify cannot see), the
// checksum poll still picks the edit up.
func TestWatchPoll(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "10-r.yaml")
	writeFile(t, f, ruleFile(1))
	r, err := NewReloader(dir, builtins.NewRegistry(), Options{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, f, ruleFile(6)) // before the watcher starts: no event will come
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Watch(ctx, time.Hour, 50*time.Millisecond)
	live(t, r, 6)
}

// TestReloadRefusesEmptySet: whatever makes the directory yield no rules
// (the only file renamed away, a symlink that loops or dangles, an
// unreadable file, everything commented out) is a rejected reload: the live
// rules stay and the status says so; restoring the file recovers.
func TestReloadRefusesEmptySet(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, dir, f string)
		want   string
		root   bool // meaningless when the test runs as root
	}{
		{"only file renamed away", func(t *testing.T, dir, f string) {
			if err := os.Rename(f, f+".bak"); err != nil {
				t.Fatal(err)
			}
		}, "no rules files", false},
		{"symlink loop", func(t *testing.T, dir, f string) {
			os.Remove(f)
			if err := os.Symlink(filepath.Base(f), f); err != nil {
				t.Fatal(err)
			}
		}, "10-r.yaml: cannot read", false},
		{"dangling symlink", func(t *testing.T, dir, f string) {
			os.Remove(f)
			if err := os.Symlink(filepath.Join(dir, "..data", "10-r.yaml"), f); err != nil {
				t.Fatal(err)
			}
		}, "10-r.yaml: cannot read", false},
		{"unreadable file", func(t *testing.T, dir, f string) {
			if err := os.Chmod(f, 0); err != nil {
				t.Fatal(err)
			}
		}, "10-r.yaml: cannot read", true},
		{"everything commented out", func(t *testing.T, dir, f string) {
			writeFile(t, f, "# rules:\n#   - name: r\n")
		}, "no rules in 10-r.yaml", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.root && os.Geteuid() == 0 {
				t.Skip("root reads files whatever their mode")
			}
			dir := t.TempDir()
			f := filepath.Join(dir, "10-r.yaml")
			writeFile(t, f, ruleFile(1))
			r, err := NewReloader(dir, builtins.NewRegistry(), Options{}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			first := r.Current()
			c.damage(t, dir, f)
			changed, err := r.Reload("test")
			if changed || err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("reload: changed %v, err %v; want an error holding %q", changed, err, c.want)
			}
			if r.Current() != first || r.Status().OK || r.Status().Failures != 1 {
				t.Errorf("the empty set went live or was not recorded: %+v", r.Status())
			}
			// Polled again unchanged: the same error, not a second failure.
			if _, err2 := r.Reload("poll"); err2 == nil || r.Status().Failures != 1 {
				t.Errorf("second poll: %v, %+v", err2, r.Status())
			}
			live(t, r, 1)
			// Restored: what is on disk is the live set again.
			os.Remove(f)
			writeFile(t, f, ruleFile(1))
			if changed, err := r.Reload("test"); changed || err != nil || !r.Status().OK {
				t.Errorf("restored: changed %v err %v status %+v", changed, err, r.Status())
			}
		})
	}
}

// TestNewReloaderRefusesEmptyDir: the first load of a directory without
// rules fails, so a relay never starts without a policy by accident; a
// file holding `rules: []` says it is meant.
func TestNewReloaderRefusesEmptyDir(t *testing.T) {
	dir := t.TempDir()
	_, err := NewReloader(dir, builtins.NewRegistry(), Options{}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), dir+": no rules files") || !strings.Contains(err.Error(), "rules: []") {
		t.Fatalf("empty directory: %v", err)
	}
	writeFile(t, filepath.Join(dir, "00-lists.yaml"), "lists:\n  x: [a]\n")
	if _, err := NewReloader(dir, builtins.NewRegistry(), Options{}, nil, nil); err == nil || !strings.Contains(err.Error(), "no rules in 00-lists.yaml") {
		t.Fatalf("lists only: %v", err)
	}
	writeFile(t, filepath.Join(dir, "10-none.yaml"), "rules: []\n")
	r, err := NewReloader(dir, builtins.NewRegistry(), Options{}, nil, nil)
	if err != nil || len(r.Current().Rules()) != 0 {
		t.Fatalf("rules: [] on purpose: %v", err)
	}
}
