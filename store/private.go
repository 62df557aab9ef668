package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// ErrLocked is returned when another process holds the embedded store.
var ErrLocked = errors.New("another process holds it (only one relay may use an embedded store)")

// The state holds envelopes, addresses and counters per sender: no other
// local user may read it, whatever the process umask.
const (
	privateDir  fs.FileMode = 0o700
	privateFile fs.FileMode = 0o600
)

// MakePrivateDir creates dir (and missing parents) mode 0700, and narrows
// an existing dir that is open to group or others. It reports whether it
// had to narrow it.
func MakePrivateDir(dir string) (narrowed bool, err error) {
	if err := os.MkdirAll(dir, privateDir); err != nil {
		return false, err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return false, err
	}
	if fi.Mode().Perm()&0o077 == 0 {
		return false, nil
	}
	if err := os.Chmod(dir, fi.Mode().Perm()&0o700); err != nil {
		return false, fmt.Errorf("%s is mode %#o, readable by other users, and cannot be narrowed: %w", dir, fi.Mode().Perm(), err)
	}
	return true, nil
}

// privateFS is Pebble's file system with every file it creates made 0600
// and every directory 0700: Pebble itself creates with 0666 and 0755 and
// leaves the rest to the umask.
type privateFS struct{ vfs.FS }

func private(name string, mode fs.FileMode, f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return f, err
	}
	if err := os.Chmod(name, mode); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (p privateFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := p.FS.Create(name, c)
	return private(name, privateFile, f, err)
}

func (p privateFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := p.FS.OpenReadWrite(name, c, opts...)
	return private(name, privateFile, f, err)
}

func (p privateFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := p.FS.ReuseForWrite(oldname, newname, c)
	return private(newname, privateFile, f, err)
}

func (p privateFS) MkdirAll(dir string, _ os.FileMode) error {
	_, err := MakePrivateDir(dir)
	return err
}

func (p privateFS) Lock(name string) (io.Closer, error) {
	c, err := p.FS.Lock(name)
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES) {
		return nil, ErrLocked
	}
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(name, privateFile); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}
