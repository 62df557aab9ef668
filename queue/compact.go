package queue

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// Compaction frees the disk the removed messages held. Segments go
// oldest first, and only whole: the oldest sealed segment is deleted once
// nothing in it is live, or, when it keeps too little live data for its
// size, after its live messages are copied (a put with their envelope now)
// to the active segment and that copy is on disk. Oldest first keeps
// replay right: a removal or an envelope change is always in the same
// segment as its message's put or a later one, so it lives at least as
// long as the put it overrides, and a deleted message never comes back.
// A crash at any step leaves either the old segment (the copies, torn or
// whole, replay as the same message) or the copies alone.

// background compacts when woken (a segment sealed, a removal from a
// sealed segment) and puts unsynced removals on disk within a second.
func (s *Spool) background() {
	defer s.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	// A failure that repeats (a full disk fails every compaction each
	// removal asks for) is logged once a minute, not once a message.
	var lastErr string
	var lastAt time.Time
	report := func(msg string, err error) {
		if err == nil || (err.Error() == lastErr && time.Since(lastAt) < time.Minute) {
			return
		}
		lastErr, lastAt = err.Error(), time.Now()
		s.opts.log.Error(msg, "dir", s.dir, "err", err)
	}
	for {
		select {
		case <-s.stop:
			return
		case <-s.wake:
			for !s.opts.manual {
				did, err := s.compactOnce()
				report("spool compaction failed", err)
				if err != nil || !did {
					break
				}
				select {
				case <-s.stop:
					return
				default:
				}
			}
		case <-t.C:
			s.mu.Lock()
			lsn := s.lsn
			s.mu.Unlock()
			// Writers waiting for this sync get its error too; removals,
			// which no one waits for, have only this log.
			report("spool background sync failed", s.commit(lsn))
		}
	}
}

func (s *Spool) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// compactable returns the oldest sealed segment if it should go now: it
// holds nothing live, or less than half of it is live, or the spool's
// files are more than twice its live data plus two segments (a backlog of
// deferred messages in old segments otherwise pins every later one).
// s.mu is held.
func (s *Spool) compactable() *segment {
	var oldest *segment
	var total, live int64
	for _, sg := range s.segs {
		total += sg.size
		live += sg.live
		if sg != s.active && (oldest == nil || sg.seq < oldest.seq) {
			oldest = sg
		}
	}
	if oldest == nil {
		return nil
	}
	if oldest.live == 0 || oldest.live*2 < oldest.size || total > 2*live+2*s.opts.segMax {
		return oldest
	}
	return nil
}

// compactOnce compacts the oldest sealed segment if it should be; it
// reports whether it did.
func (s *Spool) compactOnce() (bool, error) {
	s.mu.Lock()
	old := s.compactable()
	if old == nil || s.closed {
		s.mu.Unlock()
		return false, nil
	}
	var ids []string
	for id, e := range s.msgs {
		if e.seg == old.seq {
			ids = append(ids, id)
		}
	}
	size, live := old.size, old.live
	s.mu.Unlock()
	s.event("compact-start")
	defer s.event("compact-end")
	start := time.Now()
	s.opts.log.Info("spool compaction started", "segment", segName(old.seq), "bytes", size, "live_bytes", live, "live_messages", len(ids))
	var last uint64
	copied := 0
	for _, id := range ids {
		// One message at a time, so that sessions' puts go on between.
		s.mu.Lock()
		e := s.msgs[id]
		if e == nil || e.seg != old.seq || s.closed {
			s.mu.Unlock()
			continue
		}
		data := make([]byte, e.dataLen)
		_, err := old.f.ReadAt(data, e.dataOff)
		if err == nil {
			last, err = s.appendRec(recPut, e.area, id, e.env, data)
			copied++
		}
		s.mu.Unlock()
		if err != nil {
			return false, fmt.Errorf("spool: compacting %s: %s: %w", segName(old.seq), id, err)
		}
	}
	if last > 0 {
		if err := s.commit(last); err != nil {
			return false, err
		}
	}
	s.mu.Lock()
	if closed := s.closed; closed || old.live != 0 || s.references(old.seq) {
		// Closed meanwhile; anything else would be a bug in the live
		// count (puts only go to the active segment): keep the file.
		s.mu.Unlock()
		lvl, why := slog.LevelInfo, "the spool closed"
		if !closed {
			lvl, why = slog.LevelWarn, "a message still points into it"
		}
		s.opts.log.Log(context.Background(), lvl, "spool compaction done", "segment", segName(old.seq), "deleted", false, "why", why, "copied", copied, "took", time.Since(start))
		return false, nil
	}
	delete(s.segs, old.seq)
	old.f.Close()
	err := os.Remove(segPath(s.segDir, old.seq))
	s.mu.Unlock()
	if err != nil {
		return false, fmt.Errorf("spool: compacting: %w", err)
	}
	// Durable before the next one goes: deletions stay oldest first.
	if !s.NoSync {
		if err := syncDir(s.segDir); err != nil {
			return false, err
		}
	}
	s.opts.log.Info("spool compaction done", "segment", segName(old.seq), "deleted", true, "copied", copied, "took", time.Since(start))
	return true, nil
}

func (s *Spool) event(e string) {
	if s.opts.hook != nil {
		s.opts.hook(e)
	}
}

// references reports whether a message's content is in segment seq.
// s.mu is held.
func (s *Spool) references(seq uint64) bool {
	for _, e := range s.msgs {
		if e.seg == seq {
			return true
		}
	}
	return false
}
