package queue

import (
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// localWriter delivers into dir/RCPT/ID.eml, the built-in target of the
// embedded default. A file appears complete or not at all: it is written
// under a temporary name, fdatasync'd, renamed into place, and its folder
// is fsynced. The folder syncs are a group commit: one goroutine answers
// every delivery that waits for a folder with a single fsync of it, so a
// burst of messages to one recipient pays one directory sync, not one
// each; the fdatasyncs of the files run in the delivering goroutines at
// once, where the file system merges them into one journal commit. A
// recipient counts as delivered only when its file and folder are
// durable, so the spool forgets no message whose file a crash could lose.
type localWriter struct {
	sync bool
	dirs sync.Map // folders known to exist

	mu      sync.Mutex
	pending map[string][]chan error // folder -> deliveries waiting for its sync
	kick    chan struct{}
	done    chan struct{}
	once    sync.Once
}

func newLocalWriter(durable bool) *localWriter {
	w := &localWriter{sync: durable, pending: map[string][]chan error{}, kick: make(chan struct{}, 1), done: make(chan struct{})}
	if durable {
		go w.run()
	}
	return w
}

func (w *localWriter) close() { w.once.Do(func() { close(w.done) }) }

// run syncs the folders asked for, a batch at a time: what arrives while
// a batch syncs waits for the next one.
func (w *localWriter) run() {
	for {
		select {
		case <-w.done:
			// Answer stragglers, synchronously, so none waits forever.
			w.flush()
			return
		case <-w.kick:
		}
		w.flush()
	}
}

func (w *localWriter) flush() {
	w.mu.Lock()
	batch := w.pending
	w.pending = map[string][]chan error{}
	w.mu.Unlock()
	for dir, waiters := range batch {
		err := syncDir(dir)
		for _, c := range waiters {
			c <- err
		}
	}
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncFolder returns once dir's entries as they are now are durable.
func (w *localWriter) syncFolder(dir string) error {
	c := make(chan error, 1)
	w.mu.Lock()
	w.pending[dir] = append(w.pending[dir], c)
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
	select {
	case err := <-c:
		return err
	case <-w.done:
		return syncDir(dir)
	}
}

// deliver writes the message for rcpt into dir/RCPT/ID.eml. Writing the
// same id again replaces the file, so a retried delivery never
// duplicates.
func (w *localWriter) deliver(dir string, env *Envelope, msg []byte, rcpt string) Result {
	folder := strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r < 0x20 || r == 0 {
			return '_'
		}
		return r
	}, strings.ToLower(rcpt))
	if folder == "" || folder == "." || folder == ".." {
		folder = "_"
	}
	fdir := filepath.Join(dir, folder)
	path := filepath.Join(fdir, env.ID+".eml")
	failed := func(err error) Result {
		w.dirs.Delete(fdir) // it may have been removed: make it again next time
		return Result{Code: 451, Enhanced: "4.3.0", Detail: err.Error(), Remote: "local"}
	}
	if _, known := w.dirs.Load(fdir); !known {
		if err := os.MkdirAll(fdir, 0o700); err != nil {
			return failed(err)
		}
		if w.sync {
			// The new folder's own entry in dir must last too.
			if err := syncDir(dir); err != nil {
				return failed(err)
			}
		}
		w.dirs.Store(fdir, true)
	}
	head := "Return-Path: <" + env.From + ">\r\nDelivered-To: " + rcpt + "\r\n"
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err == nil {
		if _, err = f.WriteString(head); err == nil {
			_, err = f.Write(msg)
		}
		if err == nil && w.sync {
			err = unix.Fdatasync(int(f.Fd()))
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return failed(err)
	}
	if w.sync {
		if err := w.syncFolder(fdir); err != nil {
			return failed(err)
		}
	}
	return Result{OK: true, Code: 250, Enhanced: "2.0.0", Detail: "delivered to " + path, Remote: "local"}
}
