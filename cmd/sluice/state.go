package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluicemail/sluice/queue"
	"github.com/sluicemail/sluice/server"
	"github.com/sluicemail/sluice/store"
)

// configFile is the config an operator command acts on (SPEC 5): --config,
// else $SLUICE_CONFIG, else "" for the embedded default.
func configFile(flag string) string {
	if flag != "" {
		return flag
	}
	return os.Getenv("SLUICE_CONFIG")
}

// relayState is the state of the relay a config describes, as an operator
// command (hold, list, decision) reaches it: through the running relay's
// admin socket when it answers, else directly.
type relayState struct {
	cfg   *server.Config
	dir   string              // the state directory, absolute
	admin *server.AdminClient // nil when no relay answers
}

// openRelayState loads the config and finds its state. A state directory
// that does not exist is an error: acting on a new, empty state would
// print success while the relay never sees the change. It says on stderr
// which state the command acts on.
func openRelayState(cmd, configFlag string, stderr io.Writer) (*relayState, bool) {
	path := configFile(configFlag)
	cfg, err := server.LoadConfig(path)
	if err != nil {
		fmt.Fprintf(stderr, "sluice %s: %v\n", cmd, err)
		return nil, false
	}
	rs := &relayState{cfg: cfg, dir: abs(cfg.StateDir)}
	if _, err := os.Stat(rs.dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(stderr, "sluice %s: no relay state at %s %s\n", cmd, rs.dir, whereFrom(path))
		} else {
			fmt.Fprintf(stderr, "sluice %s: %v\n", cmd, err)
		}
		return nil, false
	}
	where := rs.dir
	if cfg.Store.Kind == "redis" {
		where += ", store " + storeName(cfg)
	}
	if a, ok := server.DialAdmin(server.AdminSocket(cfg)); ok {
		rs.admin = a
		fmt.Fprintf(stderr, "state: %s (via the running relay)\n", where)
	} else {
		fmt.Fprintf(stderr, "state: %s (no relay running: opened directly)\n", where)
	}
	return rs, true
}

// whereFrom explains where a state directory came from, for the error
// that it does not exist.
func whereFrom(config string) string {
	if config == "" {
		return "(the embedded default's ./sluice-state: run this in the directory sluice serve runs in, or give --config FILE or SLUICE_CONFIG)"
	}
	return fmt.Sprintf("(state_dir of %s): no relay has run with this config yet", config)
}

// state is what `sluice list` and `sluice decision` need of the store, or
// of a running relay that holds it.
type state interface {
	ListAdd(ctx context.Context, e store.Entry) error
	ListRemove(ctx context.Context, list, key string) (bool, error)
	ListGet(ctx context.Context, list, key string, now time.Time) (*store.Entry, error)
	ListEntries(ctx context.Context, list string, now time.Time) ([]store.Entry, error)
	Decision(ctx context.Context, id string) (*server.Decision, error)
}

// storeState is a store opened by the command itself.
type storeState struct{ store.Store }

func (s storeState) Decision(ctx context.Context, id string) (*server.Decision, error) {
	return server.LookupDecision(ctx, s.Store, id)
}

// store reaches the relay's store: through the running relay, which holds
// the embedded store, else directly.
func (rs *relayState) store() (state, func(), error) {
	if rs.admin != nil {
		return rs.admin, func() {}, nil
	}
	sc := rs.cfg.Store
	if sc.Kind == "embedded" {
		if _, err := os.Stat(sc.Path); errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("no store at %s: the relay has not run with this state yet", abs(sc.Path))
		}
	}
	st, err := server.OpenStore(rs.cfg)
	if errors.Is(err, store.ErrLocked) {
		return nil, nil, fmt.Errorf("%v; the relay holding it does not answer on %s", err, server.AdminSocket(rs.cfg))
	}
	if err != nil {
		return nil, nil, err
	}
	return storeState{st}, func() { st.Close() }, nil
}

// holdArea is the holding area, of the running relay or of the spool.
type holdArea interface {
	Held(ctx context.Context) ([]*queue.Envelope, error)
	HeldMessage(ctx context.Context, id string) (*server.HeldMessage, error)
	Release(ctx context.Context, id string) error
	DeleteHeld(ctx context.Context, id string) error
}

func (rs *relayState) hold() (holdArea, error) {
	if rs.admin != nil {
		return rs.admin, nil
	}
	return spoolHold{filepath.Join(rs.dir, "spool")}, nil
}

// spoolHold is the holding area read from the spool directly, while no
// relay runs (a relay started later delivers what was released). Each
// call opens the spool and closes it, so that the spool's lock is held
// only while it acts: a relay starting meanwhile waits for it.
type spoolHold struct{ dir string }

func (h spoolHold) with(fn func(sp *queue.Spool) error) error {
	sp, err := queue.OpenSpool(h.dir)
	if err != nil {
		return err
	}
	err = fn(sp)
	if cerr := sp.Close(); err == nil {
		err = cerr
	}
	return err
}

func (h spoolHold) Held(context.Context) ([]*queue.Envelope, error) {
	var out []*queue.Envelope
	err := h.with(func(sp *queue.Spool) error {
		ids, err := sp.List(queue.AreaHold)
		for _, id := range ids {
			if e, err := sp.Envelope(queue.AreaHold, id); err == nil {
				out = append(out, e)
			}
		}
		return err
	})
	return out, err
}

func (h spoolHold) HeldMessage(_ context.Context, id string) (*server.HeldMessage, error) {
	var hm *server.HeldMessage
	err := h.with(func(sp *queue.Spool) error {
		e, err := sp.Envelope(queue.AreaHold, id)
		if err != nil {
			return err
		}
		msg, err := sp.Message(queue.AreaHold, id)
		hm = &server.HeldMessage{Envelope: e, Message: msg}
		return err
	})
	return hm, err
}

func (h spoolHold) Release(_ context.Context, id string) error {
	return h.with(func(sp *queue.Spool) error { return sp.Release(id, time.Now()) })
}

func (h spoolHold) DeleteHeld(_ context.Context, id string) error {
	return h.with(func(sp *queue.Spool) error { return sp.Remove(queue.AreaHold, id) })
}

// storeName says which store a command reached, for messages.
func storeName(c *server.Config) string {
	if c.Store.Kind == "redis" {
		return "redis " + strings.Join(c.Store.Redis.Addrs, ",")
	}
	return abs(c.Store.Path)
}
