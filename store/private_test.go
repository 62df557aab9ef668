package store

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/sluicemail/sluice/store/storetest"
)

// withUmask runs the test under a umask that makes files group and world
// readable, as most systems' default does.
func withUmask(t *testing.T, mask int) {
	old := syscall.Umask(mask)
	t.Cleanup(func() { syscall.Umask(old) })
}

func TestEmbeddedIsPrivate(t *testing.T) {
	withUmask(t, 0o022)
	state := filepath.Join(t.TempDir(), "state")
	dir := filepath.Join(state, "store")
	for range 2 { // the second open reads and rewrites what the first made
		s, err := OpenEmbedded(dir)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := s.ListAdd(ctx, Entry{List: "blocked", Key: "spammer@example.net", Added: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if err := s.Put(ctx, "decision", "01ID", []byte(`{"from":"alice@example.com"}`), time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := s.db.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	storetest.AssertPrivate(t, state, 3)
}

func TestEmbeddedNarrowsAnOpenDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	s, err := OpenEmbedded(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("store dir is %#o, want 0700", fi.Mode().Perm())
	}
}

func TestEmbeddedSecondOpenIsLocked(t *testing.T) {
	if dir := os.Getenv("SLUICE_STORE_LOCK_CHILD"); dir != "" {
		// The child: a second process opening a store another holds.
		_, err := OpenEmbedded(dir)
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("second process: %v, want ErrLocked", err)
		}
		return
	}
	dir := t.TempDir()
	s, err := OpenEmbedded(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestEmbeddedSecondOpenIsLocked$", "-test.count=1")
	cmd.Env = append(os.Environ(), "SLUICE_STORE_LOCK_CHILD="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("child: %v\n%s", err, out)
	}
}
