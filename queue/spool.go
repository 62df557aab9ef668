package queue

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// The spool keeps every message the relay answered 250 for until it is
// delivered, bounced or deleted. Each message is two files in an area
// directory: ID.msg (the message as it will be delivered) and ID.env (the
// envelope and delivery state, JSON). The .env is written last: a message
// exists once its .env does, so a crash at any point leaves either a
// committed message or debris that Recover removes (and that was never
// acknowledged). Every write goes to tmp/, is fsynced, renamed into place,
// and the directory is fsynced.
type Spool struct {
	dir string
	// NoSync skips fsync: only for benchmarks that measure the rest.
	NoSync bool
	// group, when syncfs works here, replaces per-file fsyncs by one
	// shared sync per batch of writers.
	group *groupSync
}

// Areas of the spool.
const (
	AreaQueue = "queue" // waiting for delivery
	AreaHold  = "hold"  // held for review (sluice hold)
)

// Envelope is a spooled message's envelope and delivery state.
type Envelope struct {
	ID       string      `json:"id"`
	From     string      `json:"from"` // "" is the null sender
	Rcpts    []RcptState `json:"rcpts"`
	Received time.Time   `json:"received"`
	User     string      `json:"user,omitempty"`
	ClientIP string      `json:"client_ip,omitempty"`
	Helo     string      `json:"helo,omitempty"`
	Size     int         `json:"size"`

	// Verdict summary, for hold list and logs.
	Action string   `json:"action,omitempty"`
	Score  float64  `json:"score,omitempty"`
	Rules  []string `json:"rules,omitempty"`
	Reason string   `json:"reason,omitempty"` // why it is held

	Attempts      int       `json:"attempts"`
	NextAttempt   time.Time `json:"next_attempt"`
	DelayNotified bool      `json:"delay_notified,omitempty"`
	// Bounce marks a delivery status notification we generated; its
	// failure is logged, never bounced again.
	Bounce bool `json:"bounce,omitempty"`
	// Inbound marks mail from a client that may not relay (neither
	// authenticated nor in relay_networks): its sender address is
	// unverified, so its failures are bounced only as
	// delivery.inbound_bounces says. Envelopes written before the field
	// existed read as outbound, bounced as before.
	Inbound bool `json:"inbound,omitempty"`
}

// RcptState is one recipient's delivery state.
type RcptState struct {
	Addr     string    `json:"addr"`
	Status   string    `json:"status"` // pending, delivered, failed
	Code     int       `json:"code,omitempty"`
	Enhanced string    `json:"enhanced,omitempty"`
	Detail   string    `json:"detail,omitempty"` // last reply or error
	Remote   string    `json:"remote,omitempty"` // host that answered
	At       time.Time `json:"at,omitzero"`
}

// Recipient statuses.
const (
	StatusPending   = "pending"
	StatusDelivered = "delivered"
	StatusFailed    = "failed"
)

// OpenSpool creates the spool's directories under dir.
func OpenSpool(dir string) (*Spool, error) {
	for _, d := range []string{"tmp", AreaQueue, AreaHold} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	s := &Spool{dir: dir}
	if g, err := newGroupSync(dir); err == nil {
		s.group = g
	}
	return s, nil
}

// Sync makes every write before it durable (see groupSync).
func (s *Spool) Sync() error {
	if s.NoSync || s.group == nil {
		return nil
	}
	return s.group.sync()
}

// SyncsPerFile reports whether each file must be fsynced on its own: the
// file system's group sync (syncfs) is not available here, so a writer
// beside the spool (local delivery) cannot count on Sync to cover its files.
func (s *Spool) SyncsPerFile() bool { return !s.NoSync && s.group == nil }

func (s *Spool) path(area, id, ext string) string {
	return filepath.Join(s.dir, area, id+ext)
}

// validID keeps ids from naming paths outside the spool.
func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Put stores a new message durably in area; when it returns nil the
// message survives a crash.
func (s *Spool) Put(area string, env *Envelope, data []byte) error {
	if !validID(env.ID) {
		return fmt.Errorf("spool: bad id %q", env.ID)
	}
	if s.group != nil {
		// Written in place, without temporary files and renames: until
		// the group sync returns nothing was acknowledged, and Recover
		// removes what a crash cut short (an .env that does not parse, a
		// .msg without .env).
		if err := s.writeNew(s.path(area, env.ID, ".msg"), data); err != nil {
			return err
		}
		b, err := json.MarshalIndent(env, "", "  ")
		if err != nil {
			return err
		}
		if err := s.writeNew(s.path(area, env.ID, ".env"), b); err != nil {
			os.Remove(s.path(area, env.ID, ".msg"))
			return err
		}
		return s.Sync()
	}
	if err := s.writeFile(s.path(area, env.ID, ".msg"), data, true); err != nil {
		return err
	}
	return s.putEnvelope(area, env)
}

// writeNew creates path, which must not exist, with data.
func (s *Spool) writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// putEnvelope writes the envelope, which commits the message, and returns
// once both files and their names are durable.
func (s *Spool) putEnvelope(area string, env *Envelope) error {
	b, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		return err
	}
	if err := s.writeFile(s.path(area, env.ID, ".env"), b, false); err != nil {
		return err
	}
	if s.group != nil {
		return s.Sync()
	}
	return s.syncDir(filepath.Join(s.dir, area))
}

// Update rewrites a message's envelope atomically.
func (s *Spool) Update(area string, env *Envelope) error {
	return s.putEnvelope(area, env)
}

// writeFile writes data to tmp/, fsyncs it and renames it to path.
func (s *Spool) writeFile(path string, data []byte, excl bool) error {
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if err == nil && !s.NoSync && s.group == nil {
		err = tmp.Sync() // with a group sync, the caller syncs once for all
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil && excl {
		if _, serr := os.Lstat(path); serr == nil {
			err = fmt.Errorf("spool: %s exists", path)
		}
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

func (s *Spool) syncDir(dir string) error {
	if s.NoSync {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("spool: fsync %s: %w", dir, err)
	}
	return nil
}

// ErrNotFound is returned for an id that is not in the area.
var ErrNotFound = errors.New("no such message")

// Envelope reads a message's envelope.
func (s *Spool) Envelope(area, id string) (*Envelope, error) {
	if !validID(id) {
		return nil, ErrNotFound
	}
	b, err := os.ReadFile(s.path(area, id, ".env"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	env := &Envelope{}
	if err := json.Unmarshal(b, env); err != nil {
		return nil, fmt.Errorf("spool: %s: %v", s.path(area, id, ".env"), err)
	}
	return env, nil
}

// Message reads a message's content.
func (s *Spool) Message(area, id string) ([]byte, error) {
	if !validID(id) {
		return nil, ErrNotFound
	}
	b, err := os.ReadFile(s.path(area, id, ".msg"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	return b, err
}

// List returns the ids of the committed messages of area, oldest first.
func (s *Spool) List(area string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, area))
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range ents {
		if id, ok := strings.CutSuffix(e.Name(), ".env"); ok {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids) // ids sort by time
	return ids, nil
}

// Remove deletes a message: the envelope first, which uncommits it. The
// caller has made whatever replaced it (a delivery) durable first.
func (s *Spool) Remove(area, id string) error {
	if !validID(id) {
		return ErrNotFound
	}
	if err := os.Remove(s.path(area, id, ".env")); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return ErrNotFound
		}
		return err
	}
	os.Remove(s.path(area, id, ".msg"))
	// Not synced: a removal lost in a crash brings the message back, to be
	// delivered again (a duplicate at worst, never a loss).
	return nil
}

// Discard removes a message that was spooled and then refused (the store
// could not count it), durably: after a crash it must not come back to be
// delivered, since the client was told to send it again.
func (s *Spool) Discard(area, id string) error {
	if err := s.Remove(area, id); err != nil {
		return err
	}
	if s.group != nil {
		return s.Sync()
	}
	return s.syncDir(filepath.Join(s.dir, area))
}

// Move moves a message between areas: the content first, then the
// envelope, which commits it in its new area. Recover finishes or undoes a
// move a crash interrupted.
func (s *Spool) Move(from, to, id string) error {
	if !validID(id) {
		return ErrNotFound
	}
	if _, err := os.Stat(s.path(from, id, ".env")); err != nil {
		return ErrNotFound
	}
	if err := os.Rename(s.path(from, id, ".msg"), s.path(to, id, ".msg")); err != nil {
		return err
	}
	if err := s.syncDir(filepath.Join(s.dir, to)); err != nil {
		return err
	}
	if err := os.Rename(s.path(from, id, ".env"), s.path(to, id, ".env")); err != nil {
		return err
	}
	if err := s.syncDir(filepath.Join(s.dir, to)); err != nil {
		return err
	}
	return s.syncDir(filepath.Join(s.dir, from))
}

// Recover puts the spool in order after a crash: temporary files are
// removed, an interrupted move is undone (the .msg goes back to the area
// holding its .env), and content without an envelope, which was never
// acknowledged, is removed. It returns what it did, for the log.
func (s *Spool) Recover() ([]string, error) {
	var did []string
	tmp, _ := os.ReadDir(filepath.Join(s.dir, "tmp"))
	for _, e := range tmp {
		os.Remove(filepath.Join(s.dir, "tmp", e.Name()))
	}
	if len(tmp) > 0 {
		did = append(did, fmt.Sprintf("removed %d unfinished temporary files", len(tmp)))
	}
	areas := []string{AreaQueue, AreaHold}
	for _, area := range areas {
		ids, err := s.List(area)
		if err != nil {
			return did, err
		}
		for _, id := range ids {
			env, err := s.Envelope(area, id)
			if err == nil {
				if st, serr := os.Stat(s.path(area, id, ".msg")); serr == nil && env.Size > 0 && st.Size() != int64(env.Size) {
					err = fmt.Errorf("content is %d bytes, the envelope says %d", st.Size(), env.Size)
				}
			}
			if err != nil && !errors.Is(err, ErrNotFound) {
				// Cut short by a crash before the sync: never acknowledged.
				os.Remove(s.path(area, id, ".env"))
				os.Remove(s.path(area, id, ".msg"))
				did = append(did, fmt.Sprintf("%s: removed an envelope a crash cut short (never acknowledged)", id))
				continue
			}
			if _, err := os.Stat(s.path(area, id, ".msg")); err == nil {
				continue
			}
			for _, other := range areas {
				if other != area {
					if err := os.Rename(s.path(other, id, ".msg"), s.path(area, id, ".msg")); err == nil {
						did = append(did, fmt.Sprintf("%s: finished an interrupted move to %s", id, area))
					}
				}
			}
			if _, err := os.Stat(s.path(area, id, ".msg")); err != nil {
				os.Rename(s.path(area, id, ".env"), s.path(area, id, ".env.broken"))
				did = append(did, fmt.Sprintf("%s: envelope without content in %s, set aside as .env.broken", id, area))
			}
		}
	}
	for _, area := range areas {
		ents, err := os.ReadDir(filepath.Join(s.dir, area))
		if err != nil {
			return did, err
		}
		for _, e := range ents {
			id, ok := strings.CutSuffix(e.Name(), ".msg")
			if !ok {
				continue
			}
			if _, err := os.Stat(s.path(area, id, ".env")); errors.Is(err, fs.ErrNotExist) {
				os.Remove(s.path(area, id, ".msg"))
				did = append(did, fmt.Sprintf("%s: removed content never acknowledged", id))
			}
		}
	}
	return did, nil
}

// Release moves a held message to the queue for delivery now. A running
// relay picks it up within seconds.
func (s *Spool) Release(id string, now time.Time) error {
	env, err := s.Envelope(AreaHold, id)
	if err != nil {
		return err
	}
	env.NextAttempt = now.UTC()
	env.Reason = ""
	if err := s.Update(AreaHold, env); err != nil {
		return err
	}
	return s.Move(AreaHold, AreaQueue, id)
}
