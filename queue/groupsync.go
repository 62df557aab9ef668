package queue

import (
	"os"

	"golang.org/x/sys/unix"
)

// groupSync makes the writes of files beside the spool (local delivery)
// durable for many writers at once: each caller asks for a sync and waits;
// one goroutine answers every request that arrived meanwhile with a single
// syncfs(2), which flushes the data and metadata (renames included) of the
// whole file system holding the spool. The spool's own records do not use
// it (see the package doc). Where syncfs is missing, the caller falls
// back to fsync of each file.
type groupSync struct {
	fd   *os.File
	reqs chan chan error
	done chan struct{}
}

func newGroupSync(dir string) (*groupSync, error) {
	fd, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := unix.Syncfs(int(fd.Fd())); err != nil {
		fd.Close()
		return nil, err // not supported here: use fsync
	}
	g := &groupSync{fd: fd, reqs: make(chan chan error, 1024), done: make(chan struct{})}
	go g.run()
	return g, nil
}

func (g *groupSync) run() {
	for {
		var first chan error
		select {
		case first = <-g.reqs:
		case <-g.done:
			g.fd.Close()
			return
		}
		batch := []chan error{first}
	drain:
		for {
			select {
			case r := <-g.reqs:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		err := unix.Syncfs(int(g.fd.Fd()))
		for _, r := range batch {
			r <- err
		}
	}
}

// sync returns once everything written before the call is durable.
func (g *groupSync) sync() error {
	r := make(chan error, 1)
	select {
	case g.reqs <- r:
		select {
		case err := <-r:
			return err
		case <-g.done:
			return errClosed
		}
	case <-g.done:
		return errClosed
	}
}

func (g *groupSync) close() { close(g.done) }
