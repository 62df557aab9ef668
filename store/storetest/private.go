package storetest

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// AssertPrivate fails for every file or directory under root that a group
// or other user could read, write or enter, and when fewer than min
// entries are there (a test that saw nothing proves nothing).
func AssertPrivate(t testing.TB, root string, min int) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		n++
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s is mode %#o: other users can read it", p, fi.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < min {
		t.Fatalf("only %d entries under %s: the test saw nothing", n, root)
	}
}
