package queue

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Spool keeps every message the relay answered 250 for until it is
// delivered, bounced or deleted, in append-only segment files with an
// index in memory (see the package doc). One process has it open at a
// time: the relay, or an operator command while no relay runs.
type Spool struct {
	dir    string
	segDir string
	// NoSync skips fsync: only for benchmarks that measure the rest.
	NoSync bool
	lock   *os.File

	opts options

	mu     sync.Mutex
	closed bool
	msgs   map[string]*entry
	segs   map[uint64]*segment
	active *segment // nil until the first write after open
	next   uint64   // the number of the next segment
	lsn    uint64   // records appended since open
	bad    bool     // the active segment failed a write: seal it
	did    []string // what open found and did, for Recover

	// Group commit: the first writer that finds no sync running syncs
	// the active segment for all the records appended so far, and the
	// writers that appended meanwhile wait for it.
	cmu     sync.Mutex
	cond    *sync.Cond
	durable uint64 // records known to be on disk
	syncing bool
	failLSN uint64 // records up to this one were in a failed sync
	failErr error

	wake      chan struct{} // to the compactor
	stop      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// entry is a message in the index.
type entry struct {
	area    string
	env     []byte // the latest envelope, JSON; replaced, never changed
	seg     uint64 // the segment holding its content
	dataOff int64
	dataLen int
	recSize int64 // its put record, live in seg
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

// ErrNotFound is returned for an id that is not in the area.
var ErrNotFound = errors.New("no such message")

// ErrLocked is returned by OpenSpool when another process has the spool
// open: a running relay, to be reached through its admin socket.
var ErrLocked = errors.New("another process has the spool open (a running relay: go through its admin socket)")

var errClosed = errors.New("spool: closed")

// options are the spool's knobs; tests turn them.
type options struct {
	segMax   int64         // a segment takes records until it is this big
	lockWait time.Duration // how long OpenSpool waits for the lock
	manual   bool          // no compaction but compactOnce's
	hook     func(event string)
	log      *slog.Logger // nil: nowhere
}

var defaults = options{segMax: DefaultSegmentBytes, lockWait: 3 * time.Second}

// Segment sizes: the default, and the least OpenSpool takes (below it the
// spool would make and delete a file every few messages, the churn the
// segments are there to avoid).
const (
	DefaultSegmentBytes = 64 << 20
	MinSegmentBytes     = 16 << 10
)

// An Option tunes OpenSpool.
type Option func(*options)

// SegmentBytes sets how big a segment grows before the next one begins
// (DefaultSegmentBytes; at least MinSegmentBytes). Smaller segments give
// the disk of delivered mail back sooner, at the price of a file made,
// synced and deleted more often; tests use tiny ones to keep compaction
// running.
func SegmentBytes(n int64) Option { return func(o *options) { o.segMax = n } }

// Logger is where the spool reports what no caller hears of: each
// compaction (Info: one pair of lines per segment) and the errors of
// compaction and of the background sync of removals (Error).
func Logger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// OpenSpool opens the spool in dir, creating it if needed: it takes the
// spool's lock (ErrLocked if another process keeps it), rebuilds the index
// from the segments and moves messages left in the per-file layout of
// earlier versions into them. Close releases it.
func OpenSpool(dir string, opt ...Option) (*Spool, error) {
	o := defaults
	for _, f := range opt {
		f(&o)
	}
	if o.segMax < MinSegmentBytes {
		return nil, fmt.Errorf("spool %s: segment size %d bytes is below the minimum, %d", dir, o.segMax, MinSegmentBytes)
	}
	return openSpool(dir, o)
}

func openSpool(dir string, opts options) (*Spool, error) {
	if opts.log == nil {
		opts.log = slog.New(slog.DiscardHandler)
	}
	s := &Spool{dir: dir, segDir: filepath.Join(dir, "seg"), opts: opts,
		msgs: map[string]*entry{}, segs: map[uint64]*segment{}, next: 1,
		wake: make(chan struct{}, 1), stop: make(chan struct{})}
	s.cond = sync.NewCond(&s.cmu)
	if _, err := os.Stat(s.segDir); err != nil {
		if err := os.MkdirAll(s.segDir, 0o700); err != nil {
			return nil, err
		}
		// The directories' names must last as long as what they will hold.
		for _, d := range []string{dir, filepath.Dir(dir)} {
			if err := syncDir(d); err != nil {
				return nil, err
			}
		}
	}
	lock, err := lockFile(filepath.Join(dir, "lock"), opts.lockWait)
	if err != nil {
		return nil, err
	}
	s.lock = lock
	if err := s.load(); err != nil {
		s.closeFiles()
		return nil, err
	}
	if err := s.migrate(); err != nil {
		s.closeFiles()
		return nil, err
	}
	s.wg.Add(1)
	go s.background()
	s.poke() // what the last run left to compact
	return s, nil
}

// lockFile takes an exclusive flock(2) on path, waiting up to wait for a
// process that holds it briefly (an operator command) to let go. The
// kernel drops it when its holder dies, so a killed relay leaves no stale
// lock behind.
func lockFile(path string, wait time.Duration) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, fmt.Errorf("spool %s: %w", filepath.Dir(path), ErrLocked)
			}
			return nil, fmt.Errorf("spool: lock %s: %w", path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// load replays the segments into the index.
func (s *Spool) load() error {
	seqs, err := segmentSeqs(s.segDir)
	if err != nil {
		return err
	}
	for i, seq := range seqs {
		f, err := os.OpenFile(segPath(s.segDir, seq), os.O_RDWR, 0o600)
		if err != nil {
			return err
		}
		sg := &segment{seq: seq, f: f}
		s.segs[seq] = sg
		n, err := replay(f, func(r *record) { s.apply(sg, r) })
		sg.size = n
		if errors.Is(err, errTorn) {
			st, _ := f.Stat()
			s.did = append(s.did, fmt.Sprintf("%s: ignored %d bytes after offset %d: a record a crash cut short (never acknowledged)", segName(seq), st.Size()-n, n))
		} else if err != nil {
			return fmt.Errorf("spool: reading %s: %w", segName(seq), err)
		} else if i == len(seqs)-1 {
			s.active = sg // clean: new records go on after it
		}
		s.next = seq + 1
	}
	return nil
}

// apply is one record's change to the index; sg holds the record.
func (s *Spool) apply(sg *segment, r *record) {
	e := s.msgs[r.id]
	switch r.kind {
	case recPut:
		if e != nil { // a copy made by compaction, or a migration done again
			s.segs[e.seg].live -= e.recSize
		}
		s.msgs[r.id] = &entry{area: r.area, env: r.env, seg: sg.seq, dataOff: r.dataOff, dataLen: r.dataLen, recSize: r.size}
		sg.live += r.size
	case recEnv:
		if e != nil {
			e.area, e.env = r.area, r.env
		}
	case recDel:
		if e != nil {
			s.segs[e.seg].live -= e.recSize
			delete(s.msgs, r.id)
		}
	}
}

// appendRec writes a record at the end of the active segment, starting a
// new segment when this one is full, and applies it to the index. s.mu is
// held. It returns the record's number, for commit.
func (s *Spool) appendRec(kind byte, area, id string, env, data []byte) (uint64, error) {
	head := encodeHead(kind, area, id, env, data)
	size := int64(len(head) + len(data))
	if s.active == nil || s.bad || (s.active.size > 0 && s.active.size+size > s.opts.segMax) {
		if err := s.rotate(); err != nil {
			return 0, err
		}
	}
	sg := s.active
	if err := pwrite(sg.f, sg.size, head, data); err != nil {
		// Cut the partial record off, or leave this segment to compaction:
		// nothing may follow a torn record, replay stops there.
		if sg.f.Truncate(sg.size) != nil {
			s.bad = true
		}
		return 0, fmt.Errorf("spool: writing %s: %w", segName(sg.seq), err)
	}
	r := &record{kind: kind, area: area, id: id, env: env, size: size,
		dataOff: sg.size + int64(len(head)), dataLen: len(data)}
	sg.size += size
	s.apply(sg, r)
	s.lsn++
	return s.lsn, nil
}

// rotate seals the active segment, durably, and starts the next one; its
// name is made durable (a directory fsync) before any record in it can be
// acknowledged. s.mu is held.
func (s *Spool) rotate() error {
	if s.active != nil && !s.NoSync {
		if err := datasync(s.active.f); err != nil {
			return fmt.Errorf("spool: fdatasync %s: %w", segName(s.active.seq), err)
		}
	}
	seq := s.next
	f, err := os.OpenFile(segPath(s.segDir, seq), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if !s.NoSync {
		if err := syncDir(s.segDir); err != nil {
			f.Close()
			os.Remove(f.Name())
			return err
		}
	}
	s.next++
	sealed := s.active != nil
	s.active = &segment{seq: seq, f: f}
	s.segs[seq] = s.active
	s.bad = false
	if sealed {
		s.poke()
	}
	return nil
}

// commit returns once record lsn is on disk: group commit. The first
// caller that finds no sync running becomes the syncer for every record
// appended so far; the others wait, and those that appended during its
// fdatasync go in the next one. No timer: a lone writer pays one
// fdatasync, and the batch grows with the load by itself.
func (s *Spool) commit(lsn uint64) error {
	if s.NoSync {
		return nil
	}
	s.cmu.Lock()
	defer s.cmu.Unlock()
	for s.durable < lsn {
		if lsn <= s.failLSN {
			return s.failErr
		}
		if s.syncing {
			s.cond.Wait()
			continue
		}
		s.syncing = true
		s.cmu.Unlock()
		s.mu.Lock()
		target, sg := s.lsn, s.active
		s.mu.Unlock()
		var err error
		if sg != nil {
			// A segment sealed meanwhile was synced by rotate; one closed
			// by compaction held nothing live.
			if err = datasync(sg.f); errors.Is(err, os.ErrClosed) {
				err = nil
			}
		}
		s.cmu.Lock()
		s.syncing = false
		if err != nil {
			// After a failed fdatasync the kernel may have dropped the
			// dirty pages: the records are not on disk and never will be
			// from this file. Seal it; those writers get the error.
			s.failLSN, s.failErr = target, fmt.Errorf("spool: fdatasync: %w", err)
			s.mu.Lock()
			if s.active == sg {
				s.bad = true
			}
			s.mu.Unlock()
		} else if target > s.durable {
			s.durable = target
		}
		s.cond.Broadcast()
	}
	return nil
}

// validID keeps ids from naming paths outside the spool (the per-file
// layout) and fits them in a record.
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

func validArea(area string) error {
	if _, ok := areaCodes[area]; !ok {
		return fmt.Errorf("spool: no area %q", area)
	}
	return nil
}

// Put stores a new message durably in area; when it returns nil the
// message survives a crash.
func (s *Spool) Put(area string, env *Envelope, data []byte) error {
	if !validID(env.ID) {
		return fmt.Errorf("spool: bad id %q", env.ID)
	}
	if err := validArea(area); err != nil {
		return err
	}
	b, err := json.Marshal(env)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errClosed
	}
	if _, ok := s.msgs[env.ID]; ok {
		s.mu.Unlock()
		return fmt.Errorf("spool: %s exists", env.ID)
	}
	lsn, err := s.appendRec(recPut, area, env.ID, b, data)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if err := s.commit(lsn); err != nil {
		// Not acknowledged: the client sends it again, so this copy must
		// not be delivered.
		s.mu.Lock()
		if e := s.msgs[env.ID]; e != nil && !s.closed {
			s.appendRec(recDel, e.area, env.ID, nil, nil)
		}
		s.mu.Unlock()
		return err
	}
	return nil
}

// setEnvelope records b (nil: the envelope it has) as the envelope of
// message id of area from, now in area to, durably.
func (s *Spool) setEnvelope(from, to, id string, b []byte) error {
	if err := validArea(to); err != nil {
		return err
	}
	s.mu.Lock()
	e := s.msgs[id]
	if e == nil || e.area != from || s.closed {
		s.mu.Unlock()
		return ErrNotFound
	}
	if b == nil {
		b = e.env
	}
	lsn, err := s.appendRec(recEnv, to, id, b, nil)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.commit(lsn)
}

// Update replaces a message's envelope, durably.
func (s *Spool) Update(area string, env *Envelope) error {
	b, err := json.Marshal(env)
	if err != nil {
		return err
	}
	return s.setEnvelope(area, area, env.ID, b)
}

// Envelope reads a message's envelope.
func (s *Spool) Envelope(area, id string) (*Envelope, error) {
	s.mu.Lock()
	e := s.msgs[id]
	if e == nil || e.area != area || s.closed {
		s.mu.Unlock()
		return nil, ErrNotFound
	}
	b := e.env
	s.mu.Unlock()
	env := &Envelope{}
	if err := json.Unmarshal(b, env); err != nil {
		return nil, fmt.Errorf("spool %s: envelope: %v", id, err)
	}
	return env, nil
}

// Message reads a message's content.
func (s *Spool) Message(area, id string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.msgs[id]
	if e == nil || e.area != area || s.closed {
		return nil, ErrNotFound
	}
	b := make([]byte, e.dataLen)
	if _, err := s.segs[e.seg].f.ReadAt(b, e.dataOff); err != nil {
		return nil, fmt.Errorf("spool %s: reading %s: %w", id, segName(e.seg), err)
	}
	return b, nil
}

// List returns the ids of the messages of area, oldest first.
func (s *Spool) List(area string) ([]string, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errClosed
	}
	var ids []string
	for id, e := range s.msgs {
		if e.area == area {
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	sort.Strings(ids) // ids sort by time
	return ids, nil
}

// Remove deletes a message. It is not waited for: the record reaches the
// disk with the next group commit, or within a second. The caller has made
// whatever replaced the message (a delivery) durable first; a removal lost
// to a power cut brings the message back, to be delivered again (a
// duplicate at worst, never a loss). A killed process loses nothing: the
// record is in the kernel's page cache once Remove returns.
func (s *Spool) Remove(area, id string) error {
	_, err := s.remove(area, id)
	return err
}

func (s *Spool) remove(area, id string) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.msgs[id]
	if e == nil || e.area != area || s.closed {
		return 0, ErrNotFound
	}
	seg := e.seg
	lsn, err := s.appendRec(recDel, area, id, nil, nil)
	if err == nil && s.active.seq != seg {
		s.poke() // a sealed segment has less to keep
	}
	return lsn, err
}

// Discard removes a message that was spooled and then refused (the store
// could not count it), durably: after a crash it must not come back to be
// delivered, since the client was told to send it again.
func (s *Spool) Discard(area, id string) error {
	lsn, err := s.remove(area, id)
	if err != nil {
		return err
	}
	return s.commit(lsn)
}

// Move moves a message between areas, atomically: one record says where
// it is now, so after a crash it is in one of them, never both or none.
func (s *Spool) Move(from, to, id string) error {
	return s.setEnvelope(from, to, id, nil)
}

// Release moves a held message to the queue for delivery now, in one
// record. A running relay picks it up within seconds.
func (s *Spool) Release(id string, now time.Time) error {
	env, err := s.Envelope(AreaHold, id)
	if err != nil {
		return err
	}
	env.NextAttempt = now.UTC()
	env.Reason = ""
	b, err := json.Marshal(env)
	if err != nil {
		return err
	}
	return s.setEnvelope(AreaHold, AreaQueue, id, b)
}

// Recover reports what opening the spool found after a crash and put in
// order, for the log: records a crash cut short (never acknowledged, so
// ignored) and messages moved over from the per-file layout. The segments
// need no other repair: the index is rebuilt from them at every open.
func (s *Spool) Recover() ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	did := s.did
	s.did = nil
	return did, nil
}

// Close makes every record durable, stops compaction and releases the
// spool for another process.
func (s *Spool) Close() error {
	first := false
	s.closeOnce.Do(func() { first = true; close(s.stop) })
	if !first {
		return nil
	}
	s.wg.Wait()
	s.mu.Lock()
	s.closed = true
	lsn := s.lsn
	s.mu.Unlock()
	// Writers that appended before s.closed have lsn at most this one:
	// this sync answers them before the files close.
	err := s.commit(lsn)
	s.closeFiles()
	return err
}

func (s *Spool) closeFiles() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sg := range s.segs {
		sg.f.Close()
	}
	if s.lock != nil {
		s.lock.Close() // releases the flock
		s.lock = nil
	}
}
