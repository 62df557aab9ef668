package queue

import (
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// File system magic numbers (statfs f_type) of the file systems whose
// journal keeps the order local delivery relies on.
const (
	ext4Magic = 0xEF53 // ext2, ext3 and ext4 share it; only a journal counts
	xfsMagic  = 0x58465342
)

// orderedJournal reports whether dir is on a file system where a file's
// data, once written back (sync_file_range with WAIT_AFTER), and its
// block map and size are durable as soon as any later metadata change is:
// ext4 with a journal, or XFS. Both log metadata in order, and both finish
// a page's write-back only after logging what the write changed (block
// allocation, unwritten extent conversion, size), so the fsync of the
// folder that commits a later rename commits those too, and its cache
// flush covers the data. Elsewhere (ext4 without a journal, where
// fsync of a folder writes only the folder; btrfs; others) it is false and
// each file gets its own fdatasync.
func orderedJournal(dir string) bool {
	var fs unix.Statfs_t
	if unix.Statfs(dir, &fs) != nil {
		return false
	}
	switch uint32(fs.Type) {
	case xfsMagic:
		return true
	case ext4Magic:
		// jbd2 lists each journal it runs as /proc/fs/jbd2/DEVICE-INODE.
		var st unix.Stat_t
		if unix.Stat(dir, &st) != nil {
			return false
		}
		link, err := os.Readlink(filepath.Join("/sys/dev/block", devName(st.Dev)))
		if err != nil {
			return false
		}
		journals, _ := filepath.Glob(filepath.Join("/proc/fs/jbd2", filepath.Base(link)+"-*"))
		return len(journals) > 0
	}
	return false
}

func devName(dev uint64) string {
	return strconv.FormatUint(uint64(unix.Major(dev)), 10) + ":" + strconv.FormatUint(uint64(unix.Minor(dev)), 10)
}
