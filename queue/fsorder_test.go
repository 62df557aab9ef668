package queue

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOrderedJournal: orderedJournal agrees with what the mount table
// says of the file system holding a directory (its type, and for ext4
// whether jbd2 runs a journal for its device), here and on /dev/shm.
func TestOrderedJournal(t *testing.T) {
	for _, dir := range []string{t.TempDir(), "/dev/shm"} {
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		fstype, source := mountOf(t, dir)
		want := fstype == "xfs"
		if fstype == "ext4" || fstype == "ext3" {
			j, _ := filepath.Glob("/proc/fs/jbd2/" + filepath.Base(source) + "-*")
			want = len(j) > 0
		}
		t.Logf("%s: %s on %s, ordered journal %v", dir, fstype, source, want)
		if got := orderedJournal(dir); got != want {
			t.Errorf("orderedJournal(%s) on %s %s = %v, want %v", dir, fstype, source, got, want)
		}
	}
	if orderedJournal(filepath.Join(t.TempDir(), "missing")) {
		t.Error("a missing directory counts as an ordered journal")
	}
}

// mountOf returns the type and source of the mount holding dir: the
// longest mount point of /proc/self/mountinfo that is a prefix of it.
func mountOf(t *testing.T, dir string) (fstype, source string) {
	dir, _ = filepath.EvalSymlinks(dir)
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err) // orderedJournal itself reads /proc
	}
	defer f.Close()
	best := -1
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields, after := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(after) < 2 {
			continue
		}
		mp := fields[4]
		if (dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= best {
			best, fstype, source = len(mp), after[0], after[1]
		}
	}
	return fstype, source
}
