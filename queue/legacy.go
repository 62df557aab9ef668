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
)

// Spools of earlier versions keep each message as two files in an area
// directory: ID.msg (the content) and ID.env (the envelope, JSON, which
// commits the message), written through tmp/. migrate moves them into the
// segments when the spool opens: it first puts that layout in order as
// its own recovery did (an interrupted move settled, content
// without envelope and torn envelopes removed: never acknowledged), then
// appends each message, makes the records durable, and only then removes
// the files, envelope first. A crash in between finds the files again
// and appends them again: a put of an id the index has replaces it, so
// the message is there once.
func (s *Spool) migrate() error {
	var found bool
	for _, d := range []string{"tmp", AreaQueue, AreaHold} {
		if _, err := os.Stat(filepath.Join(s.dir, d)); err == nil {
			found = true
		}
	}
	if !found {
		return nil
	}
	s.legacyRecover()
	var lsn uint64
	type moved struct{ area, id string }
	var done []moved
	for _, area := range []string{AreaQueue, AreaHold} {
		for _, id := range legacyList(filepath.Join(s.dir, area)) {
			env, err := os.ReadFile(legacyPath(s.dir, area, id, ".env"))
			if err != nil {
				return fmt.Errorf("spool: migrating %s: %w", id, err)
			}
			data, err := os.ReadFile(legacyPath(s.dir, area, id, ".msg"))
			if err != nil {
				return fmt.Errorf("spool: migrating %s: %w", id, err)
			}
			var e Envelope
			if json.Unmarshal(env, &e) != nil || e.ID != id {
				e.ID = id // as the file name says
			}
			b, err := json.Marshal(&e)
			if err != nil {
				return err
			}
			s.mu.Lock()
			lsn, err = s.appendRec(recPut, area, id, b, data)
			s.mu.Unlock()
			if err != nil {
				return fmt.Errorf("spool: migrating %s: %w", id, err)
			}
			done = append(done, moved{area, id})
		}
	}
	if lsn > 0 {
		if err := s.commit(lsn); err != nil {
			return err
		}
	}
	for _, m := range done {
		os.Remove(legacyPath(s.dir, m.area, m.id, ".env"))
		os.Remove(legacyPath(s.dir, m.area, m.id, ".msg"))
	}
	if len(done) > 0 {
		s.did = append(s.did, fmt.Sprintf("moved %d messages from the per-file layout into the segments", len(done)))
	}
	// Empty now, unless an operator must look at something set aside.
	for _, d := range []string{"tmp", AreaQueue, AreaHold} {
		os.Remove(filepath.Join(s.dir, d))
	}
	if !s.NoSync {
		return syncDir(s.dir)
	}
	return nil
}

func legacyPath(dir, area, id, ext string) string {
	return filepath.Join(dir, area, id+ext)
}

// legacyList lists the ids that have an envelope in an area directory.
func legacyList(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var ids []string
	for _, e := range ents {
		if id, ok := strings.CutSuffix(e.Name(), ".env"); ok && validID(id) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// legacyRecover is the per-file layout's crash recovery: temporary files
// are removed, an interrupted move is settled (the .msg goes to the area
// holding its .env), and content without an envelope, or an envelope
// torn or not matching its content, never acknowledged, is removed.
func (s *Spool) legacyRecover() {
	tmp, _ := os.ReadDir(filepath.Join(s.dir, "tmp"))
	for _, e := range tmp {
		os.Remove(filepath.Join(s.dir, "tmp", e.Name()))
	}
	if len(tmp) > 0 {
		s.did = append(s.did, fmt.Sprintf("removed %d unfinished temporary files", len(tmp)))
	}
	areas := []string{AreaQueue, AreaHold}
	path := func(area, id, ext string) string { return legacyPath(s.dir, area, id, ext) }
	for _, area := range areas {
		for _, id := range legacyList(filepath.Join(s.dir, area)) {
			b, err := os.ReadFile(path(area, id, ".env"))
			env := &Envelope{}
			if err == nil {
				err = json.Unmarshal(b, env)
			}
			if err == nil {
				if st, serr := os.Stat(path(area, id, ".msg")); serr == nil && env.Size > 0 && st.Size() != int64(env.Size) {
					err = fmt.Errorf("content is %d bytes, the envelope says %d", st.Size(), env.Size)
				}
			}
			if err != nil {
				os.Remove(path(area, id, ".env"))
				os.Remove(path(area, id, ".msg"))
				s.did = append(s.did, fmt.Sprintf("%s: removed an envelope a crash cut short (never acknowledged)", id))
				continue
			}
			if _, err := os.Stat(path(area, id, ".msg")); err == nil {
				continue
			}
			for _, other := range areas {
				if other != area {
					if err := os.Rename(path(other, id, ".msg"), path(area, id, ".msg")); err == nil {
						s.did = append(s.did, fmt.Sprintf("%s: finished an interrupted move to %s", id, area))
					}
				}
			}
			if _, err := os.Stat(path(area, id, ".msg")); err != nil {
				os.Rename(path(area, id, ".env"), path(area, id, ".env.broken"))
				s.did = append(s.did, fmt.Sprintf("%s: envelope without content in %s, set aside as .env.broken", id, area))
			}
		}
	}
	for _, area := range areas {
		ents, _ := os.ReadDir(filepath.Join(s.dir, area))
		for _, e := range ents {
			id, ok := strings.CutSuffix(e.Name(), ".msg")
			if !ok {
				continue
			}
			if _, err := os.Stat(path(area, id, ".env")); errors.Is(err, fs.ErrNotExist) {
				os.Remove(path(area, id, ".msg"))
				s.did = append(s.did, fmt.Sprintf("%s: removed content never acknowledged", id))
			}
		}
	}
}
