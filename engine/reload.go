package engine

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/sluicemail/sluice/builtins"
)

// Reloader keeps the live RuleSet of a rules directory: it builds a new set
// off to the side, validates it, and swaps it in with one atomic store.
// A broken edit is logged with its FILE:LINE:COL problems and the last good
// set stays live. Sessions hold the set they started with (Current), so a
// swap never changes the rules under a transaction.
type Reloader struct {
	dir  string
	reg  *builtins.Registry
	opts Options
	log  *slog.Logger

	cur    atomic.Pointer[RuleSet]
	status atomic.Pointer[ReloadStatus]
	mu     sync.Mutex // one reload at a time
	// lastBad is the checksum of the last rejected content, and lastErr
	// its error, so an unchanged broken edit is reported once.
	lastBad string
	lastErr error
	notify  func(*RuleSet)
}

// ReloadStatus is the outcome of the last reload attempt, for metrics and
// the admin endpoint.
type ReloadStatus struct {
	At       time.Time `json:"at"`
	OK       bool      `json:"ok"`
	Checksum string    `json:"checksum"` // of the live set
	Problems []string  `json:"problems,omitempty"`
	Reloads  int       `json:"reloads"`  // successful swaps since start
	Failures int       `json:"failures"` // rejected sets since start
}

// NewReloader loads dir; the first load must succeed, and a directory
// without rules fails it as it fails a reload (see LoadDir). onSwap, if not nil,
// is called after each successful swap (not for the first load).
func NewReloader(dir string, reg *builtins.Registry, opts Options, log *slog.Logger, onSwap func(*RuleSet)) (*Reloader, error) {
	if opts.IDs == nil {
		opts.IDs = NewIDSource() // shared by every set, so ids stay unique across reloads
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rs, err := LoadDir(dir, reg, opts)
	if err != nil {
		return nil, err
	}
	r := &Reloader{dir: dir, reg: reg, opts: opts, log: log, notify: onSwap}
	r.cur.Store(rs)
	r.status.Store(&ReloadStatus{At: time.Now(), OK: true, Checksum: rs.Checksum()})
	return r, nil
}

// Current is the live RuleSet.
func (r *Reloader) Current() *RuleSet { return r.cur.Load() }

// Status is the outcome of the last reload attempt.
func (r *Reloader) Status() ReloadStatus { return *r.status.Load() }

// Reload reads the directory and, if its content changed, compiles and swaps
// in the new set. It returns whether the live set changed; on error the
// live set is untouched and the error is a *LoadError naming every problem.
func (r *Reloader) Reload(why string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	files, err := ReadDir(r.dir)
	// key identifies what was read: the content, or the reason it could
	// not be read, so that an unchanged failure is reported once.
	var key string
	if err == nil {
		key = Checksum(files)
		if key == r.cur.Load().Checksum() {
			if st := *r.status.Load(); !st.OK {
				// A broken edit undone: what is on disk is live again.
				st.At, st.OK, st.Problems = time.Now(), true, nil
				r.status.Store(&st)
				r.lastBad, r.lastErr = "", nil
				r.log.Info("rules directory is back to the live rules", "dir", r.dir, "trigger", why)
			}
			return false, nil
		}
	} else {
		key = "unreadable\x00" + err.Error()
	}
	if key == r.lastBad && r.lastErr != nil {
		return false, r.lastErr // rejected already: do not log it again every poll
	}
	var rs *RuleSet
	if err == nil {
		rs, err = loadDir(r.dir, files, r.reg, r.opts)
	}
	r.lastBad, r.lastErr = "", nil
	if err != nil {
		r.lastBad, r.lastErr = key, err
	}
	st := *r.status.Load()
	st.At = time.Now()
	if err != nil {
		st.OK, st.Problems = false, problemStrings(err)
		st.Failures++
		r.status.Store(&st)
		r.log.Error("rules reload rejected; the live rules stay", "dir", r.dir, "trigger", why, "problems", st.Problems)
		return false, err
	}
	r.cur.Store(rs)
	st.OK, st.Problems, st.Checksum = true, nil, rs.Checksum()
	st.Reloads++
	r.status.Store(&st)
	r.log.Info("rules reloaded", "dir", r.dir, "trigger", why, "rules", len(rs.Rules()), "checksum", rs.Checksum()[:12])
	if r.notify != nil {
		r.notify(rs)
	}
	return true, nil
}

func problemStrings(err error) []string {
	var le *LoadError
	if errors.As(err, &le) {
		out := make([]string, len(le.Problems))
		for i, p := range le.Problems {
			out[i] = p.String()
		}
		return out
	}
	return []string{err.Error()}
}

// Watch reloads on changes until ctx ends: fsnotify events on the directory
// (debounced, so an editor's write-rename-chmod burst is one reload), and a
// checksum poll every poll interval as a safety net for what inotify misses
// (network file systems, a rules directory that is itself a replaced
// symlink). Watching the directory rather than the files survives editors
// that save by rename and Kubernetes' ..data symlink swaps.
func (r *Reloader) Watch(ctx context.Context, debounce, poll time.Duration) error {
	if debounce <= 0 {
		debounce = 100 * time.Millisecond
	}
	if poll <= 0 {
		poll = 5 * time.Second
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.Add(r.dir); err != nil {
		return err
	}
	// Files reached through symlinks (a ConfigMap's rules.yaml ->
	// ..data/rules.yaml) change in the directory the link resolves to:
	// watch those directories too, following each swap.
	extra := map[string]bool{}
	follow := func() {
		now := symlinkDirs(r.dir)
		for d := range extra {
			if !now[d] {
				w.Remove(d)
				delete(extra, d)
			}
		}
		for d := range now {
			if !extra[d] && w.Add(d) == nil {
				extra[d] = true
			}
		}
	}
	follow()
	ticker := time.NewTicker(poll)
	defer ticker.Stop()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	pending := ""
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			pending = ev.Name
			timer.Reset(debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			r.log.Warn("rules watcher", "dir", r.dir, "err", err) // the poll still runs
		case <-timer.C:
			r.Reload("change of " + pending)
			follow()
		case <-ticker.C:
			r.Reload("poll")
			follow()
		}
	}
}

// symlinkDirs returns the directories, other than dir itself, that the
// rules files of dir resolve to through symlinks.
func symlinkDirs(dir string) map[string]bool {
	out := map[string]bool{}
	base, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return out
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return out
	}
	for _, e := range entries {
		if e.Type()&os.ModeSymlink == 0 {
			continue
		}
		target, err := filepath.EvalSymlinks(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if d := filepath.Dir(target); d != base {
			out[d] = true
		}
	}
	return out
}
